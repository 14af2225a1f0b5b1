#!/bin/bash
# hooks-dracut.sh - nbdboot's dracut module (initramfs-hook/dracut, installed
# as /usr/lib/dracut/modules.d/95nbdboot) built by the real dracut 059 of the
# Debian 12 test root (tests/vm/sysroot.sh) and booted under qemu with that
# root served over NBD by nbdkit, qemu-nbd or nbd-server on the host.
#
# Usage: tests/vm/hooks-dracut.sh [NUMBER...]      (default: all)
# Environment: RESULTS, VERBOSE as in tests/lib.sh; SYS_TIMEOUT (seconds per
# boot, default 600: TCG guests on a busy machine are slow).
#
# Three images, made in the test root after `make install` of this checkout
# (its /etc/nbdboot holds the test PKI's ca.pem, client.pem as cert.pem and
# client-key.pem as key.pem), each with what a user types plus the output
# path, --kver, --force and --no-compress (which only saves the test time):
#   sd  dracut --add nbdboot                     systemd flavour; dracut's
#       network module picks systemd-networkd, and dracut's own nbd module
#       comes along by itself (nbd-client is installed)
#   lg  dracut --add 'nbd nbdboot network-legacy'       systemd flavour,
#       network-legacy, which runs the netroot handler /sbin/nbdroot
#   sh  dracut --add 'nbdboot network-legacy' --omit systemd   shell flavour
#       (network-legacy: without systemd dracut cannot use networkd)
#  0 the images: nbdboot, its hooks, the nbd and kTLS modules and the TLS
#    files are in each; the nbd module is in each but its cmdline hook and
#    generator are gone, /sbin/nbdroot is nbdboot's, and nbd-client, GnuTLS
#    and libnl are not in the image
# Boots (each checked with sys_booted unless it is meant to fail):
#  1 sd: root=nbd:10.0.2.2:PORT:ext4 rw (no ip=), nbdkit: networkd's link
#    starts the attach; the server sees one connection (the nbd module never
#    attaches)
#  3 sh: root=nbd://10.0.2.2:PORT/root, nbd-server with export root
#  4 sd: root=nbds://10.0.2.2:PORT/ nbdboot.tlshostname=nbd.test against
#    nbdkit --tls=require --tls-verify-peer: kTLS with the client certificate
#    from /etc/nbdboot, no resident process but the reconnect monitor, which
#    is still there with the root reading when systemd-shutdown runs its hooks
#  5 sd: the same with nbdboot.tls-proxy: the '@' proxy and monitor run after
#    switch_root and until the end (the same hook), shutdown has no I/O error
#  6 lg (both nbd modules, network-legacy):
#    netroot=nbd:10.0.2.2:rootfs:ext4::bs=4096,timeout=45, nbdkit (log
#    filter) on the default port 10809: network-legacy runs /sbin/nbdroot,
#    which is nbdboot's; one attach (the console, and one connection, for
#    export rootfs, at the server), nbd-client never runs; the device has
#    4096-byte blocks and a 45 s timeout
#  7 ioctl mode (root=nbd:SRV:PORT:ext4:rw:ioctl): sd: refused before
#    attaching (systemd's switch-root sends SIGSTOP to every process, which
#    would end the holder and the root), emergency shell; sh: it boots,
#    nbdboot's warning is on the console, the '@' holder runs after
#    switch_root, and systemd-shutdown's SIGSTOP ends it: the device fails
#    during shutdown (the limit, shown; qemu is stopped then)
#  9 sd: root=dhcp rw, on a network of its own (syslib.sh's sys_dhcp_net:
#    dnsmasq in a network namespace, root-path nbd:SRV:rootfs:ext4, nbdkit
#    there on the default port): the module asked networkd for DHCP with the
#    root-path, said what it got, and nbdboot attached export rootfs once
# 10 lg (network-legacy, both nbd modules): root=dhcp rw, on such a network,
#    root-path nbd:SRV:10809:ext4: dhclient's root-path reaches the netroot
#    handler, which is nbdboot's: one attach, one connection
#  8 sd: failures, at once: a wrong export name (nbd-server) and no server
#    (nbdboot.wait=5): nbdboot's reason on the console before dracut's
#    emergency shell, which comes within a minute; qemu is stopped then
# (no set -u: tests/lib.sh is not written for it)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"     # pass/fail/summary, start_* servers, TESTDIR, cleanup
. "$here/lib.sh"        # die/say/need
T0_ALL=$(date +%s)
LOGDIR=$ROOT/build/vm
mkdir -p "$LOGDIR"
: "${SYS_TIMEOUT:=600}"
. "$here/syslib.sh"
want=" ${*:-0 1 3 4 5 6 7 8 9 10} "

finish() {
	echo "tests/vm/hooks-dracut.sh: $N_PASS passed, $N_FAIL failed in $(($(date +%s) - T0_ALL)) s (logs: $LOGDIR/dracut-*.log)"
	[ "$N_FAIL" -eq 0 ]
	exit
}
prep_fail() { fail "dracut: setup" "$*"; finish; }
wanted() { case $want in *" $1 "*) return 0 ;; esac; return 1; }

need qemu-system-x86_64 qemu-system-x86
need nbdkit nbdkit
need nbd-server nbd-server
need qemu-nbd qemu-utils
need debugfs e2fsprogs
need dnsmasq dnsmasq-base

# ==== Images =================================================================

sys_init || prep_fail "no test root"
PKI=$TESTDIR/pki
"$here/../pki.sh" "$PKI" >"$TESTDIR/pki.log" 2>&1 || prep_fail "tests/pki.sh failed: $(tail -n3 "$TESTDIR/pki.log")"
mkdir -p "$SYS_OUT/pki"
cp "$PKI/ca.pem" "$PKI/client.pem" "$PKI/client-key.pem" "$SYS_OUT/pki/"

# mkimage NAME DRACUT-ARGS: /out/NAME.img and its listing /out/NAME.list
mkimage() {
	local name=$1
	shift
	sys_run --install "mkdir -p /etc/nbdboot && cp /out/pki/ca.pem /etc/nbdboot/ca.pem &&
		cp /out/pki/client.pem /etc/nbdboot/cert.pem && cp /out/pki/client-key.pem /etc/nbdboot/key.pem &&
		dracut --force --no-compress --kver $SYS_KVER $* /out/$name.img &&
		lsinitrd /out/$name.img >/out/$name.list" >"$LOGDIR/dracut-$name.gen.log" 2>&1
}
imgs=" "
for n in 0 1 4 5 7 8 9; do wanted $n && imgs="${imgs/ sd / }sd "; done
for n in 0 6 10; do wanted $n && imgs="${imgs/ lg / }lg "; done
for n in 0 3 7; do wanted $n && imgs="${imgs/ sh / }sh "; done
t0=$(date +%s)
declare -A gen_pid
for i in $imgs; do
	case $i in
	sd) mkimage sd --add nbdboot & ;;
	lg) mkimage lg --add "'nbd nbdboot network-legacy'" & ;;
	sh) mkimage sh --add "'nbdboot network-legacy'" --omit systemd & ;;
	esac
	gen_pid[$i]=$!
done
for i in $imgs; do
	wait "${gen_pid[$i]}" || prep_fail "dracut failed to make the $i image: $(grep -v 'will not be installed' "$LOGDIR/dracut-$i.gen.log" | tail -n3 | tr '\n' ' ')"
done
echo "dracut: images$imgs made in $(($(date +%s) - t0)) s"

if wanted 0; then
	begin "dracut 0: the images: nbdboot, its hooks, nbd, kTLS and TLS files; the nbd module's hooks replaced"
	for i in $imgs; do
		l=$SYS_OUT/$i.list
		for f in usr/sbin/nbdboot usr/sbin/nbdroot usr/sbin/nbdsroot usr/lib/nbdboot-lib.sh \
			usr/lib/dracut/hooks/cmdline/90-parse-nbdboot.sh etc/nbdboot/ca.pem etc/nbdboot/cert.pem \
			etc/nbdboot/key.pem kernel/drivers/block/nbd.ko kernel/net/tls/tls.ko kernel/crypto/gcm.ko \
			kernel/crypto/ctr.ko kernel/crypto/ghash-generic.ko aesni-intel.ko chacha20poly1305.ko; do
			grep -q " $f\$\| $f -> \|/$f\$" "$l" || why "$i: no $f"
		done
		grep -q 'dracut-nbd-generator\|90-parse-nbdroot' "$l" && why "$i: the nbd module's hook or generator is still there"
		grep -q 'nbdboot: NBD roots are attached by nbdboot' "$LOGDIR/dracut-$i.gen.log" ||
			why "$i: dracut did not say that nbdboot took over from the nbd module"
		f=$(grep -oE '/(nbd-client|libgnutls\.so[.0-9]*|libnl-3\.so[.0-9]*)$' "$l" | tr '\n' ' ')
		[ -z "$f" ] || why "$i: nbd-client or what only it uses is in the image: $f"
		grep -q 'nbdboot: nbd-client left out of the image' "$LOGDIR/dracut-$i.gen.log" ||
			why "$i: dracut did not say that nbd-client was left out"
	done
	case $imgs in *" sd "*) grep -q 'dracut-nbdboot-generator' "$SYS_OUT/sd.list" || why "sd: no generator"
		grep -q 'nbdboot-networkd' "$SYS_OUT/sd.list" || why "sd: not marked as a systemd-networkd image" ;; esac
	case $imgs in *" sh "*) grep -q 'system-generators\|nbdboot-networkd' "$SYS_OUT/sh.list" &&
		why "sh: a systemd generator or the networkd mark in the shell flavour" ;; esac
	end_test
fi

# ==== Boots ==================================================================
# A scenario is a function run in a subshell, in one of two lanes that run at
# once (see the end); its output is replayed and counted when all are done.

# serve START ARGS...: a server with tests/lib.sh's START; one that does
# not come up fails the scenario; each is stopped when the scenario ends
serve() {
	"$@" || { why "${1#start_} did not start (its log is above)"; return 1; }
	SERVERS+=("$SERVER_PID")
}

# boot NAME IMAGE APPEND...: boot and wait; the console log is
# build/vm/dracut-NAME.log
boot() {
	local name=$1 image=$2
	shift 2
	SYS_NAME=dracut-$name sys_boot "$SYS_OUT/$image.img" "$@"
	[ -n "$CON" ] || why "no boot: the console is empty"
}

# boot_until NAME IMAGE REGEX SECONDS APPEND...: boot; once the console
# matches REGEX (or SECONDS after the console began, or qemu ended), stop it
boot_until() {
	local name=$1 image=$2 re=$3 secs=$4 i
	shift 4
	SYS_NAME=dracut-$name sys_boot_start "$SYS_OUT/$image.img" "$@"
	for i in $(seq 1800); do  # the VM slot may be busy
		[ -s "$LOG" ] || ! kill -0 "$VM_PID" 2>/dev/null && break
		sleep 0.5
	done
	for i in $(seq "$((secs * 2))"); do
		kill -0 "$VM_PID" 2>/dev/null || break
		tr -d '\r' <"$LOG" | grep -Eq -- "$re" && break
		sleep 0.5
	done
	pkill -TERM -P "$VM_PID" 2>/dev/null  # boot.sh's timeout (it stops qemu) and tee
	sys_boot_wait
	[ -n "$CON" ] || why "no boot: the console is empty"
}

# con_order A B WHAT: the first line matching A comes before the first matching B
con_order() {
	local a b
	a=$(grep -En -m1 -- "$1" <<<"$CON" | cut -d: -f1)
	b=$(grep -En -m1 -- "$2" <<<"$CON" | cut -d: -f1)
	[ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ] && return 0
	why "console: /$1/ (line ${a:-none}) is not before /$2/ (line ${b:-none}) ($3)"
}

# add_show IMG PATH...: the root in IMG prints "VMTEST show PATH=VALUE" for
# each PATH before its test unit runs (a drop-in written with debugfs)
add_show() {
	local img=$1 f=$TESTDIR/show-$RANDOM.conf
	shift
	printf '[Service]\nExecStartPre=/bin/sh -c '"'"'for f in %s; do echo "VMTEST show $f=$(cat $f)"; done >/dev/console'"'"'\n' "$*" >"$f"
	printf 'mkdir /etc/systemd/system/vmtest.service.d\nwrite %s /etc/systemd/system/vmtest.service.d/show.conf\n' "$f" |
		debugfs -w -f - "$img" >/dev/null 2>&1 || why "debugfs could not add the show drop-in to $img"
}

# The console lines the module and nbdboot write
NETWORKD_ATTACH='dracut: nbdboot: systemd-networkd configured a link: attaching '
HANDLER_ATTACH='dracut: nbdboot: [a-z0-9]+ is up: attaching '
ATTACHED='^nbdboot: attached 10\.0\.2\.2:[0-9]+ .*to /dev/nbd0 '
IOCTL_WARNING='^nbdboot: warning: .*ioctl.*systemd'
EMERGENCY='Entering emergency mode|Dropping to debug shell'
TLS_SRV=(--tls=require "--tls-certificates=$PKI/nbdkit" --tls-verify-peer)
TLS_BOOT="nbdboot.tlshostname=nbd.test"

# one_attach NLOG [ATTACH-REGEX]: the console has one attach by nbdboot
# (ATTACHED by default) and nothing from nbd-client; nbdkit's log filter
# (NLOG) saw exactly one connection
one_attach() {
	local n
	n=$(grep -Ec -- "${2:-$ATTACHED}" <<<"$CON")
	[ "$n" = 1 ] || why "$n attach lines from nbdboot matching /${2:-$ATTACHED}/, expected 1"
	sys_con_lacks 'Negotiation: |nbd-client' 'nbd-client never runs'
	[ -z "$1" ] && return
	n=$(grep -c 'Connect export=' "$1" 2>/dev/null)
	[ "${n:-0}" = 1 ] || why "the server saw ${n:-0} connections, expected 1 ($1)"
}

scen_1() {
	begin "dracut 1: systemd flavour, networkd, root=nbd:SRV:PORT:ext4 rw without ip=, nbdkit; one attach"
	local nlog=$TESTDIR/nbdkit-1.log
	SYS_NAME=d1 sys_image flat
	serve start_nbdkit --filter=log file "$IMG" "logfile=$nlog" && {
		boot 1 sd "root=nbd:10.0.2.2:$PORT:ext4 rw"
		sys_booted /dev/nbd0
		sys_con_has "$NETWORKD_ATTACH" 'networkd brought the link up, the job attached'
		sys_con_has "$ATTACHED\(.*netlink\)"
		stop_server
		one_attach "$nlog"
	}
	end_test
}

scen_3() {
	begin "dracut 3: shell flavour, root=nbd://SRV:PORT/root, nbd-server"
	SYS_NAME=d3 sys_image flat
	serve start_nbd_server "$(printf '[root]\nexportname = %s\n' "$IMG")" && {
		boot 3 sh "root=nbd://10.0.2.2:$PORT/root"
		sys_booted /dev/nbd0
		sys_con_has "$HANDLER_ATTACH" 'network-legacy ran /sbin/nbdroot'
		sys_con_has "$ATTACHED\(.*netlink\)"
		sys_con_has 'dracut: Switching root' 'the shell flavour switched root'
	}
	end_test
}

scen_4() {
	begin "dracut 4: TLS root=nbds://SRV:PORT/, client certificate required, kTLS, no process but the monitor"
	local nlog=$TESTDIR/nbdkit-4.log
	SYS_NAME=d4 sys_image flat
	serve start_nbdkit "${TLS_SRV[@]}" --filter=log file "$IMG" "logfile=$nlog" && {
		boot 4 sd "root=nbds://10.0.2.2:$PORT/ $TLS_BOOT"
		sys_booted /dev/nbd0
		sys_con_has "$ATTACHED\(.*netlink, kTLS\)" 'the kernel carries TLS'
		sys_con_has '^VMTEST resident=[0-9]+:@[^,]*$' "kTLS: one '@' process, the reconnect monitor"
		sys_late_ok 1
		stop_server
		grep -q 'Connect export=.* tls=1' "$nlog" || why "nbdkit saw no TLS connection ($nlog)"
	}
	end_test
}

scen_5() {
	begin "dracut 5: TLS through nbdboot.tls-proxy, systemd flavour: the '@' proxy outlives switch_root and shutdown"
	SYS_NAME=d5 sys_image flat
	serve start_nbdkit "${TLS_SRV[@]}" file "$IMG" && {
		boot 5 sd "root=nbds://10.0.2.2:$PORT/ $TLS_BOOT nbdboot.tls-proxy"
		sys_booted /dev/nbd0
		sys_con_has "$ATTACHED\(.*netlink, TLS via proxy\)" 'TLS through the proxy'
		sys_con_has '^VMTEST resident=[0-9]+:@[^,]*,[0-9]+:@[^,]*$' "two '@' processes, the proxy and the monitor, after switch_root"
		sys_late_ok 2
		sys_con_lacks 'dracut-initqueue.service: Killing|Killing process .*nbdboot' 'nothing kills the proxy'
	}
	end_test
}

scen_6() {
	begin "dracut 6: systemd flavour, network-legacy and dracut's nbd module too, netroot=nbd:SRV:NAME:ext4::bs=4096,timeout=45, nbdkit: only nbdboot attaches"
	local nlog=$TESTDIR/nbdkit-6.log
	SYS_NAME=d6 sys_image flat
	add_show "$IMG" /sys/block/nbd0/queue/logical_block_size /sys/block/nbd0/queue/io_timeout
	if port_open 127.0.0.1 10809; then
		why "port 10809 (the default, which dracut's NAME form implies) is taken on this host"
	else
		WANT_PORT=10809 serve start_nbdkit --filter=log file "$IMG" "logfile=$nlog" && {
			boot 6 lg "netroot=nbd:10.0.2.2:rootfs:ext4::bs=4096,timeout=45"
			sys_booted /dev/nbd0
			sys_con_has "$HANDLER_ATTACH" 'network-legacy ran /sbin/nbdroot, which is nbdboot'"'"'s'
			sys_con_has "$ATTACHED\(.*block size 4096, netlink\)" 'attached with 4096-byte blocks'
			sys_con_has '^VMTEST show /sys/block/nbd0/queue/logical_block_size=4096$' 'bs=4096 from NBDOPTS'
			sys_con_has '^VMTEST show /sys/block/nbd0/queue/io_timeout=45000$' 'timeout=45 from NBDOPTS'
			stop_server
			grep -q "Connect export='\?rootfs" "$nlog" || why "nbdkit saw no connection for export rootfs ($nlog)"
			one_attach "$nlog"
		}
	fi
	end_test
}

scen_7() {
	begin "dracut 7: ioctl mode: refused in the systemd flavour; in the shell flavour it boots, warns, and dies in systemd's shutdown"
	SYS_NAME=d7 sys_image flat
	serve start_nbdkit file "$IMG" && {
		# systemd's switch-root would end the holder (SIGSTOP to every process)
		boot_until 7a sd "$EMERGENCY" 300 "root=nbd:10.0.2.2:$PORT:ext4:rw:ioctl"
		sys_con_has '^nbdboot: ioctl mode .*cannot boot dracut.s systemd flavour' 'the module refuses, saying why'
		con_order '^nbdboot: ioctl mode' "$EMERGENCY" 'the reason comes first'
		sys_con_lacks "$ATTACHED" 'nothing attached'
		# the shell flavour's switch_root signals nobody; systemd-shutdown does
		boot_until 7b sh 'block nbd0: .*(shutting down sockets|Receive control failed)|I/O error, dev nbd0|reboot: Power down' 600 \
			"root=nbd:10.0.2.2:$PORT:ext4:rw:ioctl"
		sys_con_has "$ATTACHED\(.*ioctl\)"
		n=$(grep -Ec -- "$IOCTL_WARNING" <<<"$CON")
		[ "$n" = 1 ] || why "$n lines match /$IOCTL_WARNING/, expected 1"
		sys_con_has '^VMTEST root=/dev/nbd0 fstype=ext4 options=rw' 'it booted'
		sys_con_has '^VMTEST resident=[0-9]+:@' "the '@' holder outlived switch_root"
		sys_con_has '^VMTEST data ok' 'the root worked'
		# the limit: the device fails once systemd-shutdown stops every process
		con_order '^VMTEST data ok' 'block nbd0: .*(shutting down sockets|Receive control failed)|I/O error, dev nbd0' \
			'the device fails during shutdown'
	}
	end_test
}

scen_8() {
	begin "dracut 8: failures say why on the console, then dracut's emergency shell, within a minute"
	local port_free
	SYS_NAME=d8 sys_image flat
	pick_port && port_free=$FREE_PORT
	serve start_nbd_server "$(printf '[rootfs]\nexportname = %s\n' "$IMG")" && {
		boot_until 8a sd "$EMERGENCY" 300 "root=nbd://10.0.2.2:$PORT/nosuch"
		sys_con_has '^nbdboot: .*no export named' "the server's reason, in nbdboot's words"
		con_order '^nbdboot: .*no export named' "$EMERGENCY" 'the reason comes first'
		con8a=$CON
		boot_until 8b sd "$EMERGENCY" 300 "root=nbd:10.0.2.2:$port_free:ext4 nbdboot.wait=5"
		sys_con_has '^nbdboot: unable to connect to 10\.0\.2\.2:[0-9]+: Connection refused \(gave up after 5 s' 'no server: nbdboot gives up at nbdboot.wait='
		con_order '^nbdboot: unable to connect' "$EMERGENCY" 'the reason comes first'
		sys_con_lacks "$ATTACHED" 'nothing attached'
	}
	end_test
}

# dhcp_boot N IMAGE ROOTPATH ATTACH-REGEX: boot N of IMAGE with root=dhcp rw
# on a network of its own (sys_dhcp_net) whose DHCP server hands out
# ROOTPATH, nbdkit (log filter) serving a fresh root there; checked with
# sys_booted and one_attach; a failure stops at the emergency shell, not at
# the timeout.  The scenario's own console checks follow (CON).
dhcp_boot() {
	local n=$1 image=$2 nlog=$TESTDIR/nbdkit-$1.log
	SYS_NAME=d$n sys_image flat
	if sys_dhcp_net "$3" && sys_dhcp_serve --filter=log file "$IMG" "logfile=$nlog"; then
		SERVERS+=("${DHCP_PIDS[@]}")
		boot_until "$n" "$image" "reboot: Power down|$EMERGENCY" 600 "root=dhcp rw"
		sys_booted /dev/nbd0
		one_attach "$nlog" "$4"
	fi
	sys_dhcp_net_stop
}

scen_9() {
	begin "dracut 9: systemd flavour, networkd, root=dhcp: the DHCP root-path nbd:SRV:NAME:ext4 (dnsmasq), nbdkit"
	dhcp_boot 9 sd "nbd:$SYS_NET_SRV:rootfs:ext4" '^nbdboot: attached 10\.0\.3\.1:10809 export rootfs to /dev/nbd0 '
	sys_con_has 'dracut: nbdboot: the DHCP root-path is nbd:10\.0\.3\.1:rootfs:ext4' 'the module read the root-path from the lease'
	end_test
}

scen_10() {
	begin "dracut 10: systemd flavour, network-legacy, root=dhcp: the DHCP root-path nbd:SRV:PORT:ext4 (dnsmasq) reaches the netroot handler, nbdkit"
	dhcp_boot 10 lg "nbd:$SYS_NET_SRV:10809:ext4" '^nbdboot: attached 10\.0\.3\.1:10809 to /dev/nbd0 '
	sys_con_has "$HANDLER_ATTACH"'nbd:10\.0\.3\.1:10809:ext4' 'the netroot handler attached what the root-path names'
	end_test
}

# lane N...: scenarios one after another, each in a subshell (its servers
# are stopped when it ends), its output kept for the report
lane() {
	local n
	for n in "$@"; do
		wanted "$n" || continue
		( SERVERS=(); trap 'for s in "${SERVERS[@]}"; do stop_server "$s"; done' EXIT
		  "scen_$n" ) >"$TESTDIR/out-$n" 2>&1
	done
}

# Two lanes at once (two guests, VM slots permitting), balanced by their
# boots' length; the shell-flavour boots (3, 7's second) are the longest and
# do not overlap. The outputs are replayed and counted in number order.
lane 1 4 7 9 &
lane_a=$!
lane 3 8 6 5 10 &
lane_b=$!
wait "$lane_a" "$lane_b"
for n in 1 3 4 5 6 7 8 9 10; do
	wanted "$n" || continue
	o=$(<"$TESTDIR/out-$n")
	echo "$o"
	case $o in *"ok   dracut $n:"*) N_PASS=$((N_PASS + 1)) ;; *) N_FAIL=$((N_FAIL + 1)) ;; esac
done
finish
