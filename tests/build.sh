#!/bin/bash
# build.sh - nbdboot.c compiles as it is, in both configurations, with every
# warning the Makefile asks for made an error (an unused function is dead
# code), and the unit tests pass without TLS too.
#
#	tests/build.sh          (from make check; needs gcc and the BearSSL build)
. "$(dirname "$0")/lib.sh"
cd "$ROOT" || exit 2
BEARSSL_INC=build/bearssl/src/inc
WARN="-std=c11 -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Werror"

compiles() {  # compiles NAME CC-ARGS...: one scenario
	begin "build: $1"
	shift
	if ! OUT=$("$@" 2>&1); then
		why "$(_flat "$OUT")"
	fi
	end_test
}

compiles "cc -c nbdboot.c with no -D flags (TLS by default)" \
	gcc -c -I"$BEARSSL_INC" -o "$TESTDIR/a.o" nbdboot.c
compiles "nbdboot.c has no warnings with TLS" \
	gcc $WARN -c -I"$BEARSSL_INC" -o "$TESTDIR/b.o" nbdboot.c
compiles "nbdboot.c has no warnings without TLS (no BearSSL headers needed)" \
	gcc $WARN -DNBDBOOT_TLS=0 -c -o "$TESTDIR/c.o" nbdboot.c
compiles "the unit tests build without TLS" \
	gcc $WARN -Wno-missing-field-initializers -DNBDBOOT_TLS=0 -I. -o "$TESTDIR/unit-notls" tests/unit.c

begin "build: the unit tests pass without TLS"
if [ -x "$TESTDIR/unit-notls" ]; then
	OUT=$(RESULTS=/dev/null "$TESTDIR/unit-notls" 2>&1)
	RC=$?
	expect_rc 0
	grep -q '^unit: [0-9]* passed, 0 failed$' <<<"$OUT" || why "$(grep -m3 FAIL <<<"$OUT")"
else
	why "the no-TLS unit test binary did not build"
fi
end_test

summary
