#!/bin/sh
# guest-throughput.sh - guest side of bench/throughput (runs as /init-test.sh).
#
# Against nbdkit on 10.0.2.2:PORT (vmtest.port=; --tls=on, so the same export
# serves plaintext and TLS clients), vmtest.rounds= rounds over ten set-ups in
# rotating order: nbdboot plaintext, kTLS and proxy (--tls-proxy), nbd-client
# plaintext and TLS, each with 1 and with 4 connections (-C 4), all netlink,
# block size 512.  Each set-up: attach, then iobench (O_DIRECT on /dev/nbd0):
#   1 connection:  seqread, randread with 1 thread; the same with 4 threads
#                  (the parallel reads the 4-connection set-ups are compared
#                  with); seqwrite, randwrite with 1 thread;
#   4 connections: seqread, randread, seqwrite, randwrite with 4 threads;
# sequential: vmtest.mb= MiB in 1 MiB requests, random: vmtest.rmb= MiB in
# 4 KiB requests; then detach with the tool's own -d.  Output lines:
#   BENCH-IO SETUP ROUND IOBENCH ... (iobench's line; nothing after ROUND when
#   it printed none); first round only: BENCH-MSG SETUP (what the tool said),
#   BENCH-QUEUES SETUP (the device's hardware queues, one per connection),
#   BENCH-RESIDENT SETUP (PID:ARGV0:RSS_KB of the client processes);
#   BENCH-NOT-ATTACHED, BENCH-STUCK.  Before the first round, one warm-up
#   attach per tool (BENCH-WARM, not counted).
# Certificates: /etc/nbd-ca.pem; the server certificate names nbd.test.
# $(cmd SETUP) below is split into words on purpose; dev and ca come from
# /guest-lib.sh:
# shellcheck disable=SC2046,SC2091,SC2154
. /guest-lib.sh  # PATH, the clock, dev, ca, attached, resident, settle
port="" rounds=3 mb=32 rmb=4
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.port=*) port=${w#*=} ;;
	vmtest.rounds=*) rounds=${w#*=} ;;
	vmtest.mb=*) mb=${w#*=} ;;
	vmtest.rmb=*) rmb=${w#*=} ;;
	esac
done
# cmd SETUP: the attach command line of a set-up (TOOL-MODE-CONNS), used
# unquoted (split into words; nothing in it has spaces or glob characters)
cmd() {
	case $1 in
	nbdboot-plain-*) c="nbdboot 10.0.2.2 $port $dev -b 512" ;;
	nbdboot-ktls-*) c="nbdboot 10.0.2.2 $port $dev -b 512 -x $ca" ;;
	nbdboot-proxy-*) c="nbdboot 10.0.2.2 $port $dev -b 512 -x $ca --tls-proxy" ;;
	nbd-client-plain-*) c="nbd-client 10.0.2.2 $port $dev -b 512" ;;
	nbd-client-tls-*) c="nbd-client 10.0.2.2 $port $dev -b 512 -x $ca" ;;
	esac
	echo "$c -C ${1##*-}"
}
# io SETUP ROUND MODE BLOCKSIZE MIB THREADS
io() {
	echo "BENCH-IO $1 $2 $(iobench $dev "$3" "$4" "$5" "$6")"
}
detach() {
	case $1 in nbd-client-*) nbd-client -d $dev >/dev/null 2>&1 ;; *) nbdboot -d $dev >/dev/null 2>&1 ;; esac
	settle "$1 $2"
}

echo "BENCH-START rounds=$rounds mb=$mb rmb=$rmb port=$port cpus=$(nproc) uptime=$(cut -d' ' -f1 /proc/uptime) clock=$(date +%s)"
set -- nbdboot-plain-1 nbd-client-plain-1 nbdboot-ktls-1 nbdboot-proxy-1 nbd-client-tls-1 \
	nbdboot-plain-4 nbd-client-plain-4 nbdboot-ktls-4 nbdboot-proxy-4 nbd-client-tls-4
# warm-up, not counted: slirp's ARP, the code of both tools and of iobench
for t in nbdboot-plain-4 nbd-client-plain-4; do
	$(cmd "$t") >/dev/null 2>&1
	attached || echo "BENCH-NOT-ATTACHED $t warm-up"
	iobench $dev seqread 1048576 4 4 | sed 's/^/BENCH-WARM /'
	iobench $dev randwrite 4096 1 4 | sed 's/^/BENCH-WARM /'
	detach "$t" warm-up
done
r=1
while [ "$r" -le "$rounds" ]; do
	for t; do
		# A file, not a pipe: a resident process may keep it open.
		$(cmd "$t") >/tmp/attach.out 2>&1
		[ "$r" != 1 ] || sed "s/^/BENCH-MSG $t /" /tmp/attach.out
		if ! attached; then
			echo "BENCH-NOT-ATTACHED $t $r"
			continue
		fi
		if [ "$r" = 1 ]; then
			echo "BENCH-QUEUES $t $(ls /sys/block/nbd0/mq | wc -l) max_sectors_kb=$(cat /sys/block/nbd0/queue/max_sectors_kb)"
			echo "BENCH-RESIDENT $t $(resident)"
		fi
		case $t in
		*-1)
			io "$t" "$r" seqread 1048576 "$mb" 1
			io "$t" "$r" randread 4096 "$rmb" 1
			io "$t" "$r" seqread 1048576 "$mb" 4
			io "$t" "$r" randread 4096 "$rmb" 4
			io "$t" "$r" seqwrite 1048576 "$mb" 1
			io "$t" "$r" randwrite 4096 "$rmb" 1
			;;
		*)
			io "$t" "$r" seqread 1048576 "$mb" 4
			io "$t" "$r" randread 4096 "$rmb" 4
			io "$t" "$r" seqwrite 1048576 "$mb" 4
			io "$t" "$r" randwrite 4096 "$rmb" 4
			;;
		esac
		detach "$t" "$r"
	done
	set -- "$@" "$1"  # rotate: the next round starts with the next set-up
	shift
	r=$((r + 1))
done
echo "BENCH-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
