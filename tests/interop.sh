#!/bin/bash
# interop.sh - nbdboot --probe / --list against real NBD servers on loopback:
# nbdkit, nbd-server and qemu-nbd.  Run from anywhere:
#
#	tests/interop.sh                        # ./nbdboot
#	NBDBOOT=build/nbdboot-asan tests/interop.sh
#	VERBOSE=1 tests/interop.sh              # show output of failing runs
#
# Needs nbdkit, nbd-server, qemu-nbd (qemu-utils), perl, ss.  No root, no
# kernel nbd: nothing is attached.

. "$(dirname "$0")/lib.sh"

for tool in nbdkit nbd-server qemu-nbd perl ss timeout; do
	command -v "$tool" >/dev/null || { echo "interop.sh: $tool is missing (make deps)" >&2; exit 2; }
done
[ -x "$NBDBOOT" ] || { echo "interop.sh: $NBDBOOT is not built (make)" >&2; exit 2; }

MIB10=10485760
MIB1=1048576

# ==== Probe checks ===========================================================

FLAG_NAMES=(HAS_FLAGS READ_ONLY SEND_FLUSH SEND_FUA ROTATIONAL SEND_TRIM
	SEND_WRITE_ZEROES SEND_DF CAN_MULTI_CONN SEND_RESIZE SEND_CACHE SEND_FAST_ZERO)

# expect_flags_consistent: the "flags:" names are exactly the bits of its hex
# value, and READ_ONLY agrees with the "read-only:" line.
expect_flags_consistent() {
	local line hex names want= i v ro
	line=$(grep -m1 '^flags: ' <<<"$OUT") || { why "no flags: line"; return 1; }
	read -r _ hex names <<<"$line"
	[[ $hex =~ ^0x[0-9a-fA-F]+$ ]] || { why "flags value '$hex' is not 0xHEX"; return 1; }
	v=$((16#${hex#0x}))
	for i in "${!FLAG_NAMES[@]}"; do
		((v >> i & 1)) && want+="${want:+ }${FLAG_NAMES[i]}"
	done
	# Names for bits nbdboot does not know are not checked.
	names=$(tr ' ' '\n' <<<"$names" | grep -Fx -f <(printf '%s\n' "${FLAG_NAMES[@]}") | tr '\n' ' ')
	[ "${names% }" = "$want" ] || why "flags $hex names '${names% }', bits say '$want'"
	ro=no
	((v & 2)) && ro=yes
	grep -Fxq "read-only: $ro" <<<"$OUT" || why "flags $hex but no 'read-only: $ro' line"
}

# expect_probe EXPORT SIZE READONLY HANDSHAKE: a successful probe with these
# values (EXPORT "-" = do not check the export line).
expect_probe() {
	expect_rc 0 || return 1
	[ "$1" = - ] || expect_line "export: $1"
	expect_line "size: $2"
	expect_line "read-only: $3"
	expect_line "handshake: $4"
	expect_line "tls: no"
	expect_out '^block-size: (minimum [0-9]+ preferred [0-9]+ maximum [0-9]+|not advertised)$'
	expect_flags_consistent
}

# expect_missing NAME: the probe failed because export NAME does not exist.
expect_missing() {
	expect_rc 1
	expect_err "^nbdboot: .*no export named '$1'"
	expect_no_out '^size:'
}

# ==== nbdkit =================================================================
# One multi-export nbdkit: "disk" (also the default) and "small" (lib.sh).

start_nbdkit_disk_small || exit 1
P=$PORT

begin "nbdkit: probe named export"
run_nbdboot --probe 127.0.0.1 "$P" -N small
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "nbdkit: probe default export"
run_nbdboot --probe 127.0.0.1 "$P"
expect_probe - $MIB10 yes "fixed-newstyle go"
expect_out '^export: (\(default\)|disk)$'
end_test

begin "nbdkit: probe missing export"
run_nbdboot --probe 127.0.0.1 "$P" -N nosuch
expect_missing nosuch
end_test

# --failover: the next server at once when one fails; a refusal ends the
# attach only when every server refused
if pick_port; then
	begin "nbdkit: --failover after a server that is down"
	run_nbdboot --probe 127.0.0.1 "$FREE_PORT" -N small --failover "127.0.0.1:$P" --wait 10
	expect_probe small $MIB1 yes "fixed-newstyle go"
	expect_err "^nbdboot: unable to connect to 127\.0\.0\.1:$FREE_PORT: Connection refused; trying 127\.0\.0\.1:$P\$"
	end_test

	begin "nbdkit: --failover without a port takes the first server's"
	run_nbdboot --probe 127.0.0.2 "$P" -N small --failover 127.0.0.1 --wait 10
	expect_probe small $MIB1 yes "fixed-newstyle go"
	end_test

	begin "nbdkit: --failover where every server refuses: the refusal, at once"
	run_nbdboot --probe 127.0.0.1 "$P" -N nosuch --failover "[::ffff:127.0.0.1]:$P" --wait 30
	expect_missing nosuch
	expect_err "trying \[::ffff:127\.0\.0\.1\]:$P"
	[ "${ELAPSED_MS:-0}" -lt 10000 ] || why "took ${ELAPSED_MS} ms: a refusal from every server is not retried"
	end_test
else
	fail "nbdkit: --failover" "no free port"
fi

begin "nbdkit: list with descriptions"
run_nbdboot -l 127.0.0.1 "$P"
expect_rc 0
expect_stdout_is $'disk\tTest disk' $'small\tSmall disk, 1 MiB'
end_test

begin "nbdkit: --list long option"
run_nbdboot --list 127.0.0.1 "$P"
expect_rc 0
expect_stdout_is $'disk\tTest disk' $'small\tSmall disk, 1 MiB'
end_test

begin "nbdkit: -g uses NBD_OPT_EXPORT_NAME"
run_nbdboot --probe 127.0.0.1 "$P" -N small -g
expect_probe small $MIB1 yes "fixed-newstyle export-name"
end_test

# EXPORT_NAME has no error reply: a refusal is a closed connection, which a
# busy server does too, so it is retried until --wait and then named.
begin "nbdkit: --no-optgo with a missing export is retried, then named"
run_nbdboot --probe 127.0.0.1 "$P" -N nosuch --no-optgo --wait 1
expect_rc 1
expect_err "^nbdboot: server refused export 'nosuch': it closed the connection after EXPORT_NAME, which gives no reason \(gave up after 1 s; see --wait\)$"
expect_no_out '^size:'
end_test

begin "nbdkit: URI nbd://HOST:PORT/NAME"
run_nbdboot --probe "nbd://127.0.0.1:$P/small"
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "nbdkit: URI with empty name is the default export"
run_nbdboot --probe "nbd://127.0.0.1:$P/"
expect_probe - $MIB10 yes "fixed-newstyle go"
end_test

begin "nbdkit: URI with %-escaped name"
run_nbdboot --probe "nbd://127.0.0.1:$P/sm%61ll"
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

# nbd-client's argument forms, as initramfs-tools and dracut pass them.
begin "nbd-client form: HOST -N NAME PORT -b 512 -swap -persist -systemd-mark"
run_nbdboot --probe 127.0.0.1 -N small "$P" -b 512 -swap -persist -systemd-mark
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "nbd-client form: -name NAME"
run_nbdboot --probe 127.0.0.1 "$P" -name small
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "nbd-client form: --name=NAME"
run_nbdboot --probe 127.0.0.1 "$P" --name=small
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "nbd-client form: options before HOST (-p -systemd-mark HOST PORT -N NAME)"
run_nbdboot --probe -p -systemd-mark 127.0.0.1 "$P" -N small
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

# Output: stdout is the result, stderr only diagnostics.
begin "output: -v --probe with stderr on /dev/full still succeeds"
timeout 10 "$NBDBOOT" -v --probe 127.0.0.1 "$P" -N small >"$TESTDIR/out" 2>/dev/full </dev/null
RC=$? OUT=$(<"$TESTDIR/out") ERR=
expect_probe small $MIB1 yes "fixed-newstyle go"
end_test

begin "output: --probe with stdout on /dev/full fails, saying so"
timeout 10 "$NBDBOOT" --probe 127.0.0.1 "$P" -N small >/dev/full 2>"$TESTDIR/err" </dev/null
RC=$? OUT= ERR=$(<"$TESTDIR/err")
expect_rc 1
expect_err '^nbdboot: unable to write the output: No space left on device$'
end_test

begin "output: --list with stdout on /dev/full fails"
timeout 10 "$NBDBOOT" --list 127.0.0.1 "$P" >/dev/full 2>"$TESTDIR/err" </dev/null
RC=$? OUT= ERR=$(<"$TESTDIR/err")
expect_rc 1
expect_err '^nbdboot: unable to write the output'
end_test

# --print-env: what a boot script evals must be exactly what the command line said.
QUOTES=$(printf "%0.s'" $(seq 1100))
printf 'quiet root=nbd:10.0.2.2:%s:ext4 ro\n' "$QUOTES" >"$TESTDIR/quotes.cmdline"
begin "print-env: an export name of 1100 single quotes (4400 bytes quoted) evals back exactly"
run_nbdboot --cmdline "$TESTDIR/quotes.cmdline" --print-env
expect_rc 0
NBD_EXPORT= NBD_CONNECTIONS=
eval "$OUT"
[ "$NBD_EXPORT" = "$QUOTES" ] || why "NBD_EXPORT is ${#NBD_EXPORT} bytes, expected 1100 quotes"
[ "$NBD_CONNECTIONS" = 1 ] || why "NBD_CONNECTIONS '$NBD_CONNECTIONS' (output cut?)"
end_test

begin "print-env: stdout on /dev/full fails"
timeout 10 "$NBDBOOT" --cmdline "$TESTDIR/quotes.cmdline" --print-env >/dev/full 2>"$TESTDIR/err" </dev/null
RC=$? OUT= ERR=$(<"$TESTDIR/err")
expect_rc 1
expect_err '^nbdboot: unable to write the output'
end_test

begin "help: -p/--persist reconnects (netlink), --failover, and what stays ignored"
run_nbdboot --help
expect_rc 0
expect_out '^  -p, --persist +netlink: a resident monitor reconnects when a$'
expect_out '^      --failover HOST\[:PORT\] '
expect_out '^  -s, --swap, -m, --systemd-mark, -P, --preinit$'
expect_no_out 'no reconnect'
end_test

# Usage errors must win even though the server would answer.
begin "usage: unknown option is exit 2"
run_nbdboot --probe 127.0.0.1 "$P" --no-such-option
expect_rc 2
expect_err "^nbdboot: unknown option '--no-such-option' \\(see --help\\)$"
expect_no_out '^size:'
end_test

begin "usage: non-numeric port 'abc' is exit 2"
run_nbdboot --probe 127.0.0.1 abc
expect_rc 2
expect_err "^nbdboot: unexpected argument 'abc' \\(port must be numeric, device /dev/nbdN\\)$"
end_test

begin "usage: block size 3 is exit 2"
run_nbdboot --probe 127.0.0.1 "$P" -b 3
expect_rc 2
expect_err '^nbdboot: block size 3 is invalid: use a power of two from 512 to 4096$'
expect_no_out '^size:'
end_test

# TLS was asked for without a CA file: a usage error before any connection,
# never a plaintext session (tests/tls.sh covers a plaintext server with a CA).
tls_refused() {  # tls_refused NAME ARGS...
	begin "$1"
	shift
	run_nbdboot --probe "$@"
	expect_rc 2
	expect_err '^nbdboot: TLS needs the CA certificates to check the server: --cacert FILE \(or /etc/nbdboot/ca\.pem\)$'
	expect_no_out '^size:'
	end_test
}
tls_refused "tls: nbds:// without --cacert is refused, not tried in plaintext" "nbds://127.0.0.1:$P/small"
tls_refused "tls: -x without --cacert is refused, not tried in plaintext" 127.0.0.1 "$P" -N small -x

# Export list without descriptions: names only, no tab.
start_nbdkit --filter=exportname memory 10M \
	exportname-list=explicit exportname=first exportname=second exportname=third || exit 1

begin "nbdkit: list without descriptions"
run_nbdboot -l 127.0.0.1 "$PORT"
expect_rc 0
expect_stdout_is first second third
end_test
stop_server

start_nbdkit --filter=exportname memory 10M \
	exportname-list=explicit exportname=a exportname=b exportdesc=fixed:'same text' || exit 1

begin "nbdkit: list with exportname filter descriptions"
run_nbdboot -l 127.0.0.1 "$PORT"
expect_rc 0
expect_stdout_is $'a\tsame text' $'b\tsame text'
end_test
stop_server

start_nbdkit -r memory 10M || exit 1
begin "nbdkit: read-only export (-r)"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 yes "fixed-newstyle go"
expect_out '^flags: 0x[0-9a-fA-F]+ .*READ_ONLY'
end_test
stop_server

start_nbdkit memory 10M || exit 1
begin "nbdkit: writable export is not read-only"
run_nbdboot --probe 127.0.0.1 "$PORT" -N anything
expect_probe anything $MIB10 no "fixed-newstyle go"
expect_no_out 'READ_ONLY'
end_test

begin "nbdkit: no block sizes advertised"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_rc 0
expect_line "block-size: not advertised"
end_test
stop_server

start_nbdkit null 5T || exit 1
begin "nbdkit: 64-bit size (5 TiB)"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - 5497558138880 no "fixed-newstyle go"
end_test
stop_server

start_nbdkit --filter=blocksize-policy memory 10M \
	blocksize-minimum=512 blocksize-preferred=4096 blocksize-maximum=65536 || exit 1
begin "nbdkit: block sizes from blocksize-policy"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 no "fixed-newstyle go"
expect_line "block-size: minimum 512 preferred 4096 maximum 65536"
end_test

begin "nbdkit: -g has no block size information"
run_nbdboot --probe 127.0.0.1 "$PORT" -g
expect_probe - $MIB10 no "fixed-newstyle export-name"
expect_line "block-size: not advertised"
end_test
stop_server

# Older handshakes.
start_nbdkit --mask-handshake=0 memory 10M || exit 1
begin "nbdkit: newstyle without FIXED_NEWSTYLE (--mask-handshake=0)"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 no "newstyle export-name"
end_test

begin "nbdkit: newstyle without FIXED_NEWSTYLE, named export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N foo
expect_probe foo $MIB10 no "newstyle export-name"
end_test
stop_server

start_nbdkit --mask-handshake=1 memory 10M || exit 1
begin "nbdkit: -g without NO_ZEROES reads the 124 zero bytes (--mask-handshake=1)"
run_nbdboot --probe 127.0.0.1 "$PORT" -g
expect_probe - $MIB10 no "fixed-newstyle export-name"
end_test

begin "nbdkit: GO without NO_ZEROES (--mask-handshake=1)"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 no "fixed-newstyle go"
end_test
stop_server

start_nbdkit --oldstyle memory 10M || exit 1
begin "nbdkit: oldstyle handshake"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 no "oldstyle"
end_test

begin "nbdkit: oldstyle server refuses an export name"
run_nbdboot --probe 127.0.0.1 "$PORT" -N name
expect_rc 1
expect_err "^nbdboot: server speaks the oldstyle protocol, which has no export names: cannot ask for 'name'$"
expect_no_out '^size:'
end_test
stop_server

# TLS required by the server.
echo "alice:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$TESTDIR/psk"
chmod 600 "$TESTDIR/psk"
start_nbdkit --tls=require --tls-psk="$TESTDIR/psk" memory 10M || exit 1
begin "nbdkit: server requires TLS"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_rc 1
expect_err '^nbdboot: .*requires TLS'
expect_no_out '^size:'
end_test
stop_server

# Unix socket.
start_nbdkit_unix memory 10M || exit 1
begin "nbdkit: Unix socket via nbd+unix:///?socket="
run_nbdboot --probe "nbd+unix:///?socket=$SOCK"
expect_probe - $MIB10 no "fixed-newstyle go"
end_test

begin "nbdkit: Unix socket via nbd+unix:///NAME?socket="
run_nbdboot --probe "nbd+unix:///foo?socket=$SOCK"
expect_probe foo $MIB10 no "fixed-newstyle go"
end_test

begin "nbdkit: Unix socket via -u"
run_nbdboot --probe -u "$SOCK" -N foo
expect_probe foo $MIB10 no "fixed-newstyle go"
end_test
stop_server

# IPv6 loopback.
if have_ipv6_loopback && LISTEN_ADDR=::1 start_nbdkit memory 10M 2>/dev/null; then
	begin "nbdkit: IPv6 URI nbd://[::1]:PORT/NAME"
	run_nbdboot --probe "nbd://[::1]:$PORT/foo"
	expect_probe foo $MIB10 no "fixed-newstyle go"
	end_test

	begin "nbdkit: IPv6 positional ::1 PORT"
	run_nbdboot --probe ::1 "$PORT" -N foo
	expect_probe foo $MIB10 no "fixed-newstyle go"
	end_test
	stop_server
else
	skip "nbdkit: IPv6 URI nbd://[::1]:PORT/NAME" "no IPv6 loopback"
	skip "nbdkit: IPv6 positional ::1 PORT" "no IPv6 loopback"
fi

# ==== Waiting and timeouts ===================================================

begin "wait: server that comes up 2 s later (--wait 10)"
pick_port
LATE=$FREE_PORT
T_LIMIT=15 start_nbdboot --probe 127.0.0.1 "$LATE" -N late --wait 10
sleep 2
WANT_PORT=$LATE start_nbdkit memory 10M || why "nbdkit did not start on port $LATE"
finish_nbdboot
expect_probe late $MIB10 no "fixed-newstyle go"
expect_time 1800 9000
end_test
stop_server

begin "wait: nothing listening, --wait 1 fails with Connection refused"
pick_port
T_LIMIT=8 run_nbdboot --probe 127.0.0.1 "$FREE_PORT" --wait 1
expect_rc 1
expect_err '^nbdboot: .*Connection refused'
expect_time 500 3500
end_test

start_silent_listener || exit 1
# A greeting not there within 2 s: the connection may be one a full listen
# queue forgot (SYN cookies), so nbdboot connects again, giving the next one
# twice as long, until --wait.
begin "wait: no greeting within 2 s: a new connection, until --wait 5"
T_LIMIT=12 run_nbdboot --probe 127.0.0.1 "$PORT" --wait 5
expect_rc 1
expect_err "^nbdboot: no greeting from 127.0.0.1:$PORT within 2000 ms; retrying until 5 s have passed \\(--wait\\)$"
expect_err "^nbdboot: no greeting from 127.0.0.1:$PORT within 2000 ms \\(gave up after 5 s; see --wait\\)$"
expect_time 4500 6500
end_test

stop_server
# A lost connection, then a refusal: each kind of failure is told once, so
# the server's reason is not hidden behind the greeting timeout that came
# first.  nbdkit admits one session and a holder has it; nbdkit is stopped
# for the first connection (its greeting never comes) and resumed after.
begin "wait: no greeting, then the server's refusal: both said once, until --wait 6"
if start_nbdkit --filter=limit memory 10M limit=1 && hold_slot "$PORT" ""; then
	kill -STOP "$SERVER_PID"
	T_LIMIT=12 start_nbdboot --probe 127.0.0.1 "$PORT" --wait 6
	sleep 2.5
	kill -CONT "$SERVER_PID"
	finish_nbdboot
	expect_rc 1
	expect_err "^nbdboot: no greeting from 127.0.0.1:$PORT within 2000 ms; retrying until 6 s have passed \\(--wait\\)$"
	expect_err "^nbdboot: server (refused|closed).*; retrying until 6 s have passed \\(--wait\\)$"
	expect_err "^nbdboot: server (refused|closed).*\\(gave up after 6 s; see --wait\\)$"
	[ "$(grep -c '' <<<"$ERR")" -eq 3 ] || why "stderr has $(grep -c '' <<<"$ERR") lines, expected 3"
else
	why "nbdkit with limit=1 and a held session did not start"
fi
end_test
stop_server

start_silent_listener || exit 1
begin "wait: server accepts and never speaks, --wait 2 times out"
T_LIMIT=10 run_nbdboot --probe 127.0.0.1 "$PORT" --wait 2
expect_rc 1
expect_err '^nbdboot: timed out waiting for the server \(greeting\)$'
expect_time 1500 5000
end_test
stop_server

start_nbdkit --filter=delay memory 10M delay-open=30 || exit 1
begin "wait: server stalls in the middle of the handshake, --wait 2 times out"
T_LIMIT=10 run_nbdboot --probe 127.0.0.1 "$PORT" --wait 2
expect_rc 1
expect_err '^nbdboot: timed out waiting for the server \(GO\)$'
expect_time 1500 5000
end_test
stop_server

# One deadline for all -C connections.  The server comes up 1 s into a
# 4 s --wait and admits one client at a time; nbdboot's first connection
# holds that slot, so the second is turned away (at its greeting) until
# the deadline: 4 s in all, not 4 s more for each further connection.
begin "wait: -C 3 connections share one --wait deadline (refusals retried until it)"
pick_port
LATE=$FREE_PORT
T_LIMIT=15 start_nbdboot 127.0.0.1 "$LATE" /dev/nbd7 -C 3 --wait 4
sleep 1
WANT_PORT=$LATE start_nbdkit --filter=limit memory 10M limit=1 || why "nbdkit did not start on port $LATE"
finish_nbdboot
expect_rc 1
expect_err '^nbdboot: unable to connect to 127.0.0.1:[0-9]+: Connection refused; retrying until 4 s have passed \(--wait\)$'
expect_err '^nbdboot: server closed the connection \(greeting\); retrying until 4 s have passed \(--wait\)$'
expect_err '^nbdboot: server closed the connection \(greeting\) \(gave up after 4 s; see --wait\)$'
expect_time 3800 4900
end_test
stop_server

# Name resolution is under --wait too: in a network namespace of its own,
# with a resolv.conf whose name server never answers (nothing listens on
# 127.0.0.1:53 there, and musl would wait 5 s x 3 attempts).
begin "wait: name resolution is under --wait (a name server that never answers)"
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
	why "needs root and unshare(1) for a private network namespace and resolv.conf"
else
	printf 'nameserver 127.0.0.1\noptions timeout:5 attempts:3\n' >"$TESTDIR/resolv.conf"
	_T0=$(_now_ms)
	timeout -k 2 12 unshare -mn sh -c 'ip link set lo up && mount --bind "$1" /etc/resolv.conf &&
		exec "$2" --probe nbd-server.test 10809 --wait 2' sh "$TESTDIR/resolv.conf" "$NBDBOOT" \
		>"$TESTDIR/out" 2>"$TESTDIR/err" </dev/null
	RC=$? OUT=$(<"$TESTDIR/out") ERR=$(<"$TESTDIR/err") ELAPSED_MS=$(($(_now_ms) - _T0))
	expect_rc 1
	# musl waits for the silent server; glibc (the ASan build) is told at once
	expect_err '^nbdboot: unable to resolve nbd-server.test: .* \(gave up after 2 s; see --wait\)$'
	expect_time 1500 4500
fi
end_test

# A name server with an A record only, which refuses the AAAA question
# (dnsmasq with no upstream server does): musl fails the whole lookup on
# that, so nbdboot asks for the A records alone.
begin "resolve: a name whose AAAA question the name server refuses still resolves (A alone)"
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v dnsmasq >/dev/null; then
	why "needs root, unshare(1) and dnsmasq for a private network namespace with a name server"
else
	printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$TESTDIR/resolv-a.conf"
	timeout -k 2 30 unshare -mn sh -c 'ip link set lo up && mount --bind "$1" /etc/resolv.conf || exit 9
		dnsmasq --keep-in-foreground --conf-file=/dev/null --port=53 --no-resolv --no-hosts \
			--host-record=nbd-server.test,127.0.0.1 --user=root --listen-address=127.0.0.1 \
			--bind-interfaces --pid-file="$3/dnsmasq-a.pid" >"$3/dnsmasq-a.log" 2>&1 &
		d=$!
		nbdkit -f --exit-with-parent -i 127.0.0.1 -p 10809 memory 1M >"$3/nbdkit-a.log" 2>&1 &
		i=0; while [ $i -lt 50 ] && ! [ -s "$3/dnsmasq-a.pid" ]; do sleep 0.1; i=$((i + 1)); done
		"$2" --probe nbd-server.test 10809 --wait 15; rc=$?; kill $d; exit $rc' \
		sh "$TESTDIR/resolv-a.conf" "$NBDBOOT" "$TESTDIR" >"$TESTDIR/out" 2>"$TESTDIR/err" </dev/null
	RC=$? OUT=$(<"$TESTDIR/out") ERR=$(<"$TESTDIR/err")
	expect_rc 0
	expect_out '^size: 1048576$'
fi
end_test

# -C N needs a server that allows several connections: qemu-nbd does not
# advertise NBD_FLAG_CAN_MULTI_CONN for a writable image shared by one client (-e 1).
IMG_M=$(make_image $MIB1)
start_qemu_nbd mc "$IMG_M" -e 1 || exit 1
begin "multi-conn: -C 2 without NBD_FLAG_CAN_MULTI_CONN is refused before attaching"
run_nbdboot --probe 127.0.0.1 "$PORT" -N mc
expect_no_out 'CAN_MULTI_CONN'
run_nbdboot 127.0.0.1 "$PORT" -N mc /dev/nbd7 -C 2
expect_rc 2
expect_err '^nbdboot: the server does not allow several connections to this export \(it does not advertise NBD_FLAG_CAN_MULTI_CONN\): use -C 1$'
[ "$(grep -c . <<<"$ERR")" = 1 ] || why "stderr has more than the refusal: $(_flat "$ERR")"
end_test
stop_server

# ==== nbd-server =============================================================

IMG_A=$(make_image $MIB10)
IMG_B=$(make_image $MIB10)
IMG_C=$(make_image $MIB1)
IMG_D=$(make_image 3145728)

start_nbd_server "
[alpha]
exportname = $IMG_A
[beta]
exportname = $IMG_B
readonly = true
[gamma]
exportname = $IMG_C" || exit 1

begin "nbd-server: probe named export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N alpha
expect_probe alpha $MIB10 no "fixed-newstyle go"
end_test

begin "nbd-server: probe another named export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N gamma
expect_probe gamma $MIB1 no "fixed-newstyle go"
end_test

begin "nbd-server: read-only export (readonly = true)"
run_nbdboot --probe 127.0.0.1 "$PORT" -N beta
expect_probe beta $MIB10 yes "fixed-newstyle go"
expect_out '^flags: 0x[0-9a-fA-F]+ .*READ_ONLY'
end_test

begin "nbd-server: probe missing export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N nosuch
expect_missing nosuch
end_test

# UNKNOWN for the default export could be a busy server too: retried, and
# the message says only what the server said.
begin "nbd-server: no default export configured: refused, retried until --wait"
run_nbdboot --probe 127.0.0.1 "$PORT" --wait 1
expect_rc 1
expect_err '^nbdboot: server refused the default export as unknown or unavailable.*; retrying until 1 s have passed \(--wait\)$'
expect_err '^nbdboot: server refused the default export as unknown or unavailable.* \(gave up after 1 s; see --wait\)$'
[ "$(grep -c . <<<"$ERR")" = 2 ] || why "stderr has $(grep -c . <<<"$ERR") lines, expected the reason once and the final error"
expect_no_out '^size:'
end_test

begin "nbd-server: list"
run_nbdboot -l 127.0.0.1 "$PORT"
expect_rc 0
expect_stdout_is alpha beta gamma
end_test

begin "nbd-server: -g uses NBD_OPT_EXPORT_NAME"
run_nbdboot --probe 127.0.0.1 "$PORT" -N gamma -g
expect_probe gamma $MIB1 no "fixed-newstyle export-name"
end_test

begin "nbd-server: nbd-client form HOST -N NAME PORT -b 512 -swap -persist -systemd-mark"
run_nbdboot --probe 127.0.0.1 -N gamma "$PORT" -b 512 -swap -persist -systemd-mark
expect_probe gamma $MIB1 no "fixed-newstyle go"
end_test
stop_server

# nbd-server has a default (empty-name) export only for an export given on
# its command line.
start_nbd_server "
[alpha]
exportname = $IMG_A" "$IMG_D" || exit 1
begin "nbd-server: probe default export"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - 3145728 no "fixed-newstyle go"
end_test
stop_server

if have_ipv6_loopback && LISTEN_ADDR=::1 start_nbd_server "
[alpha]
exportname = $IMG_A" 2>/dev/null; then
	begin "nbd-server: IPv6 URI nbd://[::1]:PORT/NAME"
	run_nbdboot --probe "nbd://[::1]:$PORT/alpha"
	expect_probe alpha $MIB10 no "fixed-newstyle go"
	end_test
	stop_server
else
	skip "nbd-server: IPv6 URI nbd://[::1]:PORT/NAME" "no IPv6 loopback"
fi

# ==== qemu-nbd ===============================================================

IMG_Q=$(make_image $MIB10)

start_qemu_nbd qdisk "$IMG_Q" -D "Qemu test disk" || exit 1
begin "qemu-nbd: probe named export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N qdisk
expect_probe qdisk $MIB10 no "fixed-newstyle go"
end_test

begin "qemu-nbd: probe missing export"
run_nbdboot --probe 127.0.0.1 "$PORT" -N nosuch
expect_missing nosuch
end_test

begin "qemu-nbd: list with description (-D)"
run_nbdboot -l 127.0.0.1 "$PORT"
expect_rc 0
expect_stdout_is $'qdisk\tQemu test disk'
end_test

begin "qemu-nbd: block sizes match qemu-nbd -L"
REF=$(qemu-nbd -L -b 127.0.0.1 -p "$PORT" 2>&1)
BMIN=$(sed -n 's/^ *min block: //p' <<<"$REF")
BPREF=$(sed -n 's/^ *opt block: //p' <<<"$REF")
BMAX=$(sed -n 's/^ *max block: //p' <<<"$REF")
run_nbdboot --probe 127.0.0.1 "$PORT" -N qdisk
if [ -n "$BMIN" ]; then
	expect_line "block-size: minimum $BMIN preferred $BPREF maximum $BMAX"
else
	why "qemu-nbd -L shows no block sizes: $REF"
fi
end_test

begin "qemu-nbd: -g uses NBD_OPT_EXPORT_NAME"
run_nbdboot --probe 127.0.0.1 "$PORT" -N qdisk -g
expect_probe qdisk $MIB10 no "fixed-newstyle export-name"
end_test
stop_server

start_qemu_nbd "" "$IMG_Q" || exit 1
begin "qemu-nbd: probe default export (-x '')"
run_nbdboot --probe 127.0.0.1 "$PORT"
expect_probe - $MIB10 no "fixed-newstyle go"
end_test

begin "qemu-nbd: list without description: one line, the empty (default) name"
run_nbdboot -l 127.0.0.1 "$PORT"
expect_rc 0
[ "$(od -An -tx1 "$TESTDIR/out" | tr -d ' \n')" = 0a ] ||
	why "stdout is '$(od -An -c "$TESTDIR/out" | tr -s ' ')', expected exactly one empty line"
end_test
stop_server

start_qemu_nbd_ro qro "$IMG_Q" || exit 1
begin "qemu-nbd: read-only export (-r)"
run_nbdboot --probe 127.0.0.1 "$PORT" -N qro
expect_probe qro $MIB10 yes "fixed-newstyle go"
expect_out '^flags: 0x[0-9a-fA-F]+ .*READ_ONLY'
end_test
stop_server

start_qemu_nbd_unix qdisk "$IMG_Q" || exit 1
begin "qemu-nbd: Unix socket via nbd+unix:///NAME?socket="
run_nbdboot --probe "nbd+unix:///qdisk?socket=$SOCK"
expect_probe qdisk $MIB10 no "fixed-newstyle go"
end_test

begin "qemu-nbd: Unix socket via -u"
run_nbdboot --probe -u "$SOCK" -N qdisk
expect_probe qdisk $MIB10 no "fixed-newstyle go"
end_test
stop_server

if have_ipv6_loopback && LISTEN_ADDR=::1 start_qemu_nbd qdisk "$IMG_Q" 2>/dev/null; then
	begin "qemu-nbd: IPv6 URI nbd://[::1]:PORT/NAME"
	run_nbdboot --probe "nbd://[::1]:$PORT/qdisk"
	expect_probe qdisk $MIB10 no "fixed-newstyle go"
	end_test
	stop_server
else
	skip "qemu-nbd: IPv6 URI nbd://[::1]:PORT/NAME" "no IPv6 loopback"
fi

summary
