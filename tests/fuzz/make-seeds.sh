#!/bin/bash
# make-seeds.sh - regenerate the seed corpora in tests/fuzz/corpus/ (run it
# by hand after a protocol change, then commit the result; make never runs
# it).  Needs ./nbdboot built, gcc, perl, openssl, nbdkit, nbd-server and
# qemu-nbd (make deps).
#
#   cmdline, uri, argv  the tables of tests/unit.c (tests/fuzz/seeds.c)
#   ip                  the same, for the /init mode's words
#   san                 the unit tests' certificate skeletons, and the
#                       certificates of tests/pki.sh in DER
#   dhcp                the unit tests' server replies, qemu's (slirp), and
#                       dnsmasq's OFFER, ACK and NAK recorded in a network
#                       namespace (this part needs root and dnsmasq)
#   handshake           what real servers send: ./nbdboot runs through a
#                       recording relay (server-to-client bytes) against
#                       nbdkit, nbd-server and qemu-nbd on loopback, each
#                       prefixed with the harness's mode byte; then
#                       hand-made replies real servers do not send (every
#                       NBD_REP_ERR_*, INFO types, oldstyle, refusals)
. "$(dirname "$0")/../lib.sh"

CORPUS=$ROOT/tests/fuzz/corpus
BEARSSL=$ROOT/build/bearssl/src
[ -x "$NBDBOOT" ] || { echo "make-seeds.sh: $NBDBOOT is not built (make nbdboot)" >&2; exit 2; }

# Harness modes (tests/fuzz/handshake.c): the first byte of each input.
M_DEFAULT=0 M_NAMED=1 M_EXPORT_NAME=2 M_PROBE=3 M_LIST=4 M_TLS=5

# ==== From tests/unit.c ======================================================

rm -rf "$CORPUS/cmdline" "$CORPUS/uri" "$CORPUS/argv" "$CORPUS/san" "$CORPUS/handshake" \
	"$CORPUS/ip" "$CORPUS/dhcp"
mkdir -p "$CORPUS"
gcc -std=c11 -O1 -w -I"$BEARSSL/inc" -I"$ROOT" -o "$TESTDIR/seeds" "$ROOT/tests/fuzz/seeds.c" \
	"$BEARSSL/build-gcc/libbearssl.a" || exit 1
"$TESTDIR/seeds" "$CORPUS" || exit 1

# ==== DHCP replies of dnsmasq =================================================

# A network namespace nbdboot-PID-seeds (lib.sh's cleanup removes it) with a
# veth pair: dnsmasq on s0 (10.0.3.1/24; a root-path, a host name for the
# client's MAC, a domain, two DNS servers and a boot file), and on c0 seeds
# --dhcp-capture, which sends what nbdboot sends and keeps the replies.
dnsmasq_seeds() {
	local ns=nbdboot-$$-seeds d=$TESTDIR/dnsmasq pid
	mkdir -p "$d"
	{ ip netns add "$ns" && ip -n "$ns" link set lo up &&
		ip -n "$ns" link add c0 address 52:54:00:12:34:56 type veth peer name s0 &&
		ip -n "$ns" addr add 10.0.3.1/24 dev s0 && ip -n "$ns" link set s0 up &&
		ip -n "$ns" link set c0 up; } >"$d/ip.log" 2>&1 || { cat "$d/ip.log"; return 1; }
	ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root \
		--interface=s0 --bind-interfaces --dhcp-authoritative --domain=seed.lan \
		--dhcp-range=10.0.3.10,10.0.3.99,255.255.255.0,1h --dhcp-host=52:54:00:12:34:56,box-1 \
		--dhcp-option=option:root-path,nbd:10.0.3.1:10809:ext4 \
		--dhcp-option=option:dns-server,10.0.3.1,10.0.3.2 --dhcp-boot=pxelinux.0,bootsrv,10.0.3.1 \
		--dhcp-leasefile="$d/leases" --pid-file="$d/pid" --log-dhcp --log-facility="$d/log" \
		>"$d/out" 2>&1 </dev/null &
	pid=$!
	track "$pid"
	_wait_ready "$pid" test -s "$d/pid" || { cat "$d/out"; return 1; }
	ip netns exec "$ns" "$TESTDIR/seeds" --dhcp-capture c0 "$CORPUS/dhcp"
}

echo "dnsmasq (DHCP in a network namespace)"
if [ "$(id -u)" != 0 ] || ! command -v dnsmasq >/dev/null; then
	echo "  not root, or no dnsmasq: the dhcp corpus has no dnsmasq replies this time"
elif ! dnsmasq_seeds; then
	echo "make-seeds.sh: recording dnsmasq's replies failed" >&2
	exit 1
fi

# ==== Certificates of tests/pki.sh ===========================================

PKI=$TESTDIR/pki
"$ROOT/tests/pki.sh" "$PKI" || exit 1

# san_seed NAME PEM IPHEX: mode byte (0: IPv4, 1: IPv6), address, DER.
san_seed() {
	local mode=0
	[ ${#3} -eq 32 ] && mode=1
	{
		printf "\\$(printf %03o $mode)"
		perl -e 'print pack("H*", $ARGV[0])' "$3"
		openssl x509 -in "$2" -outform DER
	} >"$CORPUS/san/$1"
}
san_seed pki-server-127-0-0-1 "$PKI/server.pem" 7f000001
san_seed pki-server-v6-loopback "$PKI/server.pem" 00000000000000000000000000000001
san_seed pki-server-other-address "$PKI/server.pem" 7f000002
san_seed pki-chain-no-ip "$PKI/chain.pem" 7f000001
san_seed pki-ca "$PKI/ca.pem" 7f000001
san_seed pki-client-rsa "$PKI/client-rsa.pem" 7f000001

# ==== Handshakes of real servers ==============================================

mkdir -p "$CORPUS/handshake"

# A one-connection TCP relay that writes what the server sends to a file.
RELAY='
use strict;
use IO::Socket::INET;
use IO::Select;
$SIG{PIPE} = "IGNORE";
my ($port, $pidfile, $up, $out) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $port, Listen => 1,
	ReuseAddr => 1) or die "relay: listen: $!\n";
open(my $p, ">", $pidfile) or die; print $p "$$\n"; close $p;
my $c = $l->accept or die "relay: accept: $!\n";
close $l;
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $up)
	or die "relay: connect: $!\n";
open(my $f, ">:raw", $out) or die "relay: $out: $!\n";
my $sel = IO::Select->new($c, $s);
while ($sel->count) {
	my @ready = $sel->can_read(15) or last;
	for my $h (@ready) {
		my $o = $h == $c ? $s : $c;
		my $n = sysread($h, my $buf, 65536);
		if (!$n) { $sel->remove($h); shutdown($o, 1); next; }
		print $f $buf if $h == $s;
		syswrite($o, $buf);
	}
}
close $f;'

# record MODE NAME NBDBOOT-ARGS...: run nbdboot through the relay to the
# server on $PORT (@PORT@ in the arguments is the relay's port) and keep
# the server's bytes, prefixed with MODE, as handshake/NAME.
record() {
	local mode=$1 name=$2 rport pidf raw a args=() rc i
	shift 2
	pick_port || exit 1
	rport=$FREE_PORT
	pidf=$TESTDIR/relay-$name.pid
	raw=$TESTDIR/relay-$name.raw
	perl -e "$RELAY" "$rport" "$pidf" "$PORT" "$raw" &
	local relay=$!
	track "$relay"
	for i in $(seq 50); do [ -s "$pidf" ] && break; sleep 0.1; done
	for a in "$@"; do args+=("${a//@PORT@/$rport}"); done
	timeout 20 "$NBDBOOT" "${args[@]}" >"$TESTDIR/out" 2>&1 </dev/null
	rc=$?
	for i in $(seq 50); do kill -0 "$relay" 2>/dev/null || break; sleep 0.1; done
	kill "$relay" 2>/dev/null
	wait "$relay" 2>/dev/null
	{ printf "\\$(printf %03o "$mode")"; cat "$raw"; } >"$CORPUS/handshake/$name"
	printf '  %-36s %5d bytes  (nbdboot exit %d: %s)\n' "$name" \
		"$(stat -c %s "$CORPUS/handshake/$name")" "$rc" "$(head -n 1 "$TESTDIR/out")"
}

H=127.0.0.1
CA=(--tls --cacert "$PKI/ca.pem")

echo "nbdkit (eval plugin: exports disk and small, descriptions, default export disk)"
start_nbdkit_disk_small || exit 1
record $M_DEFAULT nbdkit-eval-default-go --probe $H @PORT@
record $M_NAMED nbdkit-eval-named-go --probe $H @PORT@ -N disk
record $M_NAMED nbdkit-eval-missing-export --probe $H @PORT@ -N nosuch
record $M_EXPORT_NAME nbdkit-eval-export-name --probe $H @PORT@ -N disk -g
record $M_PROBE nbdkit-eval-probe --probe $H @PORT@ -N small
record $M_LIST nbdkit-eval-list -l $H @PORT@
stop_server

echo "nbdkit (memory; block sizes; handshake masks; oldstyle)"
start_nbdkit --filter=blocksize-policy memory 10M \
	blocksize-minimum=512 blocksize-preferred=4096 blocksize-maximum=65536 || exit 1
record $M_DEFAULT nbdkit-block-sizes --probe $H @PORT@
stop_server
start_nbdkit -r memory 10M || exit 1
record $M_PROBE nbdkit-readonly-probe --probe $H @PORT@
stop_server
start_nbdkit --mask-handshake=0 memory 10M || exit 1
record $M_DEFAULT nbdkit-mask0-default --probe $H @PORT@
record $M_NAMED nbdkit-mask0-named --probe $H @PORT@ -N disk
stop_server
start_nbdkit --mask-handshake=1 memory 10M || exit 1
record $M_DEFAULT nbdkit-mask1-default --probe $H @PORT@
record $M_EXPORT_NAME nbdkit-mask1-export-name --probe $H @PORT@ -N disk -g
stop_server
start_nbdkit --oldstyle memory 10M || exit 1
record $M_DEFAULT nbdkit-oldstyle --probe $H @PORT@
record $M_TLS nbdkit-oldstyle-tls-asked --probe $H @PORT@ "${CA[@]}"
stop_server

echo "nbdkit --tls=require (X.509 from tests/pki.sh)"
start_nbdkit --tls=require --tls-certificates="$PKI/nbdkit" memory 10M || exit 1
record $M_TLS nbdkit-tls-default --probe $H @PORT@ "${CA[@]}"
record $M_TLS nbdkit-tls-named --probe $H @PORT@ -N disk "${CA[@]}"
record $M_DEFAULT nbdkit-tls-required --probe $H @PORT@
record $M_LIST nbdkit-tls-required-list -l $H @PORT@
stop_server

echo "nbd-server (exports disk and ro, no default export)"
IMG=$(make_image 10485760)
start_nbd_server "
[disk]
exportname = $IMG
[ro]
exportname = $IMG
readonly = true" || exit 1
record $M_NAMED nbd-server-named-go --probe $H @PORT@ -N disk
record $M_EXPORT_NAME nbd-server-export-name --probe $H @PORT@ -N disk -g
record $M_DEFAULT nbd-server-no-default --probe $H @PORT@
record $M_LIST nbd-server-list -l $H @PORT@
record $M_PROBE nbd-server-readonly-probe --probe $H @PORT@ -N ro
stop_server
if start_nbd_server "$(cat "$PKI/nbd-server.conf")
[disk]
exportname = $IMG" 2>/dev/null; then
	record $M_TLS nbd-server-tls --probe $H @PORT@ -N disk "${CA[@]}" \
		--cert "$PKI/client.pem" --key "$PKI/client-key.pem"
	record $M_NAMED nbd-server-tls-required --probe $H @PORT@ -N disk
	stop_server
else
	echo "  nbd-server with TLS did not start: no nbd-server TLS seeds"
fi

echo "qemu-nbd (export disk with a description)"
start_qemu_nbd disk "$IMG" -D "Qemu test disk" || exit 1
record $M_NAMED qemu-nbd-named-go --probe $H @PORT@ -N disk
record $M_EXPORT_NAME qemu-nbd-export-name --probe $H @PORT@ -N disk -g
record $M_LIST qemu-nbd-list -l $H @PORT@
record $M_NAMED qemu-nbd-missing-export --probe $H @PORT@ -N nosuch
stop_server
start_qemu_nbd disk "$IMG" \
	--object "tls-creds-x509,id=tls0,dir=$PKI/nbdkit,endpoint=server,verify-peer=off" \
	--tls-creds tls0 || exit 1
record $M_TLS qemu-nbd-tls --probe $H @PORT@ -N disk "${CA[@]}"
stop_server

# ==== Hand-made: what real servers do not send ================================

echo "hand-made replies"
# hand MODE NAME PERL-EXPRESSION: the server's bytes, built with these helpers.
HELPERS='
sub greet { "NBDMAGICIHAVEOPT" . pack("n", $_[0]) }
sub oldstyle { "NBDMAGIC" . pack("Q>Q>N", 0x00420281861253, $_[0], $_[1]) . "\0" x 124 }
sub rep { my ($opt, $type, $data) = @_; $data //= "";
	pack("Q>NNN", 0x3e889045565a9, $opt, $type, length $data) . $data }
sub ack { rep($_[0], 1) }
sub err { rep($_[0], 0x80000000 | $_[1], $_[2]) }
sub info { rep(7, 3, pack("n", $_[0]) . $_[1]) }
sub info_export { info(0, pack("Q>n", $_[0], $_[1])) }
sub info_bs { info(3, pack("NNN", @_)) }
sub export_name_reply { pack("Q>n", $_[0], $_[1]) . ($_[2] ? "\0" x 124 : "") }
sub server { rep(3, 2, pack("N", length $_[0]) . $_[0] . ($_[1] // "")) }'
hand() {
	perl -e "$HELPERS; binmode STDOUT; print chr($1) . ($3)" >"$CORPUS/handshake/$2" || exit 1
}
GO=7 FIXED=1 BOTH=3
hand $M_NAMED go-every-info "greet($BOTH) . info(1, 'disk') . info(2, 'A test disk')
	. info_export(1 << 20, 0x1ff) . info_bs(1, 4096, 1 << 25) . info(99, 'xy') . ack($GO)"
hand $M_DEFAULT go-no-flags "greet($BOTH) . info_export(4096, 0x1fe) . ack($GO)"
hand $M_DEFAULT go-ack-without-export "greet($BOTH) . ack($GO)"
hand $M_DEFAULT go-bad-block-sizes "greet($BOTH) . info_bs(3, 4096, 65536) . ack(2)"
hand $M_DEFAULT go-absurd-size "greet($BOTH) . info_export(~0, 1) . ack($GO)"
hand $M_DEFAULT go-unexpected-server-reply "greet($BOTH) . rep($GO, 2, pack('N', 0))"
hand $M_DEFAULT go-wrong-echo "greet($BOTH) . ack(3)"
hand $M_NAMED go-unsup-falls-back "greet($FIXED) . err($GO, 1) . export_name_reply(123456, 3, 1)"
for e in 2:policy 3:invalid 4:platform 5:tls-reqd 6:unknown 7:shutdown 8:block-size-reqd \
	9:too-big 10:ext-header-reqd 77:unknown-error; do
	hand $M_NAMED "go-err-${e#*:}" "greet($BOTH) . err($GO, ${e%%:*}, qq(why\\e[0m)) . ack(2)"
done
hand $M_DEFAULT newstyle-not-fixed "greet(0) . export_name_reply(999, 1, 1)"
hand $M_EXPORT_NAME export-name-no-zeroes "greet($BOTH) . export_name_reply(1 << 20, 3, 0)"
hand $M_EXPORT_NAME export-name-refused "greet($BOTH)"
hand $M_DEFAULT oldstyle-1g "oldstyle(1 << 30, 3)"
hand $M_NAMED oldstyle-named "oldstyle(1 << 30, 3)"
hand $M_DEFAULT bad-magic "qq(HTTP/1.1 400 Bad Request\\r\\n)"
hand $M_TLS tls-not-fixed "greet(0)"
hand $M_TLS starttls-err-policy "greet($BOTH) . err(5, 2, 'no')"
hand $M_TLS starttls-err-unsup "greet($BOTH) . err(5, 1)"
hand $M_TLS starttls-ack-then-plaintext "greet($BOTH) . ack(5) . info_export(1 << 20, 1) . ack($GO)"
hand $M_LIST list-entries "greet($BOTH) . server('disk', 'Test disk') . server('small') . ack(3) . ack(2)"
hand $M_LIST list-err-policy "greet($BOTH) . err(3, 2, 'no') . ack(2)"
hand $M_LIST list-bad-entry "greet($BOTH) . rep(3, 2, pack('N', 50) . 'x')"
hand $M_LIST list-not-fixed "greet(0)"

echo "$(ls "$CORPUS/handshake" | wc -l) handshake seeds; cmdline $(ls "$CORPUS/cmdline" | wc -l)," \
	"uri $(ls "$CORPUS/uri" | wc -l), argv $(ls "$CORPUS/argv" | wc -l), san $(ls "$CORPUS/san" | wc -l)," \
	"ip $(ls "$CORPUS/ip" | wc -l), dhcp $(ls "$CORPUS/dhcp" | wc -l)"
