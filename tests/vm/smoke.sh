#!/bin/bash
# smoke.sh - prove the VM harness works (no nbdboot involved).
#
# Usage: tests/vm/smoke.sh      (exit 0 if every check passes; KEEP=1 keeps the work dir)
# Starts "nbdkit memory 1M" on a free 127.0.0.1 port, builds an initramfs whose test
# script checks that nbd.ko gave /dev/nbd0, that /proc/crypto has gcm(aes) and the
# kTLS ciphers, and reads the NBDMAGIC greeting from 10.0.2.2:PORT with busybox nc.
# Prints PASS/FAIL lines and the boot time.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
need nbdkit nbdkit

work=$(mktemp -d "${TMPDIR:-/tmp}/nbdboot-smoke.XXXXXX")
cleanup() {
	[ ! -s "$work/nbdkit.pid" ] || kill "$(cat "$work/nbdkit.pid")" 2>/dev/null || true
	if [ "${KEEP:-0}" = 1 ]; then echo "smoke: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

port=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
	p=$((20000 + RANDOM % 40000))
	if nbdkit -P "$work/nbdkit.pid" -i 127.0.0.1 -p "$p" memory 1M 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || die "could not start nbdkit on a free port"
for _ in $(seq 50); do [ -s "$work/nbdkit.pid" ] && break; sleep 0.1; done

cat >"$work/test.sh" <<TEST
#!/bin/sh
# guest side of tests/vm/smoke.sh
pass() { echo "SMOKE-PASS \$1"; }
fail() { echo "SMOKE-FAIL \$1"; }
ls /sys/block | grep nbd | head -n 4
if [ -b /dev/nbd0 ]; then pass nbd-device; else fail nbd-device; fi
grep -A2 -E '^name *: (gcm\(aes\)|chacha20|poly1305)\$' /proc/crypto
if grep -q '^name *: gcm(aes)\$' /proc/crypto; then pass gcm-aes; else fail gcm-aes; fi
if grep -q '^name *: chacha20\$' /proc/crypto && grep -q '^name *: poly1305\$' /proc/crypto; then
	pass chacha-poly; else fail chacha-poly; fi
if grep -q '^tls ' /proc/modules; then pass tls-module; else fail tls-module; fi
if grep -q '^ext4 ' /proc/modules; then pass ext4-module; else fail ext4-module; fi
timeout 10 nc 10.0.2.2 $port </dev/null | head -c 8 >/tmp/greeting
od -c /tmp/greeting
if [ "\$(cat /tmp/greeting)" = NBDMAGIC ]; then pass nbd-greeting; else fail nbd-greeting; fi
TEST

"$here/mkinitramfs.sh" "$work/initrd.cpio.gz" --init "$work/test.sh"
start=$(date +%s%N)
rc=0
"$here/boot.sh" --initrd "$work/initrd.cpio.gz" --timeout 120 --log "$work/console.log" >/dev/null || rc=$?
end=$(date +%s%N)

fails=0
result() {  # result NAME COMMAND...: PASS if COMMAND succeeds
	local name=$1; shift
	if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
result qemu-exit test "$rc" = 0
for c in nbd-device gcm-aes chacha-poly tls-module ext4-module nbd-greeting; do
	result "$c" grep -aq "SMOKE-PASS $c" "$work/console.log"
done
result test-script-ran grep -aq 'INIT-TEST-EXIT=0' "$work/console.log"
ready=$(sed -n 's/^INIT-TEST-START uptime=\([0-9.]*\).*/\1/p' "$work/console.log" | tr -d '\r')
echo "boot time: guest uptime ${ready:-?} s at test start; qemu run $(((end - start) / 1000000)) ms wall"
if [ $fails -ne 0 ]; then
	echo "smoke: $fails check(s) failed; console log follows" >&2
	grep -a -E 'INIT|SMOKE|nc:|insmod' "$work/console.log" >&2 || true
	exit 1
fi
echo "smoke: all checks passed"
