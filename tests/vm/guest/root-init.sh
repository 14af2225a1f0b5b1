#!/bin/sh
# root-init.sh - /sbin/init of the root images of tests/vm/scenarios.sh.
#
# Prints ROOT-* lines.  First writes vmtest.token=T from the kernel command line
# to /root-ok ("NBDBOOT-ROOT-OK T"), so the host can tell this boot reached a
# working root.  Then, by vmtest.root=:
#   shutdown  what systemd-shutdown does to the processes left at the end
#             (src/shutdown/killall.c, broadcast_signal), both rounds:
#             kill(-1, SIGSTOP) (every process, '@' or not), SIGTERM (and
#             SIGHUP to those with a controlling tty) to every process whose
#             argv[0] does not start with '@', kill(-1, SIGCONT), wait for the
#             victims; then the same with SIGKILL.  A `sleep 600` started here
#             is the victim that shows the killing works.  Then 1 MiB is written
#             to /shutdown-data and read back after dropping the page cache.
#   load      files written while the host kills, stops or swaps the server:
#             vmtest.load=N files (default 30) of 256 KiB from /dev/urandom,
#             each written with fsync and checksummed (ROOT-LOAD I MD5 uptime=T,
#             or ROOT-LOAD-ERROR I), a pause of 0.2 s between them; then the
#             page cache is dropped and every file read back and compared
#             (ROOT-LOAD-CHECK ok n=N, or bad=LIST), and the longest pause
#             between two files is printed (ROOT-LOAD-STALL), then nbdboot's
#             lines of the kernel log (ROOT-DMESG) and the '@' processes
#             (ROOT-AFTER-LOAD holders: PIDS).
#   bigio     I/O in requests far larger than 16 KiB: prints the root device's
#             queue/max_sectors_kb, reads 4 MiB of the device with O_DIRECT in
#             1 MiB requests, writes 1 MiB to /bigio-data with O_DIRECT and reads
#             it back (O_DIRECT, after dropping the page cache).
# Ends with poweroff -f.
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
rootdev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts)
echo "ROOT-MARKER pid=$$ root=$(awk '$2 == "/" { d = $1 " " $4 } END { print d }' /proc/mounts) uptime=$(up)"

mount -o remount,rw / 2>/dev/null
if echo "NBDBOOT-ROOT-OK $token" >/root-ok 2>/dev/null && sync && [ "$(cat /root-ok 2>/dev/null)" = "NBDBOOT-ROOT-OK $token" ]; then
	echo "ROOT-WROTE $token"
else
	echo "ROOT-CANNOT-WRITE ($(grep ' / ' /proc/mounts | tail -n1))"
fi

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

# stat_fields PID: the fields of /proc/PID/stat after "(comm)" in $@ (state
# ppid pgrp session tty_nr ...); fails if the process is gone
stat_fields() {
	s=""
	IFS= read -r s 2>/dev/null <"/proc/$1/stat" || return 1
	set -- ${s##*) }
	fields="$*"
}
gone() {  # gone PID: exited (a zombie counts: pid 1 reaps it later)
	stat_fields "$1" || return 0
	case $fields in Z*) return 0 ;; esac
	return 1
}
has_tty() {  # has_tty PID: tty_nr is not 0
	stat_fields "$1" || return 1
	set -- $fields
	[ "${5:-0}" != 0 ]
}
# broadcast SIG: one round of systemd-shutdown's broadcast_signal(SIG).  No
# forks between the SIGSTOP and the SIGCONT; the wait is bounded (10 s).
broadcast() {
	kill -STOP -1
	collect
	for p in $victims; do
		kill -"$1" "$p" 2>/dev/null
		[ "$1" = TERM ] && has_tty "$p" && kill -HUP "$p" 2>/dev/null
	done
	kill -CONT -1
	echo "ROOT-KILL $1:${victims:- none} (spared:${holders:- none})"
	i=0
	for p in $victims; do
		while ! gone "$p" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	done
}

if [ "$mode" = shutdown ]; then
	sleep 600 &
	victim=$!
	broadcast TERM
	broadcast KILL
	wait "$victim" 2>/dev/null
	if kill -0 "$victim" 2>/dev/null; then echo "ROOT-VICTIM-ALIVE $victim"; else echo "ROOT-VICTIM-GONE $victim"; fi
	sleep 1  # a process the signals ended may take a moment to go
	collect
	echo "ROOT-AFTER-KILL holders:${holders:- none} others:${victims:- none}"
	if dd if=/dev/urandom of=/shutdown-data bs=64k count=16 2>/dev/null && sync; then
		sum1=$(md5sum </shutdown-data | cut -d' ' -f1)
		echo 3 >/proc/sys/vm/drop_caches
		sum2=$(md5sum </shutdown-data | cut -d' ' -f1)
		ls -l /bin/busybox >/dev/null
		if [ -n "$sum1" ] && [ "$sum1" = "$sum2" ]; then
			echo "ROOT-READBACK-OK $sum2"
		else
			echo "ROOT-READBACK-BAD wrote=$sum1 read=$sum2"
		fi
	else
		echo "ROOT-SHUTDOWN-WRITE-FAILED"
	fi
fi

if [ "$mode" = bigio ]; then
	b=${rootdev#/dev/}
	echo "ROOT-MAX-SECTORS-KB $(cat "/sys/block/${b%p[0-9]*}/queue/max_sectors_kb")"
	dd if="$rootdev" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
	echo "ROOT-BIGREAD rc=$?"
	mount -t tmpfs tmpfs /tmp
	dd if=/dev/urandom of=/tmp/data bs=1M count=1 iflag=fullblock 2>/dev/null
	sum1=$(md5sum </tmp/data | cut -d' ' -f1)
	dd if=/tmp/data of=/bigio-data bs=1M oflag=direct 2>/dev/null && sync
	echo "ROOT-BIGWRITE rc=$?"
	echo 3 >/proc/sys/vm/drop_caches
	sum2=$(dd if=/bigio-data bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	if [ "$sum1" = "$sum2" ]; then
		echo "ROOT-BIGIO-READBACK-OK $sum2"
	else
		echo "ROOT-BIGIO-READBACK-BAD wrote=$sum1 read=$sum2"
	fi
fi

if [ "$mode" = load ]; then
	n=30
	for w in $(cat /proc/cmdline); do
		case $w in vmtest.load=*) n=${w#*=} ;; esac
	done
	mkdir -p /load
	echo "ROOT-LOAD-BEGIN uptime=$(up)"
	i=1 sums="" last=$(up) stall=0
	while [ "$i" -le "$n" ]; do
		if dd if=/dev/urandom of="/load/f$i" bs=64k count=4 conv=fsync 2>/dev/null; then
			s=$(md5sum <"/load/f$i" | cut -d' ' -f1)
			sums="$sums $i:$s"
			now=$(up)
			echo "ROOT-LOAD $i $s uptime=$now"
			stall=$(awk -v a="$last" -v b="$now" -v m="$stall" 'BEGIN { d = b - a; print (d > m ? d : m) }')
			last=$now
		else
			echo "ROOT-LOAD-ERROR $i uptime=$(up)"
		fi
		i=$((i + 1))
		sleep 0.2
	done
	sync
	echo 3 >/proc/sys/vm/drop_caches
	bad=""
	for e in $sums; do
		[ "$(md5sum <"/load/f${e%%:*}" | cut -d' ' -f1)" = "${e#*:}" ] || bad="$bad ${e%%:*}"
	done
	echo "ROOT-LOAD-STALL max=$stall"
	if [ -z "$bad" ]; then echo "ROOT-LOAD-CHECK ok n=$(echo $sums | wc -w)"; else echo "ROOT-LOAD-CHECK bad=$bad"; fi
	dmesg | grep 'nbdboot:' | sed 's/^/ROOT-DMESG /'
	collect
	echo "ROOT-AFTER-LOAD holders:${holders:- none}"
fi

sync
echo "ROOT-POWEROFF uptime=$(up)"
poweroff -f
