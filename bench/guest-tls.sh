#!/bin/sh
# guest-tls.sh - guest side of bench/tls (runs as /init-test.sh).
#
# Against nbdkit on 10.0.2.2:PORT (vmtest.port=; --tls=on, so the same export
# serves plaintext and TLS clients):
#  1. TLS attach time, nbdboot (kTLS) vs Debian's nbd-client (GnuTLS), both
#     netlink, vmtest.runs= alternating rounds after one warm-up each, timed by
#     timeit (exec to exit, output to /dev/null), detached with each tool's -d;
#  2. sequential read throughput of /dev/nbd0, vmtest.rounds= rounds over four
#     set-ups in rotating order: nbdboot plaintext, nbdboot kTLS, nbdboot's
#     proxy (--tls-proxy), nbd-client TLS.  Each: attach, drop caches, timeit
#     dd bs=1M count=vmtest.mb, then (first round) the md5 of what was read,
#     the processes left resident with their VmRSS, and detach.
# Certificates: /etc/nbd-ca.pem; the server certificate names nbd.test.
# $(cmd SETUP) below is split into words on purpose; dev and ca come from
# /guest-lib.sh:
# shellcheck disable=SC2046,SC2091,SC2154
. /guest-lib.sh  # PATH, the clock, dev, ca, attached, resident, settle
port="" runs=7 rounds=3 mb=64
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.port=*) port=${w#*=} ;;
	vmtest.runs=*) runs=${w#*=} ;;
	vmtest.rounds=*) rounds=${w#*=} ;;
	vmtest.mb=*) mb=${w#*=} ;;
	esac
done
# cmd SETUP: the attach command line of a set-up, used unquoted (split into
# words; nothing in it has spaces or glob characters)
cmd() {
	case $1 in
	plain) echo "nbdboot 10.0.2.2 $port $dev -b 512" ;;
	ktls) echo "nbdboot 10.0.2.2 $port $dev -b 512 $ca" ;;
	proxy) echo "nbdboot 10.0.2.2 $port $dev -b 512 $ca --tls-proxy" ;;
	ref) echo "nbd-client 10.0.2.2 $port $dev -b 512 -x $ca" ;;
	esac
}
detach() {
	case $1 in ref) nbd-client -d $dev >/dev/null 2>&1 ;; *) nbdboot -d $dev >/dev/null 2>&1 ;; esac
	settle "$2"
}

echo "BENCH-START runs=$runs rounds=$rounds mb=$mb port=$port uptime=$(cut -d' ' -f1 /proc/uptime) clock=$(date +%s)"
echo "BENCH-SIZE nbdboot $(wc -c </sbin/nbdboot)"

# ---- 1. TLS attach time ----
# warm-up (slirp's ARP on the first connection, page cache, entropy), not counted
for t in ktls ref; do
	timeit -q "warm-$t" $(cmd $t)
	attached || echo "BENCH-NOT-ATTACHED warm-$t"
	detach $t "warm-$t"
done
i=1
while [ $i -le "$runs" ]; do
	if [ $((i % 2)) = 1 ]; then order="ktls ref"; else order="ref ktls"; fi
	for t in $order; do
		timeit -q "attach-$t-$i" $(cmd $t)
		attached || echo "BENCH-NOT-ATTACHED attach-$t-$i"
		[ "$t" = ref ] || echo "BENCH-ATTACH-RESIDENT attach-$t-$i $(resident)"
		detach $t "attach-$t-$i"
	done
	i=$((i + 1))
done

# ---- 2. read throughput ----
set -- plain ktls proxy ref
r=1
while [ $r -le "$rounds" ]; do
	for t; do
		label=read-$t-$r
		if [ $r = 1 ]; then
			# the tool's own report (nbdboot says kTLS or proxy); nbd-client is
			# chatty.  A file, not a pipe: a resident process may keep it open.
			$(cmd $t) >/tmp/attach.out 2>&1
			grep -E '^nbdboot|rror|E:' /tmp/attach.out | sed "s/^/BENCH-MSG $t /"
		else
			$(cmd $t) >/dev/null 2>&1
		fi
		if ! attached; then
			echo "BENCH-NOT-ATTACHED $label"
			continue
		fi
		[ $r != 1 ] || echo "BENCH-RESIDENT $t $(resident)"
		echo 3 >/proc/sys/vm/drop_caches
		timeit -q "$label" dd if=$dev of=/dev/null bs=1M count="$mb"
		# from the page cache now: is what came through the right data?
		[ $r != 1 ] || echo "BENCH-MD5 $t $(dd if=$dev bs=1M count="$mb" 2>/dev/null | md5sum | cut -d' ' -f1)"
		detach $t "$label"
	done
	set -- "$@" "$1"  # rotate: the next round starts with the next set-up
	shift
	r=$((r + 1))
done
echo "BENCH-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
