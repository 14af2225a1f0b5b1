# shellcheck shell=bash
# lib.sh - helpers sourced by the tests/vm scripts (not run directly).

die() { echo "${0##*/}: $*" >&2; exit 1; }
say() { echo "${0##*/}: $*" >&2; }

# need TOOL PACKAGE: fail with the apt-get line if TOOL is missing.
need() {
	command -v "$1" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null ||
		die "missing $1; install it with: apt-get install -y $2"
}

# stage_busybox DIR: put busybox-static at DIR/bin/busybox plus a symlink for
# every applet at its usual place (bin/sh, sbin/ip, usr/bin/nc, ...).
stage_busybox() {
	local dir=$1 bb=${BUSYBOX:-/bin/busybox} applet
	[ -x "$bb" ] || die "missing $bb; install it with: apt-get install -y busybox-static"
	file -L "$bb" 2>/dev/null | grep -q 'dynamically linked' &&
		die "$bb is dynamically linked; install busybox-static"
	mkdir -p "$dir/bin" "$dir/sbin" "$dir/usr/bin" "$dir/usr/sbin"
	cp "$bb" "$dir/bin/busybox"
	for applet in $("$bb" --list-full); do
		[ -e "$dir/$applet" ] || ln -s /bin/busybox "$dir/$applet"
	done
}
