#!/bin/bash
# tls.sh - nbdboot --probe / --list over TLS (STARTTLS, X.509) against nbdkit,
# qemu-nbd and nbd-server on loopback, plus scripted servers that cut or
# downgrade the handshake.  Run from anywhere:
#
#	tests/tls.sh                            # ./nbdboot
#	NBDBOOT=build/nbdboot-asan tests/tls.sh
#	VERBOSE=1 tests/tls.sh                  # show output of failing runs
#
# Needs nbdkit, nbd-server, qemu-nbd (qemu-utils), openssl, perl, ss.  The
# certificates are made at test time by tests/pki.sh (set PKI=DIR to keep
# them somewhere; default: a temporary directory).  No root, no kernel nbd.

. "$(dirname "$0")/lib.sh"

for tool in nbdkit nbd-server qemu-nbd openssl perl ss timeout; do
	command -v "$tool" >/dev/null || { echo "tls.sh: $tool is missing (make deps)" >&2; exit 2; }
done
[ -x "$NBDBOOT" ] || { echo "tls.sh: $NBDBOOT is not built (make)" >&2; exit 2; }

if "$NBDBOOT" -V 2>&1 | grep -q 'no TLS'; then
	skip "tls: all scenarios" "$NBDBOOT was built with NBDBOOT_TLS=0"
	summary
	exit
fi

: "${PKI:=$TESTDIR/pki}"
"$ROOT/tests/pki.sh" "$PKI" || { echo "tls.sh: tests/pki.sh failed" >&2; exit 2; }

MIB10=10485760
MIB1=1048576

# ==== Checks =================================================================

# expect_tls_probe SIZE [EXPORT]: a successful probe over TLS.
expect_tls_probe() {
	expect_rc 0 || return 1
	expect_out '^tls: yes'
	expect_line "size: $1"
	[ -z "$2" ] || expect_line "export: $2"
	expect_out '^handshake: fixed-newstyle'
}

# expect_refusal REGEX: exit 1, exactly one stderr line "nbdboot: ..." that
# matches REGEX (case-insensitive), nothing probed.
expect_refusal() {
	expect_rc 1
	local n
	# a server slow to greet (nbd-server on a busy machine) is connected to
	# again before the refusal: that line is not the refusal retried
	n=$(grep -v '^nbdboot: no greeting from .* within [0-9]* ms; retrying' <<<"$ERR" | grep -c .)
	[ "$n" = 1 ] || why "stderr has $n lines, expected one (stderr $(_flat "$ERR"))"
	grep -q '^nbdboot: ' <<<"$ERR" || why "stderr does not start with 'nbdboot: ' (stderr $(_flat "$ERR"))"
	expect_err "$1"
	expect_no_out '^size:'
	expect_no_out '^tls: yes'
}

# _tlscheck HEX: HEX is a sequence of TLS records (the last may be cut
# short), the first a handshake record.  Prints what is wrong, nothing if ok.
_tlscheck() {
	perl -e '
		my $b = pack("H*", $ARGV[0] // "");
		my ($p, $i) = (0, 0);
		while ($p < length $b) {
			my $left = length($b) - $p;
			if ($left < 5) { last }
			my ($t, $maj, $min, $len) = unpack("C C C n", substr($b, $p, 5));
			if ($t < 20 || $t > 23 || $maj != 3 || $min > 4 || $len > 18432) {
				printf "byte %d is not a TLS record header (%s)\n", $p,
					unpack("H*", substr($b, $p, 12));
				exit;
			}
			if ($i == 0 && $t != 22) { print "first record has type $t, not 22 (handshake)\n"; exit }
			$p += 5 + $len;
			$i++;
		}' "$1"
}

# expect_tls_only HEX WHAT: the bytes captured as WHAT are TLS records only.
expect_tls_only() {
	local r
	r=$(_tlscheck "$1")
	[ -z "$r" ] || why "$2: $r"
}

# ==== Helper servers =========================================================

# A scripted NBD server that agrees to STARTTLS and then misbehaves.  Modes:
#   ack-close  send the ACK, close at once
#   hello-close  read the ClientHello record (logs it and its SNI), close
#   garbage    read the ClientHello, answer with plaintext NBD bytes, log
#              what the client sends afterwards
#   partial    read the ClientHello, send half a ServerHello record, close
#   unsup      answer STARTTLS with NBD_REP_ERR_UNSUP (a downgrade attempt),
#              log what the client sends afterwards
#   nofixed    greeting without NBD_FLAG_FIXED_NEWSTYLE (no STARTTLS
#              possible), log everything the client sends
# Log lines: "conn N option OPT", "conn N hello HEX", "conn N version HEX",
# "conn N sni NAME|-", "conn N after-hello HEX", "conn N after-reply HEX",
# "conn N after-greeting HEX".
cat >"$TESTDIR/fake.pl" <<'EOF'
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
my ($mode, $port, $pidfile, $log) = @ARGV;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port,
	Listen => 16, ReuseAddr => 1) or die "listen: $!\n";
open(my $pf, ">", $pidfile) or die; print $pf "$$\n"; close $pf;
$SIG{PIPE} = "IGNORE";

# rd(C, N, T): up to N bytes, waiting at most T s for each piece.
sub rd {
	my ($c, $n, $t) = @_;
	my $buf = "";
	my $sel = IO::Select->new($c);
	while (length($buf) < $n) {
		$sel->can_read($t) or last;
		my $r = sysread($c, $buf, $n - length($buf), length($buf));
		last unless $r;
	}
	return $buf;
}
# rest(C, T): everything until EOF or T s of silence.
sub rest {
	my ($c, $t) = @_;
	my $buf = "";
	my $sel = IO::Select->new($c);
	while ($sel->can_read($t)) {
		my $r = sysread($c, $buf, 65536, length($buf));
		last unless $r;
	}
	return $buf;
}
sub note {
	open(my $l, ">>", $log) or die;
	print $l "@_\n";
	close $l;
}
sub sni {
	my $b = shift;			# handshake message
	return "-" if length($b) < 43 || ord($b) != 1;
	my $p = 38;
	$p += 1 + ord(substr($b, $p, 1));		# session id
	$p += 2 + unpack("n", substr($b, $p, 2));	# cipher suites
	$p += 1 + ord(substr($b, $p, 1));		# compression
	return "-" if $p + 2 > length $b;
	my $end = $p + 2 + unpack("n", substr($b, $p, 2));
	$p += 2;
	while ($p + 4 <= $end && $p + 4 <= length $b) {
		my ($t, $l) = unpack("n n", substr($b, $p, 4));
		$p += 4;
		return substr($b, $p + 5, unpack("n", substr($b, $p + 3, 2))) if $t == 0;
		$p += $l;
	}
	return "-";
}
my $reply_magic = pack("H*", "0003e889045565a9");
my $n = 0;
while (my $c = $s->accept) {
	$n++;
	syswrite($c, "NBDMAGICIHAVEOPT" . pack("n", $mode eq "nofixed" ? 2 : 3));
	if ($mode eq "nofixed") {
		note("conn $n after-greeting " . unpack("H*", rest($c, 1)));
		close $c;
		next;
	}
	rd($c, 4, 2);
	my ($magic, $opt, $len) = unpack("a8 N N", rd($c, 16, 2) . "\0" x 16);
	rd($c, $len, 2) if $len;
	note("conn $n option $opt");
	if ($mode eq "unsup") {
		syswrite($c, $reply_magic . pack("N N N", $opt, 0x80000001, 0));
		note("conn $n after-reply " . unpack("H*", rest($c, 1)));
		close $c;
		next;
	}
	syswrite($c, $reply_magic . pack("N N N", $opt, 1, 0));
	if ($mode eq "ack-close") {
		close $c;
		next;
	}
	my $h = rd($c, 5, 2);
	my $body = "";
	if (length $h == 5) {
		$body = rd($c, unpack("n", substr($h, 3, 2)), 2);
		note("conn $n version " . unpack("H*", substr($body, 4, 2)));
		note("conn $n sni " . sni($body));
	}
	note("conn $n hello " . unpack("H*", $h . $body));
	if ($mode eq "garbage") {
		syswrite($c, $reply_magic . pack("N N N", 5, 1, 0) . "plaintext, not TLS\n" x 4);
		note("conn $n after-hello " . unpack("H*", rest($c, 1)));
	} elsif ($mode eq "partial") {
		syswrite($c, pack("C n n", 22, 0x0303, 90) . "\x02\x00\x00\x46\x03\x03" . "\x11" x 12);
		select(undef, undef, undef, 0.2);
	}
	close $c;
}
EOF

# start_fake MODE: the scripted server on PORT; its log is FAKE_LOG.  The
# readiness check's connection is logged too (every connection is): wait for
# it, and number nbdboot's connections from there (FAKE_BASE).
start_fake() {
	FAKE_LOG=$TESTDIR/fake-$1.log
	: >"$FAKE_LOG"
	_start_tcp "scripted server ($1)" perl "$TESTDIR/fake.pl" "$1" @PORT@ @PIDFILE@ "$FAKE_LOG" ||
		return 1
	for _ in $(seq 30); do [ -s "$FAKE_LOG" ] && break; sleep 0.1; done
	sleep 0.1
	FAKE_BASE=$(sed -n 's/^conn \([0-9]*\) .*/\1/p' "$FAKE_LOG" | sort -n | tail -n1)
}

# fake_field N WHAT: the value of "conn M WHAT VALUE" in FAKE_LOG, for
# nbdboot's Nth connection to the scripted server.
fake_field() { sed -n "s/^conn $(($1 + ${FAKE_BASE:-0})) $2 //p" "$FAKE_LOG" | head -n1; }

# A TCP relay that records what the client sends (hex, one line per
# connection, in RELAY_LOG).  start_relay TARGET_PORT.
cat >"$TESTDIR/relay.pl" <<'EOF'
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
my ($port, $pidfile, $target, $log) = @ARGV;
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port,
	Listen => 16, ReuseAddr => 1) or die "listen: $!\n";
open(my $pf, ">", $pidfile) or die; print $pf "$$\n"; close $pf;
$SIG{PIPE} = "IGNORE";
while (my $c = $s->accept) {
	my $u = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $target) or do { close $c; next };
	my $sel = IO::Select->new($c, $u);
	my $sent = "";
	OUTER: while (1) {
		for my $r ($sel->can_read(10)) {
			my $buf;
			my $n = sysread($r, $buf, 65536);
			last OUTER unless $n;
			if ($r == $c) { $sent .= $buf; syswrite($u, $buf) or last OUTER }
			else { syswrite($c, $buf) or last OUTER }
		}
	}
	close $c;
	close $u;
	open(my $l, ">>", $log) or die;
	print $l unpack("H*", $sent), "\n";
	close $l;
}
EOF

start_relay() {
	RELAY_LOG=$TESTDIR/relay$_nserv.log
	: >"$RELAY_LOG"
	_start_tcp relay perl "$TESTDIR/relay.pl" @PORT@ @PIDFILE@ "$1" "$RELAY_LOG"
}

# relay_check WHAT [PLAINTEXT]: the last connection through the relay sent
# the 4 client flag bytes, STARTTLS, then only TLS records; PLAINTEXT (an
# export name) appears nowhere in it.
relay_check() {
	local hex want
	for _ in 1 2 3 4 5 6 7 8 9 10; do [ -s "$RELAY_LOG" ] && break; sleep 0.1; done
	hex=$(tail -n1 "$RELAY_LOG")
	[ -n "$hex" ] || { why "$1: the relay recorded nothing"; return 1; }
	want=$(printf 'IHAVEOPT' | od -An -tx1 | tr -d ' \n')0000000500000000
	[ "${hex:8:32}" = "$want" ] ||
		{ why "$1: client did not start with STARTTLS (sent ${hex:0:64}...)"; return 1; }
	expect_tls_only "${hex:40}" "$1 (client bytes after STARTTLS)"
	if [ -n "$2" ]; then
		local p
		p=$(printf '%s' "$2" | od -An -tx1 | tr -d ' \n')
		case $hex in *"$p"*) why "$1: '$2' was sent in plaintext" ;; esac
	fi
}

# ==== nbdkit, server certificate only ========================================

# Exports as in interop.sh: "disk" 10 MiB (default) and "small" 1 MiB.
NBDKIT_EVAL=(eval
	list_exports='printf "%s\n" INTERLEAVED disk "Test disk" small "Small disk, 1 MiB" s3cretname "Secret"'
	default_export='echo disk'
	open='case $3 in disk|small|s3cretname) echo "$3" ;; *) echo "ENOENT no export $3" >&2; exit 1 ;; esac'
	get_size='case $2 in small|s3cretname) echo 1048576 ;; *) echo 10485760 ;; esac'
	pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none')

start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit" "${NBDKIT_EVAL[@]}" || exit 1
P=$PORT

# Is TLS there at all?  (Until it is, every scenario below fails.)
run_nbdboot --probe --tls --cacert "$PKI/ca.pem" localhost "$P"
if [ "$RC" = 2 ] && grep -qi 'not supported' <<<"$ERR"; then
	echo "tls.sh: $NBDBOOT says: $ERR" >&2
fi

begin "nbdkit tls: probe localhost with --cacert"
run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit tls: probe named export (-x -A -N)"
run_nbdboot --probe localhost "$P" -x -A "$PKI/ca.pem" -N small
expect_tls_probe $MIB1 small
expect_out '^handshake: fixed-newstyle go'
end_test

begin "nbdkit tls: probe 127.0.0.1 -H localhost"
run_nbdboot --probe 127.0.0.1 "$P" -N small --tls --cacert "$PKI/ca.pem" -H localhost
expect_tls_probe $MIB1 small
end_test

begin "nbdkit tls: probe 127.0.0.1 --tlshostname nbd.test (second DNS name)"
run_nbdboot --probe 127.0.0.1 "$P" --tls --cacert "$PKI/ca.pem" --tlshostname nbd.test
expect_tls_probe $MIB10
end_test

begin "nbdkit tls: probe 127.0.0.1 without -H matches the certificate's IP address"
run_nbdboot --probe 127.0.0.1 "$P" --tls --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit tls: list with descriptions"
run_nbdboot -l localhost "$P" --tls --cacert "$PKI/ca.pem"
expect_rc 0
expect_stdout_is $'disk\tTest disk' $'small\tSmall disk, 1 MiB' $'s3cretname\tSecret'
end_test

begin "nbdkit tls: URI nbds://localhost:PORT/NAME"
run_nbdboot --probe "nbds://localhost:$P/small" --cacert "$PKI/ca.pem"
expect_tls_probe $MIB1 small
end_test

begin "nbdkit tls: URI nbds://127.0.0.1:PORT/NAME with -H localhost"
run_nbdboot --probe "nbds://127.0.0.1:$P/small" -A "$PKI/ca.pem" -H localhost
expect_tls_probe $MIB1 small
end_test

begin "nbdkit tls: nbd-client forms -enable-tls -cacertfile -tlshostname"
run_nbdboot --probe 127.0.0.1 -N small "$P" -enable-tls -cacertfile "$PKI/ca.pem" -tlshostname localhost
expect_tls_probe $MIB1 small
end_test

begin "nbdkit tls: CA bundle with several certificates"
run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/bundle.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit tls: -g (NBD_OPT_EXPORT_NAME) inside TLS"
run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/ca.pem" -N small -g
expect_tls_probe $MIB1 small
expect_out '^handshake: fixed-newstyle export-name'
end_test

begin "nbdkit tls: --tls-proxy is accepted with --probe"
run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/ca.pem" --tls-proxy
expect_tls_probe $MIB10
end_test

begin "usage: --tls without --cacert is exit 2 (there is no silent insecure mode)"
run_nbdboot --probe localhost "$P" --tls
expect_rc 2
expect_err '^nbdboot: TLS needs the CA certificates to check the server: --cacert FILE \(or /etc/nbdboot/ca\.pem\)$'
expect_no_out '^size:'
end_test

begin "nbdkit tls: --cacert file that does not exist"
run_nbdboot --probe localhost "$P" --tls --cacert "$TESTDIR/no-such-ca.pem"
expect_rc 2
expect_err '^nbdboot: unable to open .*/no-such-ca\.pem: No such file or directory$'
expect_no_out '^size:'
end_test

begin "nbdkit tls: --cacert file without certificates"
run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/client-key.pem"
expect_rc 2
expect_err '^nbdboot: .*/client-key\.pem has no certificate$'
expect_no_out '^size:'
end_test

begin "nbdkit tls: server requires TLS, probed without --tls"
run_nbdboot --probe localhost "$P"
expect_refusal 'requires TLS'
end_test

begin "nbdkit tls refusal: unknown CA (other-ca.pem)"
T_LIMIT=5 run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/other-ca.pem"
expect_refusal 'not trusted'
end_test

begin "nbdkit tls refusal: -H wrong.test against the localhost certificate"
T_LIMIT=5 run_nbdboot --probe localhost "$P" --tls --cacert "$PKI/ca.pem" -H wrong.test
expect_refusal 'does not match'
end_test

begin "nbdkit tls refusal: 127.0.0.2 (not in the certificate) is not accepted"
T_LIMIT=5 run_nbdboot --probe 127.0.0.1 "$P" --tls --cacert "$PKI/ca.pem" -H 127.0.0.2
expect_refusal 'does not match'
end_test

# What goes over the wire, through a recording relay.
NBDKIT_PID=$SERVER_PID
start_relay "$P" || exit 1
R=$PORT

begin "wire: probe sends STARTTLS first, then only TLS records (export name not in clear)"
run_nbdboot --probe localhost "$R" --tls --cacert "$PKI/ca.pem" -N s3cretname
expect_tls_probe $MIB1 s3cretname
relay_check "probe" s3cretname
end_test

begin "wire: refusal (unknown CA) sends nothing but TLS records after STARTTLS"
T_LIMIT=5 run_nbdboot --probe localhost "$R" --tls --cacert "$PKI/other-ca.pem" -N s3cretname
expect_refusal 'not trusted'
relay_check "unknown CA" s3cretname
end_test

begin "wire: refusal (wrong name) sends nothing but TLS records after STARTTLS"
T_LIMIT=5 run_nbdboot --probe localhost "$R" --tls --cacert "$PKI/ca.pem" -H wrong.test -N s3cretname
expect_refusal 'does not match'
relay_check "wrong name" s3cretname
end_test
stop_server
stop_server "$NBDKIT_PID"

# ==== nbdkit with other server certificates ==================================

start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit-wrong" memory 10M || exit 1
begin "nbdkit tls refusal: certificate for wrong.test only"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal 'does not match'
end_test

begin "nbdkit tls refusal: 127.0.0.1 against a certificate without IP addresses"
T_LIMIT=5 run_nbdboot --probe 127.0.0.1 "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal 'does not match'
end_test

begin "nbdkit tls: -H wrong.test matches the wrong.test certificate"
run_nbdboot --probe 127.0.0.1 "$PORT" --tls --cacert "$PKI/ca.pem" -H wrong.test
expect_tls_probe $MIB10
end_test
stop_server

start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit-expired" memory 10M || exit 1
begin "nbdkit tls refusal: expired certificate"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal 'expired'
end_test

stop_server

start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit-future" memory 10M || exit 1
begin "nbdkit tls refusal: certificate not valid yet"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal 'expired|not yet valid|not valid yet'
end_test
stop_server

start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit-chain" memory 10M || exit 1
begin "nbdkit tls: server sends an intermediate CA, client trusts the root"
run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10
end_test
stop_server

# ==== nbdkit, optional TLS ===================================================

start_nbdkit --tls=on --tls-certificates="$PKI/nbdkit" memory 10M || exit 1
begin "nbdkit --tls=on: --tls gives TLS"
run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls=on: without --tls stays plaintext"
run_nbdboot --probe localhost "$PORT"
expect_rc 0
expect_line "tls: no"
expect_line "size: $MIB10"
end_test
stop_server

if have_ipv6_loopback && LISTEN_ADDR=::1 start_nbdkit --tls=require \
	--tls-certificates="$PKI/nbdkit" memory 10M 2>/dev/null; then
	begin "nbdkit tls: IPv6 URI nbds://[::1]:PORT/ with -H localhost"
	run_nbdboot --probe "nbds://[::1]:$PORT/" --cacert "$PKI/ca.pem" -H localhost
	expect_tls_probe $MIB10
	end_test
	stop_server
else
	skip "nbdkit tls: IPv6 URI nbds://[::1]:PORT/ with -H localhost" "no IPv6 loopback"
fi

# ==== nbdkit, client certificates ============================================

start_nbdkit --tls=require --tls-verify-peer --tls-certificates="$PKI/nbdkit" memory 10M || exit 1
begin "nbdkit --tls-verify-peer: EC client certificate"
run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls-verify-peer: RSA client certificate (-F -K)"
run_nbdboot --probe localhost "$PORT" -x -A "$PKI/ca.pem" -F "$PKI/client-rsa.pem" -K "$PKI/client-rsa-key.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls-verify-peer: EC key as 'EC PARAMETERS' + 'EC PRIVATE KEY'"
run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key-sec1.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls-verify-peer: RSA key as 'RSA PRIVATE KEY'"
run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client-rsa.pem" --key "$PKI/client-rsa-key-pkcs1.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls-verify-peer: nbd-client forms -certfile -keyfile"
run_nbdboot --probe localhost "$PORT" -enable-tls -cacertfile "$PKI/ca.pem" -certfile "$PKI/client.pem" -keyfile "$PKI/client-key.pem"
expect_tls_probe $MIB10
end_test

begin "nbdkit --tls-verify-peer: list with a client certificate"
run_nbdboot -l localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem"
expect_rc 0
end_test

begin "nbdkit --tls-verify-peer refusal: no client certificate"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal '^nbdboot: TLS: the server requires a client certificate: give --cert and --key \('
end_test

begin "nbdkit --tls-verify-peer refusal: client certificate from another CA"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/other-client.pem" --key "$PKI/other-client-key.pem"
expect_refusal "^nbdboot: TLS: the server asked for our client certificate, then ended the handshake: it does not accept .*/other-client\.pem \\(TLS handshake: "

end_test

# The files the initramfs hooks install: with no CA (or certificate and
# key) on the command line, /etc/nbdboot/ca.pem (cert.pem + key.pem) are
# used.  Run in a private mount namespace whose /etc is a tmpfs holding only
# etc/nbdboot, so the host's /etc is not touched (needs root for unshare -m;
# no /etc/hosts there, hence 127.0.0.1 and -H).
# etc_nbdboot FILE:NAME...: a wrapper running nbdboot with those files there.
etc_nbdboot() {
	local d=$TESTDIR/etc-nbdboot.$RANDOM f
	mkdir -p "$d"
	for f in "$@"; do cp "${f%%:*}" "$d/${f##*:}"; done
	printf '#!/bin/sh\nexec unshare -m sh -c '"'"'mount -t tmpfs tmpfs /etc && cp -r "$0" /etc/nbdboot && exec "$@"'"'"' %s %s "$@"\n' \
		"$d" "$NBDBOOT" >"$d.sh"
	chmod +x "$d.sh"
	echo "$d.sh"
}
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	begin "default TLS files: /etc/nbdboot/ca.pem, cert.pem and key.pem, nothing on the command line"
	NBDBOOT=$(etc_nbdboot "$PKI/ca.pem:ca.pem" "$PKI/client.pem:cert.pem" "$PKI/client-key.pem:key.pem") \
		run_nbdboot --probe "nbds://127.0.0.1:$PORT/" -H localhost
	expect_tls_probe $MIB10
	end_test

	begin "default TLS files: only /etc/nbdboot/ca.pem, the server wants a client certificate: refused"
	NBDBOOT=$(etc_nbdboot "$PKI/ca.pem:ca.pem") T_LIMIT=5 run_nbdboot --probe "nbds://127.0.0.1:$PORT/" -H localhost
	expect_refusal "^nbdboot: TLS: .*client certificate"
	end_test

	begin "default TLS files: --cacert on the command line wins over /etc/nbdboot/ca.pem"
	NBDBOOT=$(etc_nbdboot "$PKI/other-ca.pem:ca.pem" "$PKI/client.pem:cert.pem" "$PKI/client-key.pem:key.pem") \
		run_nbdboot --probe "nbds://127.0.0.1:$PORT/" -H localhost --cacert "$PKI/ca.pem"
	expect_tls_probe $MIB10
	end_test

	begin "default TLS files: /etc/nbdboot/ca.pem from another CA: refused as untrusted"
	NBDBOOT=$(etc_nbdboot "$PKI/other-ca.pem:ca.pem" "$PKI/client.pem:cert.pem" "$PKI/client-key.pem:key.pem") \
		T_LIMIT=5 run_nbdboot --probe "nbds://127.0.0.1:$PORT/" -H localhost
	expect_refusal "^nbdboot: TLS: .*(not trusted|unknown|CA).*/etc/nbdboot/ca\\.pem"
	end_test
else
	skip "default TLS files in /etc/nbdboot" "needs root and unshare -m"
fi

begin "nbdkit --tls-verify-peer: client key that does not match the certificate"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-rsa-key.pem"
expect_refusal "^nbdboot: TLS: the server asked for our client certificate, then ended the handshake: it does not accept .*/client\.pem"

end_test
stop_server

# ==== Refusals from servers without TLS ======================================

start_nbdkit memory 10M || exit 1
begin "plain nbdkit refusal: --tls"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal '^nbdboot: server refused STARTTLS by policy: refusing to continue without TLS$'
end_test

begin "plain nbdkit refusal: nbds://"
T_LIMIT=5 run_nbdboot --probe "nbds://127.0.0.1:$PORT/" -H localhost --cacert "$PKI/ca.pem"
expect_refusal '^nbdboot: server refused STARTTLS by policy: refusing to continue without TLS$'
end_test
stop_server

start_nbdkit --oldstyle memory 10M || exit 1
begin "oldstyle nbdkit refusal: --tls"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_refusal '^nbdboot: server speaks the oldstyle protocol, which has no TLS: refusing to continue without TLS$'
end_test
stop_server

# ==== Scripted servers: cut and downgraded handshakes ========================

start_fake ack-close || exit 1
begin "handshake cut: server closes right after the STARTTLS ACK"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
expect_refusal '^nbdboot: TLS: the server ended the handshake \((closed the connection|Connection reset by peer)\); it may not speak TLS 1.2'
[ "$(fake_field 1 option)" = 5 ] || why "first option was '$(fake_field 1 option)', not 5 (STARTTLS)"
end_test
stop_server

start_fake hello-close || exit 1
begin "handshake cut: server closes after the ClientHello"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
expect_refusal '^nbdboot: TLS: the server ended the handshake \((closed the connection|Connection reset by peer)\); it may not speak TLS 1.2'
expect_tls_only "$(fake_field 1 hello)" "bytes after STARTTLS"
V=$(fake_field 1 version)
[ -n "$V" ] && [ $((16#${V:-0})) -ge $((16#0303)) ] || why "ClientHello version '$V', expected 0303 (TLS 1.2)"
end_test

stop_server

start_fake hello-close || exit 1
begin "SNI: host name localhost is sent"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
expect_rc 1
S=$(fake_field 1 sni)
[ -n "$S" ] || why "no ClientHello recorded"
[ "$S" = localhost ] || why "SNI '$S', expected localhost"
end_test
stop_server

start_fake hello-close || exit 1
begin "SNI: -H nbd.test is sent for host 127.0.0.1"
T_LIMIT=6 run_nbdboot --probe 127.0.0.1 "$PORT" --tls --cacert "$PKI/ca.pem" -H nbd.test --wait 1
[ "$(fake_field 1 sni)" = nbd.test ] || why "SNI '$(fake_field 1 sni)', expected nbd.test"
end_test
stop_server

start_fake hello-close || exit 1
begin "SNI: not sent for an IP address (RFC 6066)"
T_LIMIT=6 run_nbdboot --probe 127.0.0.1 "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
S=$(fake_field 1 sni)
[ -n "$S" ] || why "no ClientHello recorded"
[ "$S" = - ] || why "SNI '$S' sent, expected none for 127.0.0.1"
end_test
stop_server

start_fake garbage || exit 1
begin "handshake cut: plaintext instead of a ServerHello"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
expect_refusal '^nbdboot: TLS: the server did not answer with TLS 1.2 records \(BearSSL error [0-9]+\)$'
expect_tls_only "$(fake_field 1 hello)" "bytes after STARTTLS"
A=$(fake_field 1 after-hello)
[ -z "$A" ] || [ -z "$(_tlscheck "1603030000$A")" ] ||
	why "after the plaintext answer the client sent non-TLS bytes: ${A:0:64}"
end_test
stop_server

start_fake partial || exit 1
begin "handshake cut: half a ServerHello, then EOF"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" --wait 1
expect_refusal '^nbdboot: TLS: the server ended the handshake \(closed the connection\); it may not speak TLS 1.2'
end_test
stop_server

start_fake unsup || exit 1
begin "downgrade: STARTTLS answered with ERR_UNSUP"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" -N s3cretname --wait 1
expect_refusal '^nbdboot: server does not support STARTTLS: refusing to continue without TLS$'
A=$(fake_field 1 after-reply)
ABORT=$(printf 'IHAVEOPT' | od -An -tx1 | tr -d ' \n')0000000200000000
[ -z "$A" ] || [ "$A" = "$ABORT" ] ||
	why "after the refusal the client sent more than NBD_OPT_ABORT: ${A:0:80}"
end_test
stop_server

start_fake nofixed || exit 1
begin "downgrade: server without FIXED_NEWSTYLE"
T_LIMIT=6 run_nbdboot --probe localhost "$PORT" --tls --cacert "$PKI/ca.pem" -N s3cretname --wait 1
expect_refusal '^nbdboot: server does not offer fixed newstyle negotiation, so it cannot do TLS: refusing to continue without TLS$'
A=$(fake_field 1 after-greeting)
# Allowed: nothing, the 4 client flag bytes, then at most NBD_OPT_ABORT.
[ -z "$A" ] || [ ${#A} = 8 ] || [ "${A:8}" = "$ABORT" ] ||
	why "client sent more than its flags and NBD_OPT_ABORT: ${A:0:80}"
end_test
stop_server

# ==== qemu-nbd ===============================================================

IMG_Q=$(make_image $MIB10)
start_qemu_nbd qdisk "$IMG_Q" -D "Qemu TLS disk" \
	--object "tls-creds-x509,id=tls0,dir=$PKI/nbdkit,endpoint=server,verify-peer=off" \
	--tls-creds tls0 || exit 1
begin "qemu-nbd tls: probe"
run_nbdboot --probe localhost "$PORT" -N qdisk --tls --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10 qdisk
end_test

begin "qemu-nbd tls: list"
run_nbdboot -l localhost "$PORT" --tls --cacert "$PKI/ca.pem"
expect_rc 0
expect_stdout_is $'qdisk\tQemu TLS disk'
end_test

begin "qemu-nbd tls: URI nbds://localhost:PORT/qdisk"
run_nbdboot --probe "nbds://localhost:$PORT/qdisk" --cacert "$PKI/ca.pem"
expect_tls_probe $MIB10 qdisk
end_test

begin "qemu-nbd tls: server requires TLS, probed without --tls"
run_nbdboot --probe localhost "$PORT" -N qdisk
expect_refusal 'requires TLS'
end_test

begin "qemu-nbd tls refusal: unknown CA"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" -N qdisk --tls --cacert "$PKI/other-ca.pem"
expect_refusal 'not trusted'
end_test
stop_server

start_qemu_nbd qdisk "$IMG_Q" \
	--object "tls-creds-x509,id=tls0,dir=$PKI/nbdkit,endpoint=server,verify-peer=on" \
	--tls-creds tls0 || exit 1
begin "qemu-nbd verify-peer=on: RSA client certificate"
run_nbdboot --probe localhost "$PORT" -N qdisk --tls --cacert "$PKI/ca.pem" --cert "$PKI/client-rsa.pem" --key "$PKI/client-rsa-key.pem"
expect_tls_probe $MIB10 qdisk
end_test

begin "qemu-nbd verify-peer=on refusal: no client certificate"
T_LIMIT=5 run_nbdboot --probe localhost "$PORT" -N qdisk --tls --cacert "$PKI/ca.pem"
expect_refusal '^nbdboot: TLS: the server requires a client certificate: give --cert and --key \('
end_test
stop_server

# ==== nbd-server =============================================================
# nbd-server 3.24 (GnuTLS) always asks for and verifies a client certificate.

IMG_N=$(make_image $MIB10)
if start_nbd_server "$(cat "$PKI/nbd-server.conf")
[alpha]
exportname = $IMG_N" 2>"$TESTDIR/nbd-server.err"; then
	begin "nbd-server tls: probe with a client certificate"
	run_nbdboot --probe localhost "$PORT" -N alpha --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem"
	expect_tls_probe $MIB10 alpha
	end_test

	begin "nbd-server tls: list with a client certificate"
	run_nbdboot -l localhost "$PORT" --tls --cacert "$PKI/ca.pem" --cert "$PKI/client-rsa.pem" --key "$PKI/client-rsa-key.pem"
	expect_rc 0
	expect_stdout_is alpha
	end_test

	begin "nbd-server tls: server requires TLS, probed without --tls"
	run_nbdboot --probe localhost "$PORT" -N alpha
	expect_refusal 'requires TLS'
	end_test

	begin "nbd-server tls refusal: no client certificate"
	T_LIMIT=5 run_nbdboot --probe localhost "$PORT" -N alpha --tls --cacert "$PKI/ca.pem"
	expect_refusal '^nbdboot: TLS: the server requires a client certificate: give --cert and --key \('
	end_test
	stop_server
else
	for t in "probe with a client certificate" "list with a client certificate" \
		"server requires TLS, probed without --tls" "refusal: no client certificate"; do
		skip "nbd-server tls: $t" "nbd-server did not start with TLS: $(tail -n1 "$TESTDIR/nbd-server.err")"
	done
fi

# TLS 1.2 is the minimum (NBD spec): a server that offers only TLS 1.0.
if start_nbd_server "$(cat "$PKI/nbd-server.conf")
tlsprio = NORMAL:-VERS-ALL:+VERS-TLS1.0
[alpha]
exportname = $IMG_N" 2>"$TESTDIR/nbd-server.err"; then
	begin "nbd-server TLS 1.0 only refusal: TLS 1.2 is the minimum"
	T_LIMIT=5 run_nbdboot --probe localhost "$PORT" -N alpha --tls --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem"
	expect_refusal '^nbdboot: TLS: the server ended the handshake \(closed the TLS session\); it may not speak TLS 1.2 with ECDHE'
	end_test
	stop_server
else
	skip "nbd-server TLS 1.0 only refusal: TLS 1.2 is the minimum" "nbd-server did not start"
fi

summary
