#!/bin/bash
# refclient.sh - stage Debian's reference nbd-client for a test initramfs.
#
# Usage: tests/vm/refclient.sh     (progress on stderr; on stdout the --add
#                                   arguments for mkinitramfs.sh, one a line)
# Downloads nbd-client, libnl-3-200 and libnl-genl-3-200 with apt-get download,
# unpacks them with dpkg -x (nothing is installed), and copies the binary, its
# shared libraries (resolved with ldd; the ones not in those packages, such as
# GnuTLS, come from the host, where apt itself needs them) and the dynamic
# loader into ${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/nbd-client/tree.
# Guest layout: /sbin/nbd-client, /lib/x86_64-linux-gnu/*.so.*, /lib64/ld-linux-x86-64.so.2.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
cache=${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}/nbd-client
pkgs="nbd-client libnl-3-200 libnl-genl-3-200"

emit() {  # print HOST:GUEST for every staged file
	local f
	(cd "$cache/tree" && find . -type f | LC_ALL=C sort) | while read -r f; do
		echo "$cache/tree/${f#./}:/${f#./}"
	done
}
if [ -f "$cache/.stamp" ]; then emit; exit 0; fi

for t in apt-get dpkg ldd flock; do need "$t" "apt dpkg libc-bin util-linux"; done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || die "timed out waiting for $cache/.lock"
if [ -f "$cache/.stamp" ]; then emit; exit 0; fi

rm -rf "$cache/dl" "$cache/x" "$cache/tree"
mkdir -p "$cache/dl" "$cache/x" "$cache/tree/sbin" "$cache/tree/lib/x86_64-linux-gnu" "$cache/tree/lib64"
say "downloading $pkgs"
(cd "$cache/dl" && timeout 600 apt-get download -q -o APT::Sandbox::User=root $pkgs >&2) ||
	die "apt-get download $pkgs failed (apt-get update?)"
for deb in "$cache"/dl/*.deb; do dpkg -x "$deb" "$cache/x"; done
bin=$cache/x/sbin/nbd-client
[ -x "$bin" ] || bin=$cache/x/usr/sbin/nbd-client
[ -x "$bin" ] || die "no sbin/nbd-client in the nbd-client package"
cp "$bin" "$cache/tree/sbin/nbd-client"
dpkg-deb -f "$cache"/dl/nbd-client_*.deb Version >"$cache/version"

libpath=$cache/x/lib/x86_64-linux-gnu:$cache/x/usr/lib/x86_64-linux-gnu
out=$(LD_LIBRARY_PATH=$libpath ldd "$bin") || die "ldd $bin failed"
if grep -q 'not found' <<<"$out"; then
	die "nbd-client needs libraries this host lacks: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
fi
while read -r a b c _; do
	if [ "$b" = "=>" ] && [ -n "$c" ] && [ "${c#/}" != "$c" ]; then
		cp -L "$c" "$cache/tree/lib/x86_64-linux-gnu/$a"
	elif [ "${a#/}" != "$a" ] && [ -e "$a" ]; then  # the loader: /lib64/ld-linux-x86-64.so.2
		cp -L "$a" "$cache/tree/lib64/${a##*/}"
	fi
done <<<"$out"
[ -n "$(ls "$cache/tree/lib64")" ] || die "no dynamic loader found in: $out"
rm -rf "$cache/dl" "$cache/x"
touch "$cache/.stamp"
say "nbd-client $(cat "$cache/version") staged in $cache/tree ($(du -sk "$cache/tree" | cut -f1) KiB)"
emit
