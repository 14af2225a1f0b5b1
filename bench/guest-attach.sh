#!/bin/sh
# guest-attach.sh - guest side of bench/attach (runs as /init-test.sh).
#
# Attaches 10.0.2.2:PORT (vmtest.port=) to /dev/nbd0 with nbdboot and with
# Debian's nbd-client, alternating which goes first, vmtest.runs= rounds per
# mode (netlink, then ioctl), disconnecting with each tool's own -d between
# runs.  Prints TIMEIT lines (bench/timeit.c) and RSS lines for the resident
# DO_IT holder of each tool in ioctl mode.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
port="" runs=7
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.port=*) port=${w#*=} ;;
	vmtest.runs=*) runs=${w#*=} ;;
	esac
done
dev=/dev/nbd0
ioctl_nbdboot="-L"
ioctl_ref="-nonetlink -systemd-mark"

# attached: the kernel has a size for the device and a DO_IT/CONNECT owner
attached() { [ "$(cat /sys/block/nbd0/size)" != 0 ] && [ -e /sys/block/nbd0/pid ]; }
settle() {  # wait up to 5 s for /dev/nbd0 to be free again
	w=0
	while { attached || [ -e /sys/block/nbd0/pid ]; } && [ $w -lt 100 ]; do sleep 0.05; w=$((w + 1)); done
	[ $w -lt 100 ] || echo "BENCH-STUCK $1: /dev/nbd0 still connected after 5 s"
}
one() {  # one TOOL MODE LABEL
	if [ "$1" = nbdboot ]; then
		set -- "$@" nbdboot 10.0.2.2 "$port" "$dev" -b 512
		[ "$2" = netlink ] || set -- "$@" $ioctl_nbdboot
	else
		set -- "$@" nbd-client 10.0.2.2 "$port" "$dev" -b 512
		[ "$2" = netlink ] || set -- "$@" $ioctl_ref
	fi
	tool=$1 mode=$2 label=$3
	shift 3
	timeit -q "$label" "$@"
	rc=$?
	attached || echo "BENCH-NOT-ATTACHED $label rc=$rc"
	# is partition 1 already known to the kernel when the tool exits?
	if [ -e /sys/block/nbd0/nbd0p1 ]; then echo "BENCH-PART $label yes"; else echo "BENCH-PART $label no"; fi
	if [ "$mode" = ioctl ] && [ "${label#*-}" = rss ]; then
		pid=$(cat /sys/block/nbd0/pid 2>/dev/null)
		echo "BENCH-RSS $tool pid=$pid argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1) $(grep -E '^VmRSS' "/proc/$pid/status" | tr -s ' \t' ' ')"
	fi
	if [ "$tool" = nbdboot ]; then nbdboot -d "$dev" >/dev/null 2>&1; else nbd-client -d "$dev" >/dev/null 2>&1; fi
	settle "$label"
}

echo "BENCH-START runs=$runs port=$port uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "BENCH-SIZE nbdboot $(wc -c </sbin/nbdboot)"
# warm-up: the first TCP connection from a statically configured guest waits
# on slirp's ARP; also pulls both binaries and nbd-client's libraries into
# the page cache.  Not counted.
for mode in netlink ioctl; do
	one nbdboot $mode warm-nbdboot-$mode
	one ref $mode warm-ref-$mode
done
for mode in netlink ioctl; do
	i=1
	while [ $i -le "$runs" ]; do
		if [ $((i % 2)) = 1 ]; then
			one nbdboot $mode nbdboot-$mode-$i
			one ref $mode ref-$mode-$i
		else
			one ref $mode ref-$mode-$i
			one nbdboot $mode nbdboot-$mode-$i
		fi
		i=$((i + 1))
	done
done
one nbdboot ioctl nbdboot-rss
one ref ioctl ref-rss
# nbdboot's own user-space part: from main() to the netlink CONNECT request
# (-v prints each step's time since main()).
i=1
while [ $i -le "$runs" ]; do
	t=$(nbdboot -v 10.0.2.2 "$port" "$dev" -b 512 2>&1 |
		sed -n 's/^nbdboot: +\([0-9.]*\) ms (cpu \([0-9.]*\) ms): netlink CONNECT$/\1 \2/p')
	echo "BENCH-USER nbdboot ${t:-none none}"
	nbdboot -d "$dev" >/dev/null 2>&1
	settle user-$i
	i=$((i + 1))
done
echo "BENCH-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
