#!/bin/bash
# storm.sh - boot storms: many nbdboot --probe clients at once against real
# servers that turn clients away, each within --wait.  Run from anywhere:
#
#	tests/storm.sh
#	VERBOSE=1 tests/storm.sh            # show output of failing runs
#
# How the servers refuse (nbdkit 1.32, nbd-server 3.24, checked by hand):
# - nbdkit --filter=limit limit=L counts sessions from NBD_OPT_GO (open) to
#   their end (close).  A client arriving while L are open is closed before
#   the greeting (no byte is sent).  Clients that pass that check together
#   race at GO, and the losers get NBD_REP_ERR_UNKNOWN with no text.  A
#   refused client does not count.  --filter=delay delay-close=T keeps each
#   finished session's slot for T after the client has gone (in either filter
#   order; delay-open is not inside the slot: the limit counts only after it).
# - nbd-server maxconnections=L counts sessions admitted at NBD_OPT_GO over the
#   daemon's life and never decrements (nor on SIGHUP): after L sessions,
#   every GO gets NBD_REP_ERR_POLICY "Access denied by server configuration"
#   (the same text as an authfile refusal) after a normal greeting, until the
#   daemon is restarted.  So nbd-server cannot admit "2 at a time"; its room
#   comes back with a restart, which is what its scenario does.
# Speed is not tested here (bench/storm measures it); only that every client
# negotiates within its --wait, that refusals really happened, and that each
# client says the server's reason once.
#
# Needs nbdkit, nbd-server, perl.  No root, no kernel nbd.

. "$(dirname "$0")/lib.sh"

for tool in nbdkit nbd-server perl timeout; do
	command -v "$tool" >/dev/null || { echo "storm.sh: $tool is missing (make deps)" >&2; exit 2; }
done
[ -x "$NBDBOOT" ] || { echo "storm.sh: $NBDBOOT is not built (make)" >&2; exit 2; }

N=40			# clients per storm
STORM_LIMIT=120		# seconds before a storm's clients are killed (they --wait 60 or 90)
MIB10=10485760
# A line saying the server turned the client away (the reason, or the final error).
REFUSAL='^nbdboot: server (refused|closed|is shutting down)'

# ==== Helpers ================================================================

# start_storm ARGS...: N copies of nbdboot ARGS released at once
# (tests/storm-clients.pl), in the background; finish_storm waits for them.
start_storm() {
	STORM=$(mktemp -d "$TESTDIR/storm.XXXXXX")
	"$ROOT/tests/storm-clients.pl" "$STORM" "$STORM_LIMIT" "$N" "$NBDBOOT" "$@" &
	STORM_PID=$!
	_PGRPS+=("$STORM_PID")
}

# finish_storm: wait for the storm; RC is the launcher's (124: clients killed).
finish_storm() {
	wait "$STORM_PID"
	RC=$?
	local p keep=()
	for p in "${_PGRPS[@]}"; do [ "$p" = "$STORM_PID" ] || keep+=("$p"); done
	_PGRPS=("${keep[@]}")
}

# refused_clients: how many clients' stderr says the server turned them away.
refused_clients() {
	local i n=0
	for i in $(seq "$N"); do
		grep -Eiq -- "$REFUSAL" "$STORM/$i.err" 2>/dev/null && n=$((n + 1))
	done
	echo "$n"
}

# wait_refused COUNT SECONDS: until COUNT clients have said they were refused.
wait_refused() {
	local i
	for i in $(seq $(($2 * 10))); do
		[ "$(refused_clients)" -ge "$1" ] && return 0
		[ -e "$STORM/times" ] && break	# the storm is over
		sleep 0.1
	done
	[ "$(refused_clients)" -ge "$1" ]
}

# expect_storm_negotiated SIZE: every client exited 0 and printed "size: SIZE".
expect_storm_negotiated() {
	[ "$RC" = 0 ] || why "storm clients still running after ${STORM_LIMIT}s were killed"
	[ -s "$STORM/times" ] || { why "no storm results"; return 1; }
	local bad first= i rc
	bad=$(awk '$3 != 0' "$STORM/times" | wc -l)
	[ "$bad" -eq 0 ] || {
		first=$(awk '$3 != 0 { print $1; exit }' "$STORM/times")
		why "$bad of $N clients failed (client $first: exit $(awk -v i="$first" '$1 == i { print $3 }' \
			"$STORM/times"), stderr $(_flat "$(cat "$STORM/$first.err")"))"
	}
	[ "$(wc -l <"$STORM/times")" -eq "$N" ] || why "only $(wc -l <"$STORM/times") of $N clients reported"
	for i in $(seq "$N"); do
		rc=$(awk -v i="$i" '$1 == i { print $3 }' "$STORM/times")
		[ "$rc" = 0 ] || continue
		grep -Fxq "size: $1" "$STORM/$i.out" || { why "client $i exited 0 without 'size: $1' (stdout $(_flat "$(cat "$STORM/$i.out")"))"; break; }
	done
}

# expect_reason_once: however often a client was turned away, it said each
# reason once: at most one line each for failing to reach the server (while
# it restarts), for a greeting that never came (a connection the server's
# kernel forgot), and for the server's answer; no line twice.
expect_reason_once() {
	local i n
	for i in $(seq "$N"); do
		n=$(wc -l <"$STORM/$i.err")
		if [ "$n" -gt 3 ] || [ -n "$(sort "$STORM/$i.err" | uniq -d)" ]; then
			why "client $i wrote $n stderr lines: $(_flat "$(cat "$STORM/$i.err")")"
			return 1
		fi
		[ "$(grep -Ec -- "$REFUSAL" "$STORM/$i.err")" -le 1 ] ||
			{ why "client $i said the server's refusal more than once: $(_flat "$(cat "$STORM/$i.err")")"; return 1; }
	done
}

# expect_gave_up_once: the last run ended with one refusal message naming the
# deadline, after at most one earlier line (the reason, said once).
expect_gave_up_once() {
	expect_rc 1
	expect_no_out '^size:'
	grep -Eiq -- "$REFUSAL.*gave up after 2 s" <<<"$(tail -n1 <<<"$ERR")" ||
		why "last stderr line does not name the refusal and 'gave up after 2 s' (stderr $(_flat "$ERR"))"
	[ "$(grep -c '' <<<"$ERR")" -le 2 ] || why "stderr has $(grep -c '' <<<"$ERR") lines, expected at most 2 (stderr $(_flat "$ERR"))"
	expect_time 1500 6000
}

# tcp_counter NAME: a TcpExt counter from /proc/net/netstat (system-wide).
tcp_counter() {
	awk -v k="$1" '/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) if ($i == k) f = i; h = 1 }
		else if (f) print $f }' /proc/net/netstat
}

# ==== nbdkit: limit=2, each slot kept 0.2 s after its client has gone ========

begin "storm: $N clients against nbdkit admitting 2 at a time all negotiate"
if start_nbdkit --filter=limit --filter=delay memory 10M limit=2 delay-close=200ms; then
	start_storm --probe 127.0.0.1 "$PORT" --wait 60
	finish_storm
	expect_storm_negotiated $MIB10
	# Released together, 40 clients meet 2 slots each held for 0.2 s: at most
	# a handful can be admitted at their first try, so most must be refused.
	refused=$(refused_clients)
	[ "$refused" -ge $((N / 2)) ] || why "only $refused of $N clients said they were refused (expected most)"
	expect_reason_once
	stop_server
else
	why "nbdkit with the limit and delay filters did not start"
fi
end_test

begin "storm: nbdkit full (limit=2, both slots held): --wait 2 gives up naming the refusal, said once"
if start_nbdkit --filter=limit memory 10M limit=2 && hold_slot "$PORT" "" && hold_slot "$PORT" ""; then
	T_LIMIT=10 run_nbdboot --probe 127.0.0.1 "$PORT" --wait 2
	expect_gave_up_once
else
	why "nbdkit with the limit filter and two held sessions did not start"
fi
stop_server
end_test

# ==== nbd-server: maxconnections=2, both admissions taken ====================

IMG=$(make_image $MIB10)
EXPORT="[disk]
exportname = $IMG"

begin "storm: $N clients turned away by nbd-server's maxconnections (POLICY) all negotiate once it has room"
if start_nbd_server "$EXPORT
maxconnections = 2" && hold_slot "$PORT" disk && hold_slot "$PORT" disk; then
	start_storm --probe 127.0.0.1 "$PORT" -N disk --wait 90
	# Every client's first GO is refused: wait until each has said so, then
	# restart the server with room (its count only resets with the daemon).
	# The burst overflows nbd-server's backlog of 10 (see below), so a client
	# may first wait out a greeting or two (2 s, 4 s, ...) before its GO.
	wait_refused "$N" 45 || why "after 45 s only $(refused_clients) of $N clients said they were refused"
	stop_server
	WANT_PORT=$PORT start_nbd_server "$EXPORT
maxconnections = 100" || why "nbd-server did not restart on port $PORT"
	finish_storm
	expect_storm_negotiated $MIB10
	refused=$(refused_clients)
	[ "$refused" -eq "$N" ] || why "$refused of $N clients said they were refused, expected all"
	expect_reason_once
else
	why "nbd-server with maxconnections = 2 and two held sessions did not start"
fi
stop_server
end_test

# nbd-server listens with a backlog of 10.  While it accepts nothing, a burst
# of connections overflows it: the kernel answers the excess with SYN cookies
# and, the accept queue being full, drops their final ACK, forgetting them;
# those clients are connected and wait for a greeting that never comes.  At a
# real boot the same happens when a storm's burst outruns the daemon's forks
# (seen without the pause, in bench/storm -s nbd-server).
begin "storm: $N clients while nbd-server accepts nothing for 1 s (backlog 10 overflows, connections forgotten) all negotiate"
if start_nbd_server "$EXPORT"; then
	cookies=$(tcp_counter SyncookiesSent)
	kill -STOP "$SERVER_PID"
	start_storm --probe 127.0.0.1 "$PORT" -N disk --wait 20
	sleep 1
	kill -CONT "$SERVER_PID"
	finish_storm
	cookies=$(($(tcp_counter SyncookiesSent) - cookies))
	[ "$cookies" -gt 0 ] || why "the kernel sent no SYN cookies (net.ipv4.tcp_syncookies = $(cat /proc/sys/net/ipv4/tcp_syncookies)): no connection was forgotten, the scenario proves nothing"
	expect_storm_negotiated $MIB10
	expect_reason_once
else
	why "nbd-server did not start"
fi
stop_server
end_test

begin "storm: nbd-server full (POLICY): --wait 2 gives up naming the refusal, said once"
if start_nbd_server "$EXPORT
maxconnections = 2" && hold_slot "$PORT" disk && hold_slot "$PORT" disk; then
	T_LIMIT=10 run_nbdboot --probe 127.0.0.1 "$PORT" -N disk --wait 2
	expect_gave_up_once
	expect_err 'Access denied by server configuration'
else
	why "nbd-server with maxconnections = 2 and two held sessions did not start"
fi
stop_server
end_test

summary
