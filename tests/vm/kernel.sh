#!/bin/bash
# kernel.sh - print the path of a cached, extracted Debian 12 kernel tree.
#
# Usage: tests/vm/kernel.sh            (progress on stderr, path on stdout)
# The tree holds boot/vmlinuz-$KVER, lib/modules/$KVER (depmod'ed) and a file
# "kver" with $KVER. The package is the one linux-image-amd64 depends on; it is
# downloaded with apt-get download and unpacked with dpkg -x, never installed.
# Cache: ${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/kernel. Set NBDBOOT_KERNEL_REFRESH=1
# to look the package up again (otherwise the cached tree is reused as is).
set -eu
cache=${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/kernel
say() { echo "kernel.sh: $*" >&2; }

cached() {  # print the current tree if it is complete
	local t
	[ "${NBDBOOT_KERNEL_REFRESH:-0}" = 1 ] && return 1
	t=$(cat "$cache/current" 2>/dev/null) || return 1
	[ -f "$t/.stamp" ] && echo "$t"
}
cached && exit 0

for tool in apt-get apt-cache dpkg depmod flock; do
	command -v "$tool" >/dev/null || { say "missing $tool: apt-get install -y kmod apt dpkg util-linux"; exit 1; }
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 1800 9 || { say "timed out waiting for $cache/.lock"; exit 1; }
cached && exit 0  # another caller finished while we waited

pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
[ -n "$pkg" ] || { say "cannot find the package linux-image-amd64 depends on (apt-get update?)"; exit 1; }
kver=${pkg#linux-image-}
tree=$cache/$pkg
if [ ! -f "$tree/.stamp" ]; then
	say "downloading $pkg"
	rm -rf "$tree" "$tree.tmp" "$cache/dl"
	mkdir -p "$cache/dl"
	(cd "$cache/dl" && timeout 1200 apt-get download -q "$pkg" >&2)
	deb=$(ls "$cache/dl"/*.deb)
	say "extracting $(basename "$deb")"
	dpkg -x "$deb" "$tree.tmp"
	dpkg-deb -f "$deb" Package Version >"$tree.tmp/package"
	echo "$kver" >"$tree.tmp/kver"
	[ -f "$tree.tmp/boot/vmlinuz-$kver" ] && [ -d "$tree.tmp/lib/modules/$kver" ] ||
		{ say "unexpected package layout in $deb"; exit 1; }
	depmod -b "$tree.tmp" "$kver"
	rm -rf "$cache/dl"
	mv "$tree.tmp" "$tree"
	touch "$tree/.stamp"
fi
echo "$tree" >"$cache/current.tmp" && mv "$cache/current.tmp" "$cache/current"
say "kernel $kver ready in $tree"
echo "$tree"
