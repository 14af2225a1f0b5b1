# shellcheck shell=sh
# guest-lib.sh - what bench/guest-tls.sh and bench/guest-throughput.sh
# share, sourced from /guest-lib.sh in their initramfs: the clock, the
# device and CA options, and the checks around each set-up's attach and
# detach.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# certificates are checked against the clock: set it from vmtest.epoch= (the
# host's clock at boot) if it is behind
for w in $(cat /proc/cmdline); do
	case $w in vmtest.epoch=*) e=${w#*=}; [ "$(date +%s)" -ge $((e - 60)) ] || date -s "@$e" >/dev/null ;; esac
done
# dev and ca are for the scripts that source this
# shellcheck disable=SC2034
dev=/dev/nbd0 ca="-A /etc/nbd-ca.pem -H nbd.test"

attached() { [ "$(cat /sys/block/nbd0/size)" != 0 ] && [ -e /sys/block/nbd0/pid ]; }
# resident: "PID:ARGV0:RSS_KB ..." of the client processes left: marked '@'
# (nbdboot's), or any nbdboot or nbd-client process
resident() {
	r=""
	for d in /proc/[0-9]*; do
		c=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)
		case $c in
		@* | *nbdboot* | *nbd-client*) r="$r ${d#/proc/}:${c%% *}:$(sed -n 's/^VmRSS:[^0-9]*\([0-9]*\).*/\1/p' "$d/status")" ;;
		esac
	done
	echo "${r# }"
}
settle() {  # settle SETUP: wait up to 5 s for /dev/nbd0 and every client process to be gone
	w=0
	while { attached || [ -e /sys/block/nbd0/pid ] || [ -n "$(resident)" ]; } && [ $w -lt 100 ]; do
		sleep 0.05
		w=$((w + 1))
	done
	[ $w -lt 100 ] || echo "BENCH-STUCK $1: still connected or resident after 5 s: $(resident)"
}
