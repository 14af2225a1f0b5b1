#!/bin/bash
# Runs every test suite of `make check` and ends with "N passed, N failed".
# Each suite appends "pass NAME" / "fail NAME" lines to $RESULTS; a suite that
# exits non-zero without recording a failure counts as one failure itself.
set -u
cd "$(dirname "$0")/.." || exit 2
mkdir -p build
export RESULTS="$PWD/build/results.txt"
: >"$RESULTS"

T0=$(date +%s)
TIMES=""

suite() {
	local name=$1 before rc t0
	shift
	before=$(grep -c '^fail' "$RESULTS")
	echo "== $name"
	t0=$(date +%s)
	"$@"
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$(grep -c '^fail' "$RESULTS")" -eq "$before" ]; then
		echo "FAIL $name: exited $rc without reporting a failure"
		echo "fail suite: $name" >>"$RESULTS"
	fi
	TIMES+=$(printf '%6d s  %s' "$(($(date +%s) - t0))" "$name")$'\n'
}

suite "build (both configurations, warnings as errors)" tests/build.sh
suite "unit (musl)" build/unit
suite "unit (ASan+UBSan)" build/unit-asan
suite "interop (static binary)" tests/interop.sh
suite "interop (ASan+UBSan binary)" env NBDBOOT=build/nbdboot-asan tests/interop.sh
suite "tls (static binary)" tests/tls.sh
suite "tls (ASan+UBSan binary)" env NBDBOOT=build/nbdboot-asan tests/tls.sh
suite "storm (static binary)" tests/storm.sh
suite "Debian package (dpkg-buildpackage, lintian, dpkg in the test root)" tests/package.sh
suite "fuzz (libFuzzer, 20 s each)" tests/fuzz/run.sh 20
if [ -x tests/vm/scenarios.sh ] && [ "${NBDBOOT_SKIP_VM:-0}" != 1 ]; then
	# One suite at a time: a guest starved of CPU (RCU stalls were seen with
	# image builds and four guests on two cores) is slow past any deadline.
	suite "real kernel under qemu" tests/vm/scenarios.sh
	[ -x tests/vm/init.sh ] &&
		suite "nbdboot as /init: make initramfs, systemd root under qemu" tests/vm/init.sh
	[ -x tests/vm/hooks-itools.sh ] &&
		suite "initramfs-tools hook: real mkinitramfs, systemd root under qemu" tests/vm/hooks-itools.sh
	[ -x tests/vm/hooks-dracut.sh ] &&
		suite "dracut module: real dracut, systemd root under qemu" tests/vm/hooks-dracut.sh
fi

echo "== time per suite"
printf '%s' "$TIMES"
printf '%6d s  in all\n' "$(($(date +%s) - T0))"
passed=$(grep -c '^pass' "$RESULTS")
failed=$(grep -c '^fail' "$RESULTS")
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
