#!/bin/bash
# demo.sh - `make demo`: boot a VM whose root filesystem is an NBD export.
#
# Usage: tests/vm/demo.sh
# Builds a small ext4 root (busybox, /etc/motd, an init that shows where it
# runs), serves it with nbdkit on a free 127.0.0.1 port, and boots Debian 12's
# kernel under qemu (tcg, no KVM needed) with an initramfs holding nbdboot and
# the kernel command line root=nbd:10.0.2.2:PORT:ext4 (dracut's grammar; the
# host's loopback is 10.0.2.2 inside the VM).  The boot is shown on the
# terminal; the VM powers itself off.  Exit 0 only if the VM reached the NBD
# root.  First run downloads the kernel package (cached in ~/.cache/nbdboot).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ROOT=$(cd "$here/../.." && pwd)
NBDBOOT=${NBDBOOT:-$ROOT/nbdboot}
need nbdkit nbdkit
need mkfs.ext4 e2fsprogs
need qemu-system-x86_64 qemu-system-x86
[ -x "$NBDBOOT" ] || make -s -C "$ROOT" nbdboot
[ -x "$NBDBOOT" ] || die "no $NBDBOOT; run make"

work=$(mktemp -d "${TMPDIR:-/tmp}/nbdboot-demo.XXXXXX")
nbdkit_pid=""
cleanup() {
	if [ -n "$nbdkit_pid" ]; then kill "$nbdkit_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the root filesystem ----
stage=$work/root
stage_busybox "$stage"
mkdir -p "$stage"/{dev,proc,sys,run,tmp,etc,root}
cat >"$stage/etc/motd" <<'MOTD'

  +----------------------------------------------------------+
  |  Hello from a root filesystem that lives on the network. |
  |  Every block you read here came over NBD from nbdkit.    |
  +----------------------------------------------------------+

MOTD
rm -f "$stage/sbin/init"
cat >"$stage/sbin/init" <<'INIT'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname nbdroot
cat /etc/motd
echo '$ uname -a'; uname -a
echo '$ mount | grep nbd'; mount | grep nbd
echo '$ df -h /'; df -h /
echo
echo "DEMO: reached the NBD root after $(cut -d' ' -f1 /proc/uptime) s of (emulated) uptime."
echo "DEMO: nbdboot attached /dev/nbd0 from the initramfs; this is /sbin/init on it. Powering off."
sync
poweroff -f
INIT
chmod 755 "$stage/sbin/init"
mkfs.ext4 -q -F -L demoroot -d "$stage" "$work/root.img" 32M >/dev/null

# ---- the initramfs ----
"$here/mkinitramfs.sh" "$work/initrd.gz" --init "$here/guest/demo-initrd.sh" \
	--add "$NBDBOOT:/sbin/nbdboot" --modules "nbd e1000 ext4" 2>"$work/mk.log" ||
	{ cat "$work/mk.log" >&2; die "mkinitramfs.sh failed"; }

# ---- the server ----
port=""
for _ in $(seq 20); do
	p=$((20000 + RANDOM % 12000))
	[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] || continue
	if nbdkit -P "$work/nbdkit.pid" -i 127.0.0.1 -p "$p" file "$work/root.img" 2>"$work/nbdkit.log"; then
		port=$p
		break
	fi
done
[ -n "$port" ] || { cat "$work/nbdkit.log" >&2; die "could not start nbdkit on a free loopback port"; }
for _ in $(seq 50); do [ -s "$work/nbdkit.pid" ] && break; sleep 0.1; done
nbdkit_pid=$(cat "$work/nbdkit.pid")

echo "demo: nbdkit serves a 32 MB ext4 root on 127.0.0.1:$port (10.0.2.2:$port in the VM)"
echo "demo: booting Debian's $(cat "$("$here/kernel.sh")/kver") kernel under qemu with root=nbd:10.0.2.2:$port:ext4"
echo
# the firmware's terminal resets and screen clears are dropped from what is shown
set +e
"$here/boot.sh" --initrd "$work/initrd.gz" --timeout 180 --log "$work/console.log" \
	--append "quiet root=nbd:10.0.2.2:$port:ext4" | sed -u 's/\x1b\(\[[0-9;?]*[A-Za-z]\|c\)//g'
rc=${PIPESTATUS[0]}
set -e
echo
if tr -d '\r' <"$work/console.log" | grep -q '^DEMO: reached the NBD root'; then
	echo "demo: success: the VM booted from the NBD export and powered off (qemu exit $rc)"
	exit 0
fi
echo "demo: FAILED: the VM did not reach the NBD root (qemu exit $rc)" >&2
exit 1
