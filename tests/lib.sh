# lib.sh - helpers sourced by the interop test scripts (bash; not run directly).
#
# A test is one scenario with one name:
#
#	begin "nbdkit: probe named export"
#	run_nbdboot --probe 127.0.0.1 "$PORT" -N disk
#	expect_rc 0
#	expect_line 'size: 10485760'
#	end_test
#
# The expect_* helpers collect reasons; end_test records one pass or fail.
# Servers started with start_* are killed (and temp files removed) on exit,
# failure or Ctrl-C.  Environment:
#	NBDBOOT   binary under test (default ./nbdboot in the repo root)
#	RESULTS   file that gets "pass NAME" / "fail NAME" / "skip NAME" lines
#	          (default build/results.txt in the repo root)
#	VERBOSE=1 print stdout/stderr of failing runs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${NBDBOOT:=$ROOT/nbdboot} in /*) ;; *) NBDBOOT=$PWD/$NBDBOOT ;; esac
case ${RESULTS:=$ROOT/build/results.txt} in /*) ;; *) RESULTS=$PWD/$RESULTS ;; esac
mkdir -p "$(dirname "$RESULTS")"

TESTDIR=$(mktemp -d /tmp/nbdboot-test.XXXXXX) || exit 2
N_PASS=0 N_FAIL=0 N_SKIP=0
_PIDS=()		# processes to kill on exit
_PGRPS=()		# process groups to kill on exit (timeout(1) makes its own)

# ==== Cleanup ================================================================

_cleanup() {
	local p
	trap - EXIT INT TERM HUP
	for p in "${_PGRPS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
	for p in "${_PIDS[@]}"; do
		pkill -TERM -P "$p" 2>/dev/null	# nbd-server's per-client children
		kill -TERM "$p" 2>/dev/null
	done
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		_alive || break
		sleep 0.1
	done
	for p in "${_PGRPS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
	for p in "${_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	# network namespaces a test made (tests/vm/syslib.sh's sys_dhcp_net)
	ip netns list 2>/dev/null | awk -v p="nbdboot-$$-" 'index($1, p) == 1 { print $1 }' |
		while read -r p; do ip netns del "$p"; done
	rm -rf "$TESTDIR"
}

_alive() {
	local p
	for p in "${_PIDS[@]}" "${_PGRPS[@]}"; do
		kill -0 "$p" 2>/dev/null && return 0
	done
	return 1
}

trap _cleanup EXIT
trap '_cleanup; exit 130' INT
trap '_cleanup; exit 143' TERM HUP

# track PID: kill PID when the script ends.
track() { _PIDS+=("$1"); }

# stop_server [PID]: kill one server now (default: the last one started).
stop_server() {
	local pid=${1:-$SERVER_PID}
	[ -n "$pid" ] || return 0
	pkill -TERM -P "$pid" 2>/dev/null
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# ==== Results ================================================================

_record() { echo "$1 $2" >>"$RESULTS"; }

pass() {
	echo "ok   $1"
	_record pass "$1"
	N_PASS=$((N_PASS + 1))
}

fail() {
	local name=$1
	shift
	echo "FAIL $name: $*"
	_record fail "$name"
	N_FAIL=$((N_FAIL + 1))
}

skip() {
	local name=$1
	shift
	echo "skip $name: $*"
	_record skip "$name"
	N_SKIP=$((N_SKIP + 1))
}

summary() {
	local s=
	[ "$N_SKIP" -eq 0 ] || s=", $N_SKIP skipped"
	echo "$N_PASS passed, $N_FAIL failed$s"
	[ "$N_FAIL" -eq 0 ]
}

# ==== One scenario ===========================================================

# begin NAME: start a scenario; expect_* add reasons; end_test records it.
begin() {
	T_NAME=$1
	T_WHY=()
	OUT= ERR= RC= ELAPSED_MS=
}

# why REASON: mark the current scenario failed (for checks without a helper).
why() { T_WHY+=("$*"); }

end_test() {
	if [ ${#T_WHY[@]} -eq 0 ]; then
		pass "$T_NAME"
		return 0
	fi
	local r msg=
	for r in "${T_WHY[@]}"; do msg+="${msg:+; }$r"; done
	fail "$T_NAME" "$msg"
	if [ -n "$VERBOSE" ]; then
		[ -z "$OUT" ] || sed 's/^/     | out: /' <<<"$OUT"
		[ -z "$ERR" ] || sed 's/^/     | err: /' <<<"$ERR"
	fi
	return 1
}

# Text of a captured stream on one line, bounded, for failure messages.
_flat() {
	local s=${1//$'\n'/ | }
	s=${s//$'\t'/\\t}
	[ ${#s} -gt 160 ] && s="${s:0:160}..."
	printf "'%s'" "$s"
}

_ran() { [ -n "$RC" ] || why "internal: expect_* before run_nbdboot"; }

expect_rc() {
	_ran
	[ "$RC" = "$1" ] && return 0
	case $RC in
	124) why "exit 124: killed by the ${T_LIMIT}s timeout (hang)" ;;
	*) why "exit $RC, expected $1 (stderr $(_flat "$ERR"))" ;;
	esac
	return 1
}

# expect_line TEXT: stdout has a line exactly TEXT.
expect_line() {
	_ran
	grep -Fxq -- "$1" <<<"$OUT" && return 0
	why "no stdout line '$1' (stdout $(_flat "$OUT"))"
	return 1
}

# expect_out REGEX / expect_err REGEX: some line matches (grep -E).
expect_out() {
	_ran
	grep -Eq -- "$1" <<<"$OUT" && return 0
	why "stdout does not match /$1/ (stdout $(_flat "$OUT"))"
	return 1
}

expect_no_out() {
	_ran
	grep -Eq -- "$1" <<<"$OUT" || return 0
	why "stdout matches /$1/ but must not (stdout $(_flat "$OUT"))"
	return 1
}

expect_err() {
	_ran
	grep -Eiq -- "$1" <<<"$ERR" && return 0
	why "stderr does not match /$1/ (stderr $(_flat "$ERR"))"
	return 1
}

# expect_stdout_is LINE...: stdout is exactly these lines, in any order.
expect_stdout_is() {
	_ran
	local want got
	want=$(printf '%s\n' "$@" | LC_ALL=C sort)
	got=$(printf '%s\n' "$OUT" | sed '/^$/d' | LC_ALL=C sort)
	[ "$want" = "$got" ] && return 0
	why "stdout $(_flat "$got") expected $(_flat "$want")"
	return 1
}

# expect_time MIN_MS MAX_MS: the last run took between MIN and MAX ms.
expect_time() {
	_ran
	[ "$ELAPSED_MS" -ge "$1" ] && [ "$ELAPSED_MS" -le "$2" ] && return 0
	why "took ${ELAPSED_MS} ms, expected ${1}..${2} ms"
	return 1
}

# ==== Running nbdboot ========================================================

_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_nbdboot ARGS...: run $NBDBOOT with a hard time limit (T_LIMIT seconds,
# default 10); sets OUT, ERR, RC (124 = hung) and ELAPSED_MS.  It runs in the
# background and is waited for, so Ctrl-C is handled at once.
run_nbdboot() {
	start_nbdboot "$@"
	finish_nbdboot
}

# start_nbdboot ARGS...: the same, but returns at once; finish_nbdboot waits.
start_nbdboot() {
	: "${T_LIMIT:=10}"
	_T0=$(_now_ms)
	timeout -k 2 "$T_LIMIT" "$NBDBOOT" "$@" \
		>"$TESTDIR/out" 2>"$TESTDIR/err" </dev/null &
	_NBDBOOT_PID=$!
	_PGRPS+=("$_NBDBOOT_PID")
}

finish_nbdboot() {
	wait "$_NBDBOOT_PID"
	RC=$?
	ELAPSED_MS=$(($(_now_ms) - _T0))
	local p keep=()
	for p in "${_PGRPS[@]}"; do [ "$p" = "$_NBDBOOT_PID" ] || keep+=("$p"); done
	_PGRPS=("${keep[@]}")
	OUT=$(<"$TESTDIR/out")
	ERR=$(<"$TESTDIR/err")
	T_LIMIT=
}

# ==== Ports and readiness ====================================================

_PORTS_GIVEN=" "

# pick_port: set FREE_PORT to a loopback TCP port nobody uses, below the
# ephemeral range (so it cannot collide with the source port of an outgoing
# connection).  Ports handed out once are not handed out again.
pick_port() {
	local lo p i span
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
	[ "$lo" -gt 12000 ] || lo=32768
	span=$((lo - 10000))
	for i in $(seq 100); do
		p=$((10000 + (RANDOM * 32768 + RANDOM) % span))
		case $_PORTS_GIVEN in *" $p "*) continue ;; esac
		[ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ] || continue
		port_open 127.0.0.1 "$p" && continue
		_PORTS_GIVEN+="$p "
		FREE_PORT=$p
		return 0
	done
	echo "pick_port: no free port found" >&2
	return 1
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() {
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# _wait_ready PID CHECK...: up to 5 s for CHECK to succeed while PID lives.
_wait_ready() {
	local pid=$1 i
	shift
	for i in $(seq 50); do
		"$@" && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

_pidfile_and_port() { [ -s "$1" ] && port_open "$2" "$3"; }
_pidfile_and_sock() { [ -s "$1" ] && [ -S "$2" ]; }

# Servers listen on LISTEN_ADDR (127.0.0.1, or ::1 for IPv6 tests).
LISTEN_ADDR=127.0.0.1

_server_failed() {
	echo "lib.sh: $1 did not come up; its log:" >&2
	sed 's/^/    /' "$2" >&2
	return 1
}

# ==== Servers ================================================================
# Each start_* sets SERVER_PID, PORT (TCP) or SOCK (Unix), SERVER_LOG, and
# returns non-zero (after printing the server's log) if the server did not
# come up within ~5 s.  A port lost to a race is retried with another one.
# Set WANT_PORT to use a given port (no retry).

# Servers' files are numbered, and named after the shell too: two
# subshells (a suite's parallel lanes) count from the same number, and a
# shared pid file once made one lane stop the other's server.
_nserv=0

# _start_tcp NAME CMD...: CMD has @PORT@ where the port goes.
_start_tcp() {
	local what=$1 try args a pidf
	shift
	for try in 1 2 3; do
		_nserv=$((_nserv + 1)) _nid=$_nserv-$BASHPID
		PORT=$WANT_PORT
		[ -n "$PORT" ] || { pick_port && PORT=$FREE_PORT; } || return 1
		pidf=$TESTDIR/server$_nid.pid
		SERVER_LOG=$TESTDIR/server$_nid.log
		args=()
		for a in "$@"; do
			a=${a//@PORT@/$PORT}
			args+=("${a//@PIDFILE@/$pidf}")
		done
		"${args[@]}" >"$SERVER_LOG" 2>&1 </dev/null &
		SERVER_PID=$!
		track "$SERVER_PID"
		if _wait_ready "$SERVER_PID" _pidfile_and_port "$pidf" "$LISTEN_ADDR" "$PORT"; then
			return 0
		fi
		stop_server "$SERVER_PID"
		[ -z "$WANT_PORT" ] || break
	done
	_server_failed "$what" "$SERVER_LOG"
}

# _start_unix NAME CMD...: CMD has @SOCK@ where the socket path goes.
_start_unix() {
	local what=$1 args a pidf
	shift
	_nserv=$((_nserv + 1)) _nid=$_nserv-$BASHPID
	SOCK=$TESTDIR/s$_nid.sock
	pidf=$TESTDIR/server$_nid.pid
	SERVER_LOG=$TESTDIR/server$_nid.log
	args=()
	for a in "$@"; do
		a=${a//@SOCK@/$SOCK}
		args+=("${a//@PIDFILE@/$pidf}")
	done
	"${args[@]}" >"$SERVER_LOG" 2>&1 </dev/null &
	SERVER_PID=$!
	track "$SERVER_PID"
	_wait_ready "$SERVER_PID" _pidfile_and_sock "$pidf" "$SOCK" && return 0
	stop_server "$SERVER_PID"
	_server_failed "$what" "$SERVER_LOG"
}

# start_nbdkit [NBDKIT OPTIONS] PLUGIN [PARAMS]: nbdkit on LISTEN_ADDR:PORT.
start_nbdkit() {
	_start_tcp nbdkit nbdkit -f --exit-with-parent -P @PIDFILE@ \
		-i "$LISTEN_ADDR" -p @PORT@ "$@"
}

# start_nbdkit_disk_small [NBDKIT OPTIONS]: a multi-export nbdkit (eval
# plugin): "disk" 10 MiB (also the default export) and "small" 1 MiB, with
# descriptions; other names are refused.  The sizes tell which name arrived.
start_nbdkit_disk_small() {
	start_nbdkit "$@" eval \
		list_exports='printf "%s\n" INTERLEAVED disk "Test disk" small "Small disk, 1 MiB"' \
		default_export='echo disk' \
		open='case $3 in disk|small) echo "$3" ;; *) echo "ENOENT no export $3" >&2; exit 1 ;; esac' \
		get_size='case $2 in small) echo 1048576 ;; *) echo 10485760 ;; esac' \
		pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none'
}

# start_nbdkit_unix [NBDKIT OPTIONS] PLUGIN [PARAMS]: nbdkit on Unix socket SOCK.
start_nbdkit_unix() {
	_start_unix nbdkit nbdkit -f --exit-with-parent -P @PIDFILE@ -U @SOCK@ "$@"
}

# make_image SIZE: print the path of a new sparse raw image of SIZE bytes.
make_image() {
	local f
	f=$(mktemp "$TESTDIR/disk.XXXXXX") && truncate -s "$1" "$f" && echo "$f"
}

# start_qemu_nbd NAME FILE [QEMU-NBD OPTIONS]: one export NAME of raw FILE.
start_qemu_nbd() {
	local name=$1 file=$2
	shift 2
	_start_tcp qemu-nbd qemu-nbd -t -e 8 --pid-file=@PIDFILE@ \
		-b "$LISTEN_ADDR" -p @PORT@ -x "$name" -f raw "$@" "$file"
}

# start_qemu_nbd_ro NAME FILE [OPTIONS]: the same, read-only.
start_qemu_nbd_ro() {
	local name=$1 file=$2
	shift 2
	start_qemu_nbd "$name" "$file" -r "$@"
}

# start_qemu_nbd_unix NAME FILE [OPTIONS]: on Unix socket SOCK.
start_qemu_nbd_unix() {
	local name=$1 file=$2
	shift 2
	_start_unix qemu-nbd qemu-nbd -t -e 8 --pid-file=@PIDFILE@ \
		-k @SOCK@ -x "$name" -f raw "$@" "$file"
}

# start_nbd_server CONFIG_BODY [DEFAULT_FILE]: nbd-server with [generic]
# (port, listenaddr, allowlist) followed by CONFIG_BODY (export sections).
# DEFAULT_FILE, if given, is also served as the default export (empty name),
# which nbd-server only offers for an export given on its command line.
# nbd-server's -d mode exits after one session, so it runs as a daemon with
# a pid file; the daemon's pid becomes SERVER_PID.
start_nbd_server() {
	local body=$1 deflt=$2 conf try pidf
	for try in 1 2 3; do
		_nserv=$((_nserv + 1)) _nid=$_nserv-$BASHPID
		PORT=$WANT_PORT
		[ -n "$PORT" ] || { pick_port && PORT=$FREE_PORT; } || return 1
		conf=$TESTDIR/nbd-server$_nid.conf
		pidf=$TESTDIR/server$_nid.pid
		SERVER_LOG=$TESTDIR/server$_nid.log
		{
			echo "[generic]"
			echo "allowlist = true"
			[ -n "$deflt" ] || printf 'port = %s\nlistenaddr = %s\n' "$PORT" "$LISTEN_ADDR"
			printf '%s\n' "$body"
		} >"$conf"
		if [ -n "$deflt" ]; then
			local addr=$LISTEN_ADDR:$PORT
			case $LISTEN_ADDR in *:*) addr=$LISTEN_ADDR@$PORT ;; esac
			nbd-server -C "$conf" -p "$pidf" "$addr" "$deflt" >"$SERVER_LOG" 2>&1 </dev/null
		else
			nbd-server -C "$conf" -p "$pidf" >"$SERVER_LOG" 2>&1 </dev/null
		fi
		for _ in $(seq 50); do [ -s "$pidf" ] && break; sleep 0.1; done
		SERVER_PID=$(cat "$pidf" 2>/dev/null)
		if [ -n "$SERVER_PID" ]; then
			track "$SERVER_PID"
			_wait_ready "$SERVER_PID" port_open "$LISTEN_ADDR" "$PORT" && return 0
			stop_server "$SERVER_PID"
		fi
		[ -z "$WANT_PORT" ] || break
	done
	_server_failed nbd-server "$SERVER_LOG"
}

# hold_slot PORT NAME: a client that negotiates NBD_OPT_GO for export NAME and
# keeps the session open (until the script ends, at most 300 s), taking one of
# the server's slots.  Returns non-zero if it was not admitted within 5 s.
_nhold=0
hold_slot() {
	local f=$TESTDIR/hold$((_nhold += 1)) pid
	perl -MIO::Socket::INET -e '
		my ($port, $name) = @ARGV;
		$SIG{ALRM} = sub { print "timeout\n"; exit 1 };
		alarm 10;
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port)
			or die "connect: $!\n";
		sub rd { my $b = ""; while (length($b) < $_[0]) {
			sysread($s, $b, $_[0] - length($b), length($b)) or die "closed\n" } $b }
		rd(18);
		syswrite($s, pack("N", 3) . "IHAVEOPT" . pack("NNN", 7, 6 + length($name), length($name))
			. $name . pack("n", 0));
		for (;;) {
			my (undef, undef, undef, $type, $len) = unpack("NNNNN", rd(20));
			rd($len) if $len;
			last if $type == 1;
			die sprintf("reply 0x%x\n", $type) if $type & 0x80000000;
		}
		alarm 0;
		$| = 1;
		print "admitted\n";
		sleep 300;' "$1" "$2" >"$f" 2>&1 </dev/null &
	pid=$!
	track "$pid"
	for _ in $(seq 50); do
		grep -qx admitted "$f" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "hold_slot: holder on port $1 not admitted: $(cat "$f")" >&2
	return 1
}

# start_silent_listener: a TCP listener on 127.0.0.1:PORT that accepts
# connections and never sends a byte.
start_silent_listener() {
	_start_tcp listener perl -MIO::Socket::INET -e '
		my ($port, $pidfile) = @ARGV;
		my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port,
			Listen => 16, ReuseAddr => 1) or die "listen: $!\n";
		open(my $f, ">", $pidfile) or die; print $f "$$\n"; close $f;
		my @held;
		while (my $c = $s->accept) { push @held, $c }' @PORT@ @PIDFILE@
}

# have_ipv6_loopback: ::1 is configured and bindable.
have_ipv6_loopback() {
	[ -e /proc/net/if_inet6 ] && grep -q '^0*1 ' /proc/net/if_inet6
}
