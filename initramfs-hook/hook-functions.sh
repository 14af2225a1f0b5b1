# shellcheck shell=sh
# hook-functions.sh - what nbdboot's dracut module and initramfs-tools hook
# share at image-build time; installed as /usr/lib/nbdboot/hook-functions.sh
# and sourced by both (POSIX sh; dracut's bash reads it too).
#
#   nbdboot_drop_nbd_client ROOT
#       Once nbdboot attaches the root, Debian's nbd-client (put in by
#       dracut's nbd module or by nbd-client's own initramfs-tools hook) is
#       dead weight: with GnuTLS and libnl behind it, some 2 MB of
#       the image.  Removes ROOT's sbin/nbd-client and every shared library
#       of it that nothing else in ROOT names any more.  "Names" is a plain
#       search for the library's soname in the image's other files (kernel
#       modules and ld.so.cache aside): a NEEDED entry is that string, and so
#       is a dlopen() argument, so a library something else may load stays.
#       Repeated until nothing changes (a library only a dropped library
#       needed goes too).  Prints what it removed, one line.

nbdboot_drop_nbd_client() {
	_nd_root=$1 _nd_bin=
	for _nd_f in "$_nd_root/usr/sbin/nbd-client" "$_nd_root/sbin/nbd-client"; do
		if [ -f "$_nd_f" ] && [ ! -L "$_nd_f" ]; then
			_nd_bin=$_nd_f
			break
		fi
	done
	[ -n "$_nd_bin" ] || return 0
	# its libraries by soname (ldd resolves them as the building system does)
	_nd_libs=$(ldd "$_nd_bin" 2>/dev/null | sed -n 's/^[[:space:]]*\(lib[^[:space:]/]*\.so[^[:space:]/]*\) => .*/\1/p' | sort -u)
	rm -f "$_nd_root/usr/sbin/nbd-client" "$_nd_root/sbin/nbd-client"
	_nd_gone=
	if [ -n "$_nd_libs" ]; then
		# "FILE:SONAME" for every mention, then the fixed point in awk: a
		# library stays when a file that stays mentions it
		set -f
		set -- $(for _nd_s in $_nd_libs; do printf ' -e %s' "$_nd_s"; done)
		set +f
		_nd_gone=$(cd "$_nd_root" && grep -raoF --exclude='*.ko' --exclude='*.ko.*' \
			--exclude=ld.so.cache "$@" . 2>/dev/null |
			awk -v cands="$_nd_libs" '
			BEGIN { n = split(cands, c, /[ \n]+/); for (i = 1; i <= n; i++) if (c[i] != "") drop[c[i]] = 1 }
			{
				if (!match($0, /:[^:]*$/)) next
				f = substr($0, 1, RSTART - 1); s = substr($0, RSTART + 1)
				if (!(s in drop)) next
				b = f; sub(/.*\//, "", b)
				o = ""
				for (x in drop) if (index(b, x) == 1) o = x
				if (o == s) next          # the library itself
				uses[f, s] = 1; owner[f] = o
			}
			END {
				do {
					ch = 0
					for (k in uses) {
						split(k, p, SUBSEP)
						if (!(p[2] in drop) || (owner[p[1]] != "" && owner[p[1]] in drop)) continue
						delete drop[p[2]]; ch = 1
					}
				} while (ch)
				for (s in drop) print s
			}')
		for _nd_s in $_nd_gone; do
			find "$_nd_root" \( -type f -o -type l \) -name "$_nd_s*" -exec rm -f {} +
		done
	fi
	echo "nbdboot: nbd-client left out of the image (nbdboot attaches the root)${_nd_gone:+, and what only it used:} $(echo $_nd_gone)"
}
