#!/bin/bash
# run.sh SECONDS - run every libFuzzer target in build/fuzz/ for SECONDS each,
# two at a time (NBDBOOT_FUZZ_JOBS) (make fuzz-build makes them; this script
# builds nothing).  Each target
# starts from a copy of its seed corpus tests/fuzz/corpus/TARGET in
# build/fuzz/work/TARGET (the repo's corpus is never written) and records
# "pass fuzz: TARGET (N execs)" or "fail fuzz: TARGET ..." in $RESULTS.  A
# crash, a violated property or a timeout is kept in build/fuzz/artifacts/;
# replay it with build/fuzz/TARGET FILE.  A target that is missing or does
# not run is a failure.
#
# Seeds: tests/fuzz/make-seeds.sh regenerates the handshake corpus from
# real servers (nbdkit, nbd-server, qemu-nbd) and the others from the
# tables of tests/unit.c and the certificates of tests/pki.sh.
. "$(dirname "$0")/../lib.sh"

SECS=${1:-60}
case $SECS in '' | *[!0-9]*) echo "usage: $0 SECONDS" >&2; exit 2 ;; esac
OUTDIR=$ROOT/build/fuzz
TARGETS=(cmdline uri argv handshake san dhcp ip)
export NBDBOOT_FUZZ_CA=$ROOT/tests/fuzz/ca.pem # for the handshake target's TLS mode

# Inputs larger than these are not useful: the parsers refuse them early.
max_len() {
	case $1 in
	handshake) echo 65536 ;; # must fit in the socketpair the harness fills
	cmdline) echo 10000 ;;   # the parser takes 8191 bytes, plus the DHCP values
	dhcp) echo 1600 ;;       # one Ethernet frame's IPv4 packet, and a little more
	*) echo 4096 ;;
	esac
}

# stat NAME LOG: one of libFuzzer's final stats (-print_final_stats=1).
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

run_target() {
	local t=$1 bin=$OUTDIR/$1 work=$OUTDIR/work/$1 log rc execs cov artifact why
	local arts=$OUTDIR/artifacts
	if [ ! -x "$bin" ]; then
		fail "fuzz: $t" "$bin is not built (make fuzz-build)"
		return
	fi
	rm -rf "$work"
	mkdir -p "$work/corpus" "$arts"
	cp "$ROOT/tests/fuzz/corpus/$t/"* "$work/corpus/" 2>/dev/null ||
		echo "fuzz: $t: no seed corpus in tests/fuzz/corpus/$t, starting empty"
	log=$work/log
	local opts=(-max_total_time="$SECS" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
		-max_len="$(max_len "$t")" -artifact_prefix="$arts/$t-")
	[ -f "$ROOT/tests/fuzz/$t.dict" ] && opts+=(-dict="$ROOT/tests/fuzz/$t.dict")
	local t0=$SECONDS
	"$bin" "${opts[@]}" "$work/corpus" >"$log" 2>&1
	rc=$?
	execs=$(final_stat number_of_executed_units "$log")
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n 1)
	echo "fuzz: $t: ${execs:-no} execs in $((SECONDS - t0)) s, ${cov:-no coverage line}"
	if [ "$rc" -eq 0 ] && [ -n "$execs" ] && [ "$execs" -gt 0 ]; then
		pass "fuzz: $t ($execs execs)"
		return
	fi
	artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
	# the first line that says what went wrong, without the input's raw bytes
	why=$(grep -a -m 1 -E '^fuzz: property violated|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error:|^SUMMARY' "$log" |
		LC_ALL=C tr -c '[:print:]\n' '?')
	fail "fuzz: $t" "exit $rc after ${execs:-0} execs: ${why:-see the log}${artifact:+; input kept in $artifact (replay: $bin $artifact)}; log $log"
	[ -z "$VERBOSE" ] || sed 's/^/     | /' "$log" | tail -n 40
}

# Two targets at a time (each is one process on one core; the machine has
# two), each target's report printed and counted in order once all are done.
JOBS=${NBDBOOT_FUZZ_JOBS:-2}
running=0
for t in "${TARGETS[@]}"; do
	[ "$running" -lt "$JOBS" ] || { wait -n; running=$((running - 1)); }
	mkdir -p "$OUTDIR/work"
	run_target "$t" >"$OUTDIR/work/$t.report" 2>&1 &
	running=$((running + 1))
done
wait
for t in "${TARGETS[@]}"; do
	cat "$OUTDIR/work/$t.report"
	grep -q '^ok   ' "$OUTDIR/work/$t.report" && N_PASS=$((N_PASS + 1)) || N_FAIL=$((N_FAIL + 1))
done
summary
