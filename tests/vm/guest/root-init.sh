#!/bin/sh
# root-init.sh - /sbin/init of the root images of tests/vm/scenarios.sh.
#
# Prints ROOT-* lines.  vmtest.token=T on the kernel command line is written to
# /root-ok ("NBDBOOT-ROOT-OK T") so the host can tell this boot wrote it.
# vmtest.root=killall first does what systemd does at shutdown to everything
# not marked with '@' (SIGTERM, SIGKILL, then SIGSTOP), then writes 1 MiB,
# drops the page cache and reads it back; vmtest.root=stopall instead sends
# SIGSTOP and SIGCONT to every process (kill -1), as systemd-shutdown does
# around its rounds, then does the same write and read-back.  Ends with
# poweroff -f.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
token=none mode=plain
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.token=*) token=${w#*=} ;;
	vmtest.root=*) mode=${w#*=} ;;
	esac
done
echo "ROOT-MARKER pid=$$ root=$(awk '$2 == "/" { d = $1 " " $4 } END { print d }' /proc/mounts) uptime=$(up)"

# holders / victims: pids whose cmdline starts with '@' / all others except
# pid 1 and kernel threads (empty cmdline).  No forks while collecting.
collect() {
	holders="" victims=""
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[ "$p" = 1 ] || [ "$p" = $$ ] && continue
		c=""
		IFS= read -r c 2>/dev/null <"$d/cmdline"
		[ -n "$c" ] || continue
		case $c in @*) holders="$holders $p" ;; *) victims="$victims $p" ;; esac
	done
}
collect
echo "ROOT-HOLDERS${holders:- none}"
for p in $holders; do
	echo "ROOT-HOLDER $p $(tr '\0' ' ' <"/proc/$p/cmdline") $(grep VmRSS "/proc/$p/status" | tr -s ' \t' ' ')"
done

if [ "$mode" = killall ]; then
	sleep 600 &
	victim=$!
	for sig in TERM KILL STOP; do
		collect
		echo "ROOT-KILL $sig:${victims:- none} (spared:${holders:- none})"
		for p in $victims; do kill -"$sig" "$p" 2>/dev/null; done
		sleep 1
	done
	wait "$victim" 2>/dev/null
	if kill -0 "$victim" 2>/dev/null; then echo "ROOT-VICTIM-ALIVE $victim"; else echo "ROOT-VICTIM-GONE $victim"; fi
	collect
	echo "ROOT-AFTER-KILL holders:${holders:- none} others:${victims:- none}"
fi
if [ "$mode" = stopall ]; then
	# what systemd-shutdown does around each round: SIGSTOP to everything
	# (kill(-1) spares only pid 1 and the caller, '@' or not), then SIGCONT
	kill -STOP -1
	sleep 1
	kill -CONT -1
	collect
	echo "ROOT-AFTER-STOPALL holders:${holders:- none}"
fi
if [ "$mode" = killall ] || [ "$mode" = stopall ]; then
	mount -o remount,rw / 2>/dev/null
	if dd if=/dev/urandom of=/killall-data bs=64k count=16 2>/dev/null && sync; then
		sum1=$(md5sum </killall-data | cut -d' ' -f1)
		echo 3 >/proc/sys/vm/drop_caches
		sum2=$(md5sum </killall-data | cut -d' ' -f1)
		ls -l /bin/busybox >/dev/null
		if [ -n "$sum1" ] && [ "$sum1" = "$sum2" ]; then
			echo "ROOT-READBACK-OK $sum2"
		else
			echo "ROOT-READBACK-BAD wrote=$sum1 read=$sum2"
		fi
	else
		echo "ROOT-KILLALL-WRITE-FAILED"
	fi
fi

mount -o remount,rw / 2>/dev/null
if echo "NBDBOOT-ROOT-OK $token" >/root-ok 2>/dev/null && sync && [ "$(cat /root-ok 2>/dev/null)" = "NBDBOOT-ROOT-OK $token" ]; then
	echo "ROOT-WROTE $token"
else
	echo "ROOT-CANNOT-WRITE ($(grep ' / ' /proc/mounts | tail -n1))"
fi
sync
echo "ROOT-POWEROFF uptime=$(up)"
poweroff -f
