#!/bin/sh
# initrd-nbd.sh - initramfs side of tests/vm/scenarios.sh and tests/vm/demo.sh
# (runs as /init-test.sh from the /init that tests/vm/mkinitramfs.sh generates).
#
# Attaches the root the kernel command line asks for with `nbdboot --cmdline`,
# mounts NBD_ROOT (type NBD_FSTYPE, options NBD_ROOTFLAGS, read-only when
# NBD_READONLY=1 or the block device is read-only) on /newroot and asks /init
# to switch_root into it.  Everything it learns is printed as NBD-* lines on
# the console, which the host-side scripts grep.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }
quiet=0
case " $(cat /proc/cmdline) " in *" vmtest.quiet "*) quiet=1 ;; esac
say() { [ $quiet = 1 ] || echo "$@"; }

case " $(cat /proc/cmdline) " in *" vmtest.kerrors "*) exec sh /kernel-errors.sh ;; esac
case " $(cat /proc/cmdline) " in *" vmtest.reconnect "*) exec sh /reconnect-errors.sh ;; esac
# vmtest.notls: a kernel without kTLS (no tls module, and no modprobe to load it)
case " $(cat /proc/cmdline) " in
*" vmtest.notls "*) rm -f /sbin/modprobe && rmmod tls && echo "NBD-NOTLS ok" ;;
esac

# vmtest.epoch=SECONDS (the host's clock at boot): TLS certificates are
# checked against the clock, so set it if the guest's is behind.
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.epoch=*)
		e=${w#*=} now=$(date +%s)
		if [ "$now" -ge $((e - 60)) ]; then
			echo "NBD-CLOCK ok guest=$now host=$e"
		elif date -s "@$e" >/dev/null 2>&1; then
			echo "NBD-CLOCK ok set from $now to $(date +%s)"
		else
			echo "NBD-CLOCK behind guest=$now host=$e"
		fi ;;
	esac
done

env=$(nbdboot --cmdline --print-env)
rc=$?
[ $quiet = 1 ] || printf '%s\n' "$env" | sed 's/^/NBD-ENV /'
if [ $rc -ne 0 ]; then
	echo "NBD-PRINTENV-FAIL rc=$rc"
	exit 1
fi
eval "$env"
for v in NBD_SERVER NBD_PORT NBD_EXPORT NBD_DEVICE NBD_ROOT NBD_FSTYPE NBD_ROOTFLAGS \
	NBD_METHOD NBD_READONLY NBD_TLS; do
	eval "say \"NBD-VAR $v=\${$v-<unset>}\""
done
dev=${NBD_DEVICE:-/dev/nbd0}

say "NBD-ATTACH-BEGIN uptime=$(up)"
nbdboot --cmdline
rc=$?
echo "NBD-ATTACH-END rc=$rc uptime=$(up)"
b=${dev#/dev/}
if [ $rc -ne 0 ]; then
	nbdboot -c "$dev"
	echo "NBD-CHECK rc=$?"
	echo "NBD-SYSFS size=$(cat "/sys/block/$b/size" 2>/dev/null) pid=$(cat "/sys/block/$b/pid" 2>/dev/null || echo none)"
	exit 1
fi
nbdboot -c "$dev" >/dev/null
say "NBD-CHECK rc=$?"

root=${NBD_ROOT:-$dev}
r=${root#/dev/}
i=0
while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
say "NBD-DEV $root present=$([ -b "$root" ] && echo yes || echo no) size=$(cat "/sys/class/block/$r/size" 2>/dev/null) ro=$(cat "/sys/class/block/$r/ro" 2>/dev/null) pid=$(cat "/sys/block/$b/pid" 2>/dev/null || echo none) bs=$(cat "/sys/block/$b/queue/logical_block_size" 2>/dev/null)"
say "NBD-PARTS $(cd /sys/class/block && echo ${b}p* | sed "s/${b}p\*//")"

opts=$NBD_ROOTFLAGS
if [ "${NBD_READONLY:-0}" = 1 ] || [ "$(cat "/sys/class/block/$r/ro" 2>/dev/null)" = 1 ]; then
	opts=ro${opts:+,$opts}
fi
set --
[ -z "$NBD_FSTYPE" ] || set -- -t "$NBD_FSTYPE"
[ -z "$opts" ] || set -- "$@" -o "$opts"
mkdir -p /newroot
if ! mount "$@" "$root" /newroot; then
	echo "NBD-MOUNT-FAIL mount $* $root /newroot"
	exit 1
fi
say "NBD-MOUNTED $(grep ' /newroot ' /proc/mounts)"
holders=""
for d in /proc/[0-9]*; do
	c=""
	IFS= read -r c 2>/dev/null <"$d/cmdline"
	case $c in @*) holders="$holders ${d#/proc/}" ;; esac
done
say "NBD-HOLDERS${holders:- none}"
# every process left behind by the client: '@'-marked or "nbd" in its command
procs=""
for d in /proc/[0-9]*; do
	c=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)
	case $c in @* | *nbd*) procs="$procs ${d#/proc/}:${c%% *}" ;; esac
done
say "NBD-RESIDENT${procs:- none}"
echo "/newroot /sbin/init" >/run/switch-root
echo "NBD-READY uptime=$(up)"
