#!/bin/bash
# package.sh - the Debian package (debian/), built the way a user builds it and
# checked the way Debian would.
#
#	tests/package.sh        (from make check; root: dpkg in a chroot)
#
# The build runs `dpkg-buildpackage -b -us -uc` in the source tree: a copy of
# this checkout with its uncommitted changes (git ls-files), made a git
# repository so that what the build leaves can be seen, plus the BearSSL
# cache (build/bearssl) when there is one.  The checkout itself gets nothing.
# Then: the version (nbdboot -V = debian/changelog = the .deb), the contents
# (every file `make install` installs, with its mode, and only Debian's docs
# besides), a static binary that negotiates TLS, the update-initramfs trigger,
# lintian, and a build from the bare source package (BearSSL fetched; in the
# background meanwhile) that gives the same .deb.  Then in the Debian 12 test root (tests/vm/syslib.sh,
# a throwaway overlay each): dpkg -i, dracut --list-modules, dpkg -r and -P;
# and with initramfs-tools, then dracut, installed: installing and removing
# nbdboot makes them rebuild the initramfs when the package carries files for
# them.  Logs in build/pkg/.
# (no set -u: tests/lib.sh is not written for it)
here=$(cd "$(dirname "$0")/vm" && pwd)
. "$here/../lib.sh"
. "$here/lib.sh"
LOGDIR=$ROOT/build/pkg
. "$here/syslib.sh"
T0_ALL=$(date +%s)
rm -rf "$LOGDIR" && mkdir -p "$LOGDIR"

finish() {
	echo "tests/package.sh: $N_PASS passed, $N_FAIL failed in $(($(date +%s) - T0_ALL)) s (logs: $LOGDIR)"
	[ "$N_FAIL" -eq 0 ]
	exit
}
prep_fail() { fail "package: setup" "$*"; finish; }

[ "$(id -u)" = 0 ] || prep_fail "needs root (dpkg in a chroot of the test root)"
for t in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian git:git nbdkit:nbdkit readelf:binutils; do
	command -v "${t%%:*}" >/dev/null || prep_fail "${t%%:*} is missing (apt-get install ${t#*:}; make deps)"
done

VERSION=$(sed -n 's/^#define NBDBOOT_VERSION "\(.*\)"$/\1/p' "$ROOT/nbdboot.c")
ARCH=$(dpkg --print-architecture)
DEB=nbdboot_${VERSION}_$ARCH.deb
[ -n "$VERSION" ] || prep_fail "no NBDBOOT_VERSION in nbdboot.c"

# ==== The source tree, as a user has it =======================================
# SRC: this checkout's files (tracked and untracked, not ignored, as they are
# now), committed to a fresh repository; build/bearssl copied if present.
BUILDS=$TESTDIR/builds
SRC=$BUILDS/nbdboot-$VERSION
mkdir -p "$SRC/build"
(cd "$ROOT" && git ls-files -co --exclude-standard -z |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar --null -cf - -T -) | tar -xf - -C "$SRC" || prep_fail "could not copy the checkout"
[ -e "$ROOT/build/bearssl" ] && cp -a "$ROOT/build/bearssl" "$SRC/build/"
git -C "$SRC" -c init.defaultBranch=main init -q && git -C "$SRC" add -A &&
	git -C "$SRC" -c user.name=test -c user.email=test@invalid commit -qm copy ||
	prep_fail "could not make the copy a git repository"

# ==== Build ===================================================================

begin "package: dpkg-buildpackage -b -us -uc in the source tree makes ../$DEB"
(cd "$SRC" && timeout 900 dpkg-buildpackage -b -us -uc) >"$LOGDIR/build.log" 2>&1 ||
	why "dpkg-buildpackage failed: $(tail -n3 "$LOGDIR/build.log" | tr '\n' ' ')"
[ -f "$BUILDS/$DEB" ] || why "no $DEB next to the tree: $(ls "$BUILDS" | tr '\n' ' ')"
end_test || finish
cp "$BUILDS/$DEB" "$LOGDIR/"

# Reference: what `make install` installs (the tree's build is up to date).
make -s -C "$SRC" install DESTDIR="$TESTDIR/inst" PREFIX=/usr >"$LOGDIR/install.log" 2>&1 ||
	prep_fail "make install failed: $(tail -n3 "$LOGDIR/install.log")"

begin "package: the build leaves nothing git shows, and debian/rules clean removes all it made but the build/ cache"
left=$(git -C "$SRC" status --porcelain)
[ -z "$left" ] || why "after the build, git status shows: $(_flat "$left")"
(cd "$SRC" && debian/rules clean) >"$LOGDIR/clean.log" 2>&1 || why "debian/rules clean failed"
left=$(git -C "$SRC" status --porcelain --ignored | grep -vx '!! build/')
[ -z "$left" ] || why "after debian/rules clean: $(_flat "$left")"
end_test

# The package's contents and control area, extracted.
PKG=$TESTDIR/pkg
dpkg-deb -R "$BUILDS/$DEB" "$PKG" || prep_fail "dpkg-deb -R $DEB failed"
field() { dpkg-deb -f "$BUILDS/$DEB" "$1"; }

begin "package: one version: nbdboot.c's (nbdboot -V), debian/changelog's, the .deb's"
got=$("$PKG/usr/sbin/nbdboot" -V 2>&1)
[ "$got" = "nbdboot $VERSION" ] || why "the packaged nbdboot -V says '$got', nbdboot.c '$VERSION'"
got=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -SVersion)
[ "$got" = "$VERSION" ] || why "debian/changelog says $got"
[ "$(field Version)" = "$VERSION" ] || why "the .deb says Version: $(field Version)"
[ "$(field Package)" = nbdboot ] && [ "$(field Architecture)" = "$ARCH" ] ||
	why "Package/Architecture are '$(field Package)'/'$(field Architecture)'"
end_test

begin "package: /usr/sbin/nbdboot is static, built with the cached BearSSL, and negotiates TLS with nbdkit"
bin=$PKG/usr/sbin/nbdboot
readelf -d "$bin" 2>&1 | grep -q 'no dynamic section' || why "usr/sbin/nbdboot has a dynamic section"
readelf -lW "$bin" | grep -q INTERP && why "usr/sbin/nbdboot asks for a program interpreter"
bv=$(sed -n 's/^Version: //p' "$SRC"/build/bearssl/bearssl_*.dsc)
grep -Fq "bearssl (= $bv)" <<<"$(field Static-Built-Using)" ||
	why "Static-Built-Using '$(field Static-Built-Using)' lacks bearssl (= $bv)"
PKI=$TESTDIR/pki
if ! "$ROOT/tests/pki.sh" "$PKI" >"$LOGDIR/pki.log" 2>&1; then
	why "tests/pki.sh failed"
elif ! start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit" memory 1M; then
	why "nbdkit with TLS did not start"
else
	NBDBOOT=$bin run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
	expect_rc 0 && expect_line "size: 1048576" && expect_out '^tls: yes'
	stop_server
fi
end_test

# relative paths of the files (and links) under DIR, with their modes
files_of() { (cd "$1" && find . ! -type d ! -path './DEBIAN/*' -printf '%m %P\n' | LC_ALL=C sort -k2); }

begin "package: it holds every file make install installs, with its mode, and besides only Debian's docs"
# dh_compress gzips man pages: compare them uncompressed.
want=$(files_of "$TESTDIR/inst")
got=$(files_of "$PKG" | grep -Ev ' usr/share/doc/nbdboot/(copyright|changelog\.gz)$| usr/share/lintian/overrides/nbdboot$' |
	sed 's,^\(.* usr/share/man/.*\)\.gz$,\1,')
missing=$(comm -23 <(echo "$want") <(echo "$got"))
extra=$(comm -13 <(echo "$want") <(echo "$got"))
[ -z "$missing" ] || why "make install has, the package lacks (or with another mode): $(_flat "$missing")"
[ -z "$extra" ] || why "the package has, make install does not: $(_flat "$extra")"
zcat "$PKG/usr/share/man/man8/nbdboot.8.gz" 2>/dev/null | cmp -s - "$ROOT/nbdboot.8" ||
	why "usr/share/man/man8/nbdboot.8.gz is not nbdboot.8"
# The generators' files, named from the source (not from the Makefile).
for f in "$ROOT"/initramfs-hook/dracut/*.sh "$ROOT"/initramfs-hook/dracut/*.rules; do
	[ -f "$f" ] || continue
	[ -f "$PKG/usr/lib/dracut/modules.d/95nbdboot/${f##*/}" ] ||
		why "no usr/lib/dracut/modules.d/95nbdboot/${f##*/}"
done
for f in "$ROOT"/initramfs-hook/initramfs-tools/hooks/* "$ROOT"/initramfs-hook/initramfs-tools/scripts/*/*; do
	[ -f "$f" ] || continue
	rel=${f#"$ROOT"/initramfs-hook/initramfs-tools/}
	[ -x "$PKG/usr/share/initramfs-tools/$rel" ] || why "no executable usr/share/initramfs-tools/$rel"
done
end_test

# Whether the package carries files for a generator: then it must trigger.
GEN=no
[ -n "$(find "$PKG/usr/lib/dracut" "$PKG/usr/share/initramfs-tools" -type f 2>/dev/null)" ] && GEN=yes
DRACUT_MOD=no
[ -f "$PKG/usr/lib/dracut/modules.d/95nbdboot/module-setup.sh" ] && DRACUT_MOD=yes
echo "package: generator files in the package: $GEN; dracut module: $DRACUT_MOD"

begin "package: the update-initramfs trigger is there exactly when it carries generator files ($GEN)"
trig=no
grep -qx 'activate-noawait update-initramfs' "$PKG/DEBIAN/triggers" 2>/dev/null && trig=yes
[ "$trig" = "$GEN" ] || why "activate-noawait update-initramfs: $trig, generator files: $GEN"
for s in preinst postinst prerm postrm; do
	[ -e "$PKG/DEBIAN/$s" ] && why "a $s script: none is needed ($(head -c 200 "$PKG/DEBIAN/$s" | tr '\n' ' '))"
done
end_test

begin "package: lintian reports no error or warning (source package and .deb)"
(cd "$BUILDS" && timeout 120 dpkg-source -b "nbdboot-$VERSION") >"$LOGDIR/source.log" 2>&1 ||
	why "dpkg-source -b failed: $(tail -n2 "$LOGDIR/source.log" | tr '\n' ' ')"
junk=$(tar -tJf "$BUILDS/nbdboot_$VERSION.tar.xz" 2>/dev/null | grep -E '/(build|\.git)/' | head -n3)
[ -z "$junk" ] || why "the source package has $(_flat "$junk")"
timeout 300 lintian --fail-on error,warning "$BUILDS/nbdboot_$VERSION.dsc" "$BUILDS/nbdboot_${VERSION}_$ARCH.changes" \
	>"$LOGDIR/lintian.log" 2>&1 || why "lintian: $(_flat "$(grep -E '^[EW]:' "$LOGDIR/lintian.log")")"
end_test

# ==== From the bare source package: started now, checked at the end ==========
# The source package has no build/: the Makefile fetches BearSSL's source.
# (timeout makes its own process group, which lib.sh kills on exit.)
CLEAN=$TESTDIR/clean
mkdir -p "$CLEAN"
timeout 900 bash -c 'cd "$1" && dpkg-source -x "$2" && cd "nbdboot-$3" && [ ! -e build ] &&
	dpkg-buildpackage -b -us -uc' clean-build "$CLEAN" "$BUILDS/nbdboot_$VERSION.dsc" "$VERSION" \
	>"$LOGDIR/clean-build.log" 2>&1 </dev/null &
CLEAN_PID=$!
_PGRPS+=("$CLEAN_PID")

# ==== In the Debian 12 test root ===============================================
# sys_run without --install: the package puts the files there.

sys_init >"$LOGDIR/sysroot.log" 2>&1 || prep_fail "the test root: $(tail -n2 "$LOGDIR/sysroot.log")"
cp "$BUILDS/$DEB" "$SYS_OUT/"

# section NAME: the lines of the last run's output between "== NAME" and the next "=="
section() { sed -n "/^== $1\$/,/^== /{/^== /d;p}" <<<"$RUN_OUT"; }

begin "test root: dpkg -i installs it (no trigger processed without a generator package), dracut lists its module ($DRACUT_MOD), dpkg -r and -P leave nothing"
RUN_OUT=$(sys_run "
	echo '== install'; timeout 300 dpkg -i /out/$DEB 2>&1; echo \"rc=\$?\"
	echo '== status'; dpkg-query -W -f='\${Status}\n' nbdboot
	echo '== version'; nbdboot -V
	dpkg -L nbdboot | grep -vx /. >/tmp/files
	echo '== missing'; while read -r f; do [ -e \"\$f\" ] || echo \"\$f\"; done </tmp/files
	echo '== dracut'; timeout 120 dracut --list-modules --kver $SYS_KVER 2>&1
	echo '== remove'; timeout 300 dpkg -r nbdboot 2>&1; echo \"rc=\$?\"
	echo '== purge'; timeout 300 dpkg -P nbdboot 2>&1; echo \"rc=\$?\"
	echo '== after'; dpkg-query -W -f='\${Status}\n' nbdboot 2>&1; ls /var/lib/dpkg/info/ | grep '^nbdboot\.'
	echo '== left'; while read -r f; do [ -e \"\$f\" ] && ! dpkg -S \"\$f\" >/dev/null 2>&1 && echo \"\$f\"; done </tmp/files
	echo '== end'" 2>&1)
echo "$RUN_OUT" >"$LOGDIR/testroot.log"
grep -qx 'rc=0' <<<"$(section install)" || why "dpkg -i failed: $(_flat "$(section install)")"
grep -Eq 'Processing triggers for (initramfs-tools|dracut) ' <<<"$(section install)" && why "generator triggers processed: $(_flat "$(section install)")"
[ "$(section status)" = "install ok installed" ] || why "status after dpkg -i: '$(section status)'"
[ "$(section version)" = "nbdboot $VERSION" ] || why "nbdboot -V in the root: '$(section version)'"
[ -z "$(section missing)" ] || why "listed but not on disk: $(_flat "$(section missing)")"
mod=no
grep -qx nbdboot <<<"$(section dracut)" && mod=yes
grep -qx base <<<"$(section dracut)" || why "dracut --list-modules does not work: $(_flat "$(section dracut)")"
[ "$mod" = "$DRACUT_MOD" ] || why "dracut --list-modules lists nbdboot: $mod; module in the package: $DRACUT_MOD"
grep -qx 'rc=0' <<<"$(section remove)" || why "dpkg -r failed: $(_flat "$(section remove)")"
grep -qx 'rc=0' <<<"$(section purge)" || why "dpkg -P failed: $(_flat "$(section purge)")"
grep -q '^install ok installed' <<<"$(section after)" && why "still installed after dpkg -P"
grep -q '^nbdboot\.' <<<"$(section after)" && why "dpkg still has: $(_flat "$(section after)")"
[ -z "$(section left)" ] || why "left behind, owned by no package: $(_flat "$(section left)")"
end_test

# With a generator package that rebuilds the initramfs on the update-initramfs
# trigger: the archive's own packages, downloaded on the host (the -core
# packages too, so that they match).  The images are kept small and quick
# to make (initramfs-tools: MODULES=list, gzip; dracut: the base module only,
# uncompressed): that a rebuild happens is what is checked.
mkdir -p "$SYS_OUT/debs"
(cd "$SYS_OUT/debs" && timeout 300 apt-get -q -o APT::Sandbox::User=root download \
	initramfs-tools initramfs-tools-core linux-base dracut dracut-core) >"$LOGDIR/download.log" 2>&1 ||
	prep_fail "apt-get download of the generator packages failed: $(tail -n2 "$LOGDIR/download.log")"
IMG=/boot/initrd.img-$SYS_KVER

# trigger_run NAME SETUP: in a fresh overlay, SETUP (install a generator,
# make the first image), then dpkg -i and dpkg -r of the package, recording
# the image's inode and time (a rebuilt image is a new file) around each.
trigger_run() {
	sys_run "
		exec 2>&1
		echo '== setup'; { $2; } >/tmp/setup.log 2>&1 || { cat /tmp/setup.log; echo 'setup failed'; }
		echo '== before'; stat -c '%i %y' $IMG
		echo '== install'; timeout 300 dpkg -i /out/$DEB; echo \"rc=\$?\"
		echo '== installed'; stat -c '%i %y' $IMG
		echo '== remove'; timeout 300 dpkg -r nbdboot; echo \"rc=\$?\"
		echo '== removed'; stat -c '%i %y' $IMG
		echo '== end'" >"$LOGDIR/trigger-$1.log" 2>&1
}
trigger_run initramfs-tools "
	timeout 300 dpkg -i /out/debs/linux-base_*.deb /out/debs/initramfs-tools-core_*.deb /out/debs/initramfs-tools_*.deb &&
	sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' /etc/initramfs-tools/initramfs.conf &&
	timeout 300 update-initramfs -c -k $SYS_KVER" &
PID_IT=$!
trigger_run dracut "
	printf 'dracutmodules=\" base \"\nadd_dracutmodules=\"\"\nhostonly=no\ncompress=cat\n' >/etc/dracut.conf.d/90-small.conf &&
	timeout 300 dpkg -i /out/debs/dracut-core_*.deb /out/debs/dracut_*.deb && test -s $IMG" &
PID_DR=$!
wait "$PID_IT" "$PID_DR"

# check_trigger GENERATOR PACKAGE: the log of trigger_run for it
check_trigger() {
	RUN_OUT=$(<"$LOGDIR/trigger-$1.log")
	local before
	before=$(section before)
	grep -q 'setup failed' <<<"$(section setup)" && { why "setup: $(_flat "$(section setup)")"; return; }
	grep -q '^[0-9]' <<<"$before" || { why "no $IMG after the setup: $(_flat "$before")"; return; }
	for step in install:installed remove:removed; do
		local s=${step%%:*} after rebuilt=no proc=no
		after=$(section "${step#*:}")
		grep -qx 'rc=0' <<<"$(section $s)" || why "dpkg $s failed: $(_flat "$(section $s)")"
		grep -q "^Processing triggers for $2 " <<<"$(section $s)" && proc=yes
		[ "$after" != "$before" ] && rebuilt=yes
		[ "$proc" = "$GEN" ] || why "dpkg $s: 'Processing triggers for $2': $proc, expected $GEN"
		[ "$rebuilt" = "$GEN" ] || why "dpkg $s: $IMG rebuilt: $rebuilt, expected $GEN"
		before=$after
	done
}

begin "test root with initramfs-tools: dpkg -i and dpkg -r rebuild the initramfs ($GEN)"
check_trigger initramfs-tools initramfs-tools
end_test

begin "test root with dracut: dpkg -i and dpkg -r rebuild the initramfs ($GEN)"
check_trigger dracut dracut
end_test

begin "package: built from the bare source package (BearSSL fetched from the archive), the same .deb bit for bit"
if ! wait "$CLEAN_PID"; then
	why "dpkg-source -x and dpkg-buildpackage -b failed: $(tail -n3 "$LOGDIR/clean-build.log" | tr '\n' ' ')"
elif ! cmp -s "$CLEAN/$DEB" "$BUILDS/$DEB"; then
	why "the two .debs differ (Static-Built-Using: $(dpkg-deb -f "$CLEAN/$DEB" Static-Built-Using), from the cache: $(field Static-Built-Using))"
fi
end_test

finish
