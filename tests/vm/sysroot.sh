#!/bin/bash
# sysroot.sh - print the path of a cached Debian 12 root tree with systemd as
# init: the root the generator tests (tests/vm/hooks.sh) and bench/boot boot.
#
# Usage: tests/vm/sysroot.sh          (progress on stderr, path on stdout)
# Built from the archive with mmdebstrap (minbase, no recommends) plus
# systemd-sysv, udev, dbus (which systemd recommends: without it dracut's
# network module, which picks systemd-networkd on such a system, cannot be
# built), the initramfs generators (dracut-core, dracut-network,
# initramfs-tools-core with busybox), Debian's nbd-client (the reference) and
# what the test unit uses; the kernel of tests/vm/kernel.sh is unpacked into
# /boot and /lib/modules, as its package would put it.  The test unit
# (tests/vm/guest/vmtest-systemd.sh, run after multi-user.target) checks the
# root device, writes and reads back data, reports systemd's timestamps and
# powers the machine off with systemctl.  A fixed machine-id, no getty and
# root's password unset keep the boots alike.
# Cache: ${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/sysroot/KEY/root, KEY being a
# hash of this script, the test unit and the kernel package.  Trees of other
# keys are left alone (another checkout may be using one); remove them with
# rm -rf when done.  Needs root (mmdebstrap, chroot).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap builds a root tree)"
need mmdebstrap mmdebstrap
need flock util-linux
ktree=$("$here/kernel.sh")
kver=$(cat "$ktree/kver")
unit=$here/guest/vmtest-systemd.sh
key=$(cat "$0" "$unit" "$ktree/package" | sha256sum | cut -c1-16)
base=${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/sysroot
tree=$base/$key/root
[ -f "$base/$key/.stamp" ] && { echo "$tree"; exit 0; }

mkdir -p "$base"
exec 9>"$base/.lock"
flock -w 1800 9 || die "timed out waiting for $base/.lock"
[ -f "$base/$key/.stamp" ] && { echo "$tree"; exit 0; }
rm -rf "$base/$key"
mkdir -p "$base/$key"

say "building a Debian 12 root with systemd in $tree (mmdebstrap, a few minutes)"
pkgs=systemd-sysv,udev,dbus,kmod,iproute2,procps,e2fsprogs,busybox,dracut-core,dracut-network
pkgs=$pkgs,initramfs-tools-core,nbd-client,isc-dhcp-client,iputils-arping,cpio,zstd
timeout 1800 mmdebstrap --variant=minbase --include="$pkgs" \
	--aptopt='APT::Install-Recommends "false"' \
	--customize-hook='echo 6e6264626f6f74000000000000000001 >"$1/etc/machine-id"' \
	--customize-hook='echo nbdboot-test >"$1/etc/hostname"' \
	--customize-hook="mkdir -p \"\$1/boot\" \"\$1/lib/modules\" && cp -a '$ktree/boot/.' \"\$1/boot/\" && cp -a '$ktree/lib/modules/$kver' \"\$1/lib/modules/\"" \
	--customize-hook="cp '$unit' \"\$1/usr/local/sbin/vmtest\" && chmod 755 \"\$1/usr/local/sbin/vmtest\"" \
	--customize-hook='printf "[Unit]\nDescription=nbdboot VM test\nAfter=multi-user.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/vmtest\nStandardOutput=journal+console\nStandardError=journal+console\n\n[Install]\nWantedBy=multi-user.target\n" >"$1/etc/systemd/system/vmtest.service"' \
	--customize-hook='chroot "$1" systemctl enable vmtest.service' \
	--customize-hook='chroot "$1" systemctl mask getty@tty1.service serial-getty@ttyS0.service e2scrub_reap.service >/dev/null' \
	--customize-hook='echo "/dev/root / auto defaults 0 0" >"$1/etc/fstab"' \
	bookworm "$tree" http://deb.debian.org/debian >&2 ||
	{ rm -rf "$base/$key"; die "mmdebstrap failed"; }
touch "$base/$key/.stamp"
say "root ready in $tree ($(du -sm "$tree" | cut -f1) MB)"
echo "$tree"
