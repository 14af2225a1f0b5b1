#!/bin/bash
# extract-file.sh - print a file from an ext4 image made by mkroot.sh (read-only, no mounts).
#
# Usage: tests/vm/extract-file.sh IMAGE PATH [--partitioned]
# With --partitioned the filesystem is read from partition 1 of the image's table.
# Exit status 1 if the file does not exist.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

img="" path="" part=0
for a in "$@"; do
	case $a in
	--partitioned) part=1 ;;
	-*) die "unknown option $a" ;;
	*) if [ -z "$img" ]; then img=$a; else path=$a; fi ;;
	esac
done
[ -f "$img" ] && [ -n "$path" ] || die "usage: $0 IMAGE PATH [--partitioned]"
need debugfs e2fsprogs
src=$img
if [ $part = 1 ]; then
	need sfdisk fdisk
	start=$(sfdisk -d "$img" | sed -n 's/^[^:]*1 : start= *\([0-9]*\),.*/\1/p')
	[ -n "$start" ] || die "no partition 1 in $img"
	src="$img?offset=$((start * 512))"  # e2fsprogs unix io option
fi
# debugfs exits 0 even for a missing file; check with stat first
debugfs -R "stat $path" "$src" 2>&1 | grep -q '^Inode:' || die "$path not found in $img"
debugfs -R "cat $path" "$src" 2>/dev/null
