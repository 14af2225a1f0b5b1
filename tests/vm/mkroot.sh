#!/bin/bash
# mkroot.sh - make an ext4 root filesystem image for NBD boot tests (no mounts needed).
#
# Usage: tests/vm/mkroot.sh IMAGE.img [--size MB] [--init SCRIPT] [--partitioned]
# The filesystem (mkfs.ext4 -d from a staging dir, default 32 MB) holds busybox-static
# with applet links and SCRIPT as /sbin/init. The default init mounts proc/sys/devtmpfs,
# prints NBDBOOT-ROOT-OK, writes /root-ok ("NBDBOOT-ROOT-OK <uptime> <date>"), syncs
# and does poweroff -f. --partitioned: IMAGE gets an MBR (dos) table with one Linux
# partition from 1 MiB holding that filesystem (read files back with extract-file.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

img="" size=32 init="" part=0
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--init) init=$2; shift 2 ;;
	--partitioned) part=1; shift ;;
	-*) die "unknown option $1" ;;
	*) img=$1; shift ;;
	esac
done
[ -n "$img" ] || die "usage: $0 IMAGE.img [--size MB] [--init SCRIPT] [--partitioned]"
need mkfs.ext4 e2fsprogs
[ $part = 0 ] || need sfdisk fdisk

stage=$(mktemp -d)
trap 'rm -rf "$stage" "$img.fs"' EXIT
stage_busybox "$stage"
mkdir -p "$stage"/{dev,proc,sys,run,tmp,etc,root,mnt}
rm -f "$stage/sbin/init"
if [ -n "$init" ]; then
	cp "$init" "$stage/sbin/init"
else
	cat >"$stage/sbin/init" <<'ROOTINIT'
#!/bin/sh
# /sbin/init of the nbdboot test root (tests/vm/mkroot.sh)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "NBDBOOT-ROOT-OK root=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts) uptime=$(cut -d' ' -f1 /proc/uptime)"
mount -o remount,rw / 2>/dev/null
echo "NBDBOOT-ROOT-OK $(cut -d' ' -f1 /proc/uptime) $(date -u +%Y-%m-%dT%H:%M:%SZ)" >/root-ok
sync
poweroff -f
ROOTINIT
fi
chmod 755 "$stage/sbin/init"

fs=$img
[ $part = 0 ] || fs=$img.fs
rm -f "$fs"
mkfs.ext4 -q -F -L nbdroot -d "$stage" "$fs" "${size}M" >&2
if [ $part = 1 ]; then
	rm -f "$img"
	truncate -s $((size + 1))M "$img"
	echo 'label: dos
start=2048, type=83' | sfdisk -q "$img" >/dev/null
	dd if="$fs" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
fi
say "wrote $img (${size} MB filesystem$([ $part = 0 ] || echo ", partition 1 at 1 MiB"))"
