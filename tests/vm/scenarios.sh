#!/bin/bash
# scenarios.sh - boot a real kernel (Debian 12, qemu tcg) whose initramfs attaches
# its root filesystem over NBD with `nbdboot --cmdline` and switch_roots into it.
#
# Usage: tests/vm/scenarios.sh [NUMBER...]      (default: all; e.g. "1 6")
# Environment:
#   NBDBOOT        binary under test (default ./nbdboot); RESULTS, VERBOSE as in tests/lib.sh
#   SCEN_CLIENT=ref  check the scenarios themselves against Debian's nbd-client
#                  (tests/vm/guest/refshim.sh stands in for nbdboot in the guest;
#                  nbdboot's own messages are not checked; 7 and 13 then fail:
#                  nbd-client neither names the reason nor gives up; 10 and 12
#                  fail: its TLS needs a resident process; 11 fails: that process
#                  is not marked '@' and the SIGTERM round kills it; 16 fails:
#                  nbd-client does not cap the queue either; 14 runs nbdboot's
#                  own command lines; 6 passes: its ioctl holder dies the same way)
#   SCEN_TIMEOUT   seconds per qemu boot (default 100)
# Console logs are kept in build/vm/scenario-N.log.  Each scenario is one boot:
# the host serves a fresh copy of an ext4 image (tests/vm/mkroot.sh, /sbin/init =
# tests/vm/guest/root-init.sh), the guest runs tests/vm/guest/initrd-nbd.sh, and
# the host checks the console and then the image (tests/vm/extract-file.sh).  A
# scenario whose server did not start, or that did not boot, fails.
#   1 nbdkit file, netlink, dracut root=nbd:10.0.2.2:PORT:ext4; no ioctl-mode warning;
#     persist is the default at boot: one '@' process, the reconnect monitor
#   2 nbd-server, ioctl (nbdboot.ioctl), Debian nbdroot=10.0.2.2:PORT/NAME root=/dev/nbd0
#   3 qemu-nbd, partitioned image, nbdroot=10.0.2.2:PORT/NAME root=/dev/nbd0p1
#   4 server started 6 s after nbdboot began, root=nbd://10.0.2.2:PORT/ nbdboot.wait=60
#   5 read-only export (nbdkit -r), netroot=nbd:... nbdboot.nopersist: mounted
#     read-only, image unchanged, no process left at all
#   6 ioctl mode (dracut's NBDOPTS field: root=nbd:SRV:PORT:ext4:rw:ioctl), then
#     systemd-shutdown's killing (vmtest.root=shutdown in root-init.sh, both rounds:
#     kill(-1, SIGSTOP), SIGTERM or SIGKILL to every process not marked '@',
#     kill(-1, SIGCONT), wait): the SIGSTOP wakes the '@' holder out of NBD_DO_IT
#     (a kernel limit), the holder is gone, the root gives I/O errors and the
#     1 MiB written after it does not read back; nbdboot printed one warning
#     (/^nbdboot: warning: .*ioctl.*systemd/) when it attached with the ioctls
#   7 wrong export name: boot fails with the server's reason, nothing attached
#   8 nbdboot.device=/dev/nbd1 nbdboot.readonly nbdboot.blocksize=1024 nbdboot.timeout=30
#     on a writable export: /dev/nbd1 read-only with 1 KiB blocks, mounted read-only
#   9 netlink mode, then the same systemd-shutdown sequence: the '@' monitor
#     survives it, the root stays usable (1 MiB written after it reads back, and
#     is on the image)
# TLS (nbdkit --tls=require with tests/pki.sh certificates; the initramfs holds
# /etc/nbd-ca.pem, /etc/nbd-other-ca.pem, /etc/nbd-client.pem, /etc/nbd-client-key.pem;
# the server certificate names nbd.test, so nbdboot.tlshostname=nbd.test):
#  10 root=nbds://SRV:PORT/ through kTLS, netlink: no process but the monitor
#  11 the userspace proxy (nbdboot.tls-proxy), netlink, then the systemd-shutdown
#     sequence: the two '@' processes, proxy and monitor, survive it and the
#     root stays usable as in 9
#  12 client certificate required (nbdkit --tls-verify-peer), nbdboot.conns=2
#     in dracut's NBDOPTS field: two TLS connections, kTLS
#  13 wrong CA (other-ca.pem): refused as not trusted, nothing attached, no switch_root
#  15 TLS on a kernel without the tls module: the proxy takes over by itself
# No switch_root:
#  14 tests/vm/guest/kernel-errors.sh against three nbdkit exports: busy device
#     (netlink and ioctl), -c and -d, the ioctl-mode warning (ioctl attach only);
#     -C 2 works where the export advertises CAN_MULTI_CONN and, where it does not,
#     is refused before anything is attached (exit 2, one stderr line naming
#     CAN_MULTI_CONN and -C 1; netlink and ioctl); ioctl mode against a 16 KiB
#     maximum block size (as 16); no nbd driver
# Block sizes:
#  16 nbdkit --filter=blocksize-policy blocksize-maximum=16384
#     blocksize-error-policy=error (larger requests fail with EINVAL), netlink:
#     the queue's max_sectors_kb is 16, a 4 MiB O_DIRECT read of the device in
#     1 MiB requests and a 1 MiB O_DIRECT file write succeed without I/O errors,
#     and the file reads back and is on the image
# Reconnecting (persist, the default at boot; root-init.sh's vmtest.root=load
# writes 30 files of 256 KiB with fsync while the host acts on the server, then
# reads them back after dropping the page cache; the host compares them with
# the image): no I/O error of any kind, every file right in the guest and on
# the image, the monitor's messages on /dev/kmsg
#  17 nbdkit killed (SIGKILL) after the third file, restarted 4 s later, plaintext
#  18 the same over kTLS (a new TLS session handed to the kernel)
#  19 the same through the TLS proxy (a new proxy; afterwards two '@' processes)
#  20 the same with two connections (nbdboot.conns=2): both reconnected
#  21 nbdkit stopped (SIGSTOP) for 15 s with nbdboot.timeout=4: the stall is
#     seen (>= 10 s), no error
#  22 failover: Debian nbdroot= with nbdboot.failover=SRV:PORT2; the first server
#     is killed for good, the second serves the same image file
#  23 tests/vm/guest/reconnect-errors.sh, no switch_root: at boot the first
#     server is down and --failover's is attached (the first named); -L -p
#     warns that the ioctls cannot reconnect; a server of
#     another size on the same port is refused and logged (once) while a read waits,
#     and the image it serves is untouched; the right server again: the read
#     gets what was written; -d ends the monitor; with --dead-timeout 6 and the
#     server gone for good a read fails within 20 s, the monitor says the I/O
#     fails, -d works and the monitor ends
# (no set -u: tests/lib.sh is not written for it)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"     # pass/fail/summary, start_* servers, TESTDIR, cleanup
. "$here/lib.sh"        # die/say/need
T0_ALL=$(date +%s)
LOGDIR=$ROOT/build/vm
mkdir -p "$LOGDIR"
: "${SCEN_TIMEOUT:=100}" "${SCEN_CLIENT:=nbdboot}"
want=" ${*:-1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23} "

finish() {
	echo "tests/vm/scenarios.sh: $N_PASS passed, $N_FAIL failed, $N_SKIP skipped in $(($(date +%s) - T0_ALL)) s (logs: $LOGDIR)"
	[ "$N_FAIL" -eq 0 ]
	exit
}

# ==== Setup: images and one initramfs ========================================

need qemu-system-x86_64 qemu-system-x86
need nbdkit nbdkit
need nbd-server nbd-server
need qemu-nbd qemu-utils
need debugfs e2fsprogs
need file file
need openssl openssl

prep_fail() { fail "vm: setup" "$*"; finish; }

if [ "$SCEN_CLIENT" = ref ]; then
	refadds=$("$here/refclient.sh") || prep_fail "could not stage Debian's nbd-client"
	adds=(--add "$here/guest/refshim.sh:/sbin/nbdboot")
	while read -r a; do adds+=(--add "$a"); done <<<"$refadds"
else
	[ -x "$NBDBOOT" ] || prep_fail "$NBDBOOT not built (run make)"
	file -L "$NBDBOOT" | grep -q 'statically linked' || prep_fail "$NBDBOOT is not a static binary"
	echo "root=nbd:10.0.2.2:10809:ext4" >"$TESTDIR/probe.cmdline"
	"$NBDBOOT" --cmdline "$TESTDIR/probe.cmdline" --print-env >/dev/null 2>&1 ||
		prep_fail "$NBDBOOT --cmdline FILE --print-env does not work: $("$NBDBOOT" --cmdline "$TESTDIR/probe.cmdline" --print-env 2>&1 | head -n1)"
	adds=(--add "$NBDBOOT:/sbin/nbdboot")
fi
adds+=(--add "$here/guest/kernel-errors.sh:/kernel-errors.sh")
adds+=(--add "$here/guest/reconnect-errors.sh:/reconnect-errors.sh")
# Test PKI, made now: valid from a day ago, so the guest clock must be right
# (vmtest.epoch= lets the guest set it if it is behind; see initrd-nbd.sh).
PKI=$TESTDIR/pki
"$here/../pki.sh" "$PKI" 2>"$TESTDIR/pki.log" || prep_fail "tests/pki.sh failed: $(tail -n3 "$TESTDIR/pki.log")"
adds+=(--add "$PKI/ca.pem:/etc/nbd-ca.pem" --add "$PKI/other-ca.pem:/etc/nbd-other-ca.pem"
	--add "$PKI/client.pem:/etc/nbd-client.pem" --add "$PKI/client-key.pem:/etc/nbd-client-key.pem")
# the default module list: nbd e1000 ext4 and tls with its AES-GCM/ChaCha20 crypto
"$here/mkinitramfs.sh" "$TESTDIR/initrd.gz" --init "$here/guest/initrd-nbd.sh" "${adds[@]}" \
	2>"$TESTDIR/mkinitramfs.log" ||
	prep_fail "mkinitramfs.sh failed: $(tail -n3 "$TESTDIR/mkinitramfs.log")"
"$here/mkroot.sh" "$TESTDIR/flat.img" --init "$here/guest/root-init.sh" 2>"$TESTDIR/mkroot.log" &&
	"$here/mkroot.sh" "$TESTDIR/part.img" --partitioned --init "$here/guest/root-init.sh" 2>>"$TESTDIR/mkroot.log" ||
	prep_fail "mkroot.sh failed: $(tail -n3 "$TESTDIR/mkroot.log")"
echo "vm: initramfs and root images ready ($SCEN_CLIENT in the guest, $(($(date +%s) - T0_ALL)) s)"

# ==== Helpers =================================================================

# fresh_image flat|part: IMG = a private copy of the template image.
fresh_image() {
	IMG=$TESTDIR/$1-$N.img
	cp --sparse=always "$TESTDIR/$1.img" "$IMG"
	IMG_SUM=$(sha256sum <"$IMG")
}

# vm_boot APPEND...: boot, console (CR stripped) in CON; VM_RC is qemu's status.
# The log goes to build/vm/scenario-N.log.
vm_boot_start() {
	LOG=$LOGDIR/scenario-$N.log
	: >"$LOG"
	TOKEN=t$RANDOM$RANDOM
	"$here/boot.sh" --initrd "$TESTDIR/initrd.gz" --timeout "$SCEN_TIMEOUT" --log "$LOG" \
		--append "quiet vmtest.token=$TOKEN $*" >/dev/null 2>"$LOG.stderr" &
	VM_PID=$!
}
vm_boot_wait() {
	wait "$VM_PID"
	VM_RC=$?
	CON=$(tr -d '\r' <"$LOG")
	[ "$VM_RC" != 124 ] || why "qemu killed at the ${SCEN_TIMEOUT}s timeout"
}
vm_boot() { vm_boot_start "$@"; vm_boot_wait; }

con_has() {  # con_has REGEX [WHAT]
	grep -Eq -- "$1" <<<"$CON" && return 0
	why "console lacks /$1/${2:+ ($2)}"
	return 1
}
con_lacks() {
	local l
	l=$(grep -Em1 -- "$1" <<<"$CON") || return 0
	why "console has '$l'${2:+ ($2)}"
	return 1
}
var_is() {  # var_is NAME VALUE: what the guest saw after eval of --print-env
	con_has "^NBD-VAR $1=$2\$" "--print-env"
}
image_has_token() {  # image_has_token [--partitioned]
	local got
	got=$("$here/extract-file.sh" "$IMG" /root-ok "$@" 2>&1)
	[ "$got" = "NBDBOOT-ROOT-OK $TOKEN" ] && return 0
	why "image /root-ok is '$got', expected 'NBDBOOT-ROOT-OK $TOKEN'"
}
image_unchanged() {
	[ "$(sha256sum <"$IMG")" = "$IMG_SUM" ] || why "the image changed"
}
attach_secs() {  # seconds from NBD-ATTACH-BEGIN to NBD-ATTACH-END (guest uptime)
	local b e
	b=$(sed -n 's/^NBD-ATTACH-BEGIN uptime=\([0-9.]*\).*/\1/p' <<<"$CON" | head -n1)
	e=$(sed -n 's/^NBD-ATTACH-END rc=[0-9]* uptime=\([0-9.]*\).*/\1/p' <<<"$CON" | head -n1)
	[ -n "$b" ] && [ -n "$e" ] && awk -v b="$b" -v e="$e" 'BEGIN { printf "%.1f\n", e - b }'
}
scenario() {  # scenario N NAME: returns 1 if not selected
	N=$1
	case $want in *" $1 "*) ;; *) return 1 ;; esac
	begin "vm $1: $2"
	echo "---- vm $1: $2"
	CON= LOG=$LOGDIR/scenario-$N.log
	SERVERS=()
}
# serve START ARGS...: start a server with tests/lib.sh's START function
# (start_nbdkit, start_nbd_server, start_qemu_nbd); one that does not come up
# fails the scenario.  done_scenario stops every server started this way.
serve() {
	if ! "$@"; then
		why "${1#start_} did not start (its log is above)"
		return 1
	fi
	SERVERS+=("$SERVER_PID")
}
stop_servers() {
	local p
	for p in "${SERVERS[@]}"; do stop_server "$p"; done
	SERVERS=()
}
# done_scenario: a scenario that never booted (no console) fails, whatever
# else it checked
done_scenario() {
	local a
	[ -n "$CON" ] || why "no boot: the console is empty"
	a=$(attach_secs) && echo "     attach took ${a} s of guest time"
	if ! end_test; then
		echo "     console excerpt ($LOG):"
		grep -E '^(NBD-|ROOT-|KE-|INIT|nbdboot|nbd-client|Kernel panic|EXT4-fs (error|warning)|block nbd|mount:|switch_root)|nbd[0-9]' <<<"$CON" |
			grep -v '^NBD-ENV' | tail -n 25 | sed 's/^/     | /'
	fi
	stop_servers
}
# TLS: nbdkit options for a TLS-only export, and the boot words for the CA
TLS_SRV=(--tls=require "--tls-certificates=$PKI/nbdkit")
tls_boot() { echo "vmtest.epoch=$(date +%s) nbdboot.cacert=/etc/nbd-${1:-}ca.pem nbdboot.tlshostname=nbd.test"; }
ours() { [ "$SCEN_CLIENT" = nbdboot ]; }  # checks of nbdboot's own messages
# refused_boot [REASON WHAT]: the attach failed at once (no retrying), with
# REASON on the console; nothing is attached, no root reached, image untouched
refused_boot() {
	con_has '^NBD-ATTACH-END rc=[1-9]' 'nbdboot --cmdline must fail'
	[ -z "${1:-}" ] || con_has "^nbdboot: .*$1" "$2"
	con_has '^NBD-CHECK rc=1' 'nbdboot -c /dev/nbd0 says not connected'
	con_has '^NBD-SYSFS size=0 pid=none'
	con_lacks '^NBD-READY|^ROOT-|switch_root' 'no root reached'
	a=$(attach_secs) && awk -v a="$a" 'BEGIN { exit !(a < 10) }' ||
		why "failing took ${a:-?} s; a refusal is not worth retrying"
	image_unchanged
}
nbd_server_conf() {  # nbd_server_conf NAME FILE [EXTRA LINES]
	printf '[%s]\nexportname = %s\n%s' "$1" "$2" "${3:-}"
}
# The one line nbdboot prints on stderr when it attaches with the ioctls
IOCTL_WARNING='^nbdboot: warning: .*ioctl.*systemd'
no_ioctl_warning() { ours && con_lacks "$IOCTL_WARNING" 'no ioctl-mode warning in netlink mode'; }
# shutdown_ran: root-init.sh's vmtest.root=shutdown ran both of
# systemd-shutdown's rounds and the victim it started died
shutdown_ran() {
	con_has '^ROOT-KILL TERM: [0-9]' 'the TERM round found the victim'
	con_has '^ROOT-KILL KILL:' 'the KILL round ran'
	con_has '^ROOT-VICTIM-GONE' 'the killing works'
}
# survived_shutdown HOLDERS: after the shutdown sequence the '@' processes are
# HOLDERS ("none" or pids), nothing else is left, and the 1 MiB written after
# it reads back the same from the device (page cache dropped) and from the image
survived_shutdown() {
	local sum got
	shutdown_ran
	con_has "^ROOT-AFTER-KILL holders: $1 others: none\$" "'@' processes after the sequence: $1"
	con_lacks 'I/O error|EXT4-fs error' 'no I/O errors after the sequence'
	sum=$(sed -n 's/^ROOT-READBACK-OK \([0-9a-f]*\)$/\1/p' <<<"$CON")
	if [ -z "$sum" ]; then
		why "no ROOT-READBACK-OK after the shutdown sequence"
		return
	fi
	got=$("$here/extract-file.sh" "$IMG" /shutdown-data 2>/dev/null | md5sum | cut -d' ' -f1)
	[ "$got" = "$sum" ] || why "image /shutdown-data md5 $got, guest wrote $sum"
}

# -- reconnecting: the guest's load (root-init.sh vmtest.root=load) runs
# while the host does something to the server
# wait_console REGEX SECONDS: until the console has a line matching REGEX
wait_console() {
	local i
	for i in $(seq $(($2 * 5))); do
		grep -aEq -- "$1" "$LOG" && return 0
		kill -0 "$VM_PID" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}
# once the guest has written 3 files: outage kill SECS START_FN ARGS... kills
# the last server (SIGKILL) and SECS later starts START_FN ARGS on its port;
# outage stop SECS stops it (SIGSTOP) for SECS; outage gone kills it for good.
# For bench/reconnect it writes $LOG.outage: stall_ms=, the host's time from
# the server taking connections again (or SIGCONT) to the guest's next
# ROOT-LOAD line on the console (polled every 50 ms)
outage() {
	local how=$1 secs=$2 pid=${SERVERS[-1]} port=$PORT t_up n0 i
	shift 2
	rm -f "$LOG.outage"
	if ! wait_console '^ROOT-LOAD 3 ' 150; then
		why "the guest's load did not start"
		return 1
	fi
	case $how in
	stop) kill -STOP "$pid"; sleep "$secs"; kill -CONT "$pid" ;;
	kill | gone)
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null
		[ "$how" = gone ] && return 0
		sleep "$secs"
		WANT_PORT=$port serve "$@" || return 1 ;;
	esac
	t_up=$(date +%s%3N)
	n0=$(grep -ac '^ROOT-LOAD [0-9]' "$LOG")
	for i in $(seq 2400); do
		[ "$(grep -ac '^ROOT-LOAD [0-9]' "$LOG")" -gt "$n0" ] && break
		kill -0 "$VM_PID" 2>/dev/null || return 0
		sleep 0.05
	done
	echo "stall_ms=$(($(date +%s%3N) - t_up))" >"$LOG.outage"
}
# load_survived N: the load wrote N files with no error of any kind, all read
# back right after dropping the page cache, and the image has every one
load_survived() {
	local i sum got bad=""
	con_has "^ROOT-LOAD-CHECK ok n=$1\$" "all $1 files written and read back"
	con_lacks 'I/O error|EXT4-fs (error|warning)|Buffer I/O|ROOT-LOAD-ERROR|blk_update_request|remounting' 'no I/O errors'
	while read -r i sum; do
		got=$("$here/extract-file.sh" "$IMG" "/load/f$i" 2>/dev/null | md5sum | cut -d' ' -f1)
		[ "$got" = "$sum" ] || bad="$bad $i"
	done < <(sed -n 's/^ROOT-LOAD \([0-9]*\) \([0-9a-f]*\) .*/\1 \2/p' <<<"$CON")
	[ -z "$bad" ] || why "files on the image differ from what the guest wrote:$bad"
	ours && con_has "^nbdboot: attached .* to /dev/nbd0 \(.*\); it reconnects by itself \(monitor [0-9]+" 'the monitor started'
	con_has '^ROOT-HOLDERS [0-9]+' "the monitor is a '@' process after switch_root"
}
# load_restart APPEND ARGS...: nbdkit ARGS serves the root; boot with APPEND
# (a literal $PORT in it: the server's port) and the load, the server killed
# after the third file and started again 4 s later on its port; fails when the
# server did not start
load_restart() {
	local append=$1
	shift
	serve start_nbdkit "$@" || return 1
	vm_boot_start "${append//'$PORT'/$PORT} vmtest.root=load"
	outage kill 4 start_nbdkit "$@"
	vm_boot_wait
}
reconnected() {  # reconnected [SERVER-REGEX]: the monitor said so on /dev/kmsg
	ours || return 0
	con_has "^ROOT-DMESG .*nbdboot: lost a connection of /dev/nbd0" 'the monitor saw the loss'
	con_has "^ROOT-DMESG .*nbdboot: /dev/nbd0 reconnected to ${1:-10\.0\.2\.2:[0-9]+}" 'the monitor reconnected'
}

# ==== Scenarios ===============================================================

if scenario 1 "nbdkit, netlink, dracut root=nbd:SRV:PORT:ext4"; then
	fresh_image flat
	serve start_nbdkit file "$IMG" && {
		vm_boot "root=nbd:10.0.2.2:$PORT:ext4"
		var_is NBD_ROOT /dev/nbd0; var_is NBD_FSTYPE ext4; var_is NBD_METHOD netlink
		var_is NBD_PORT "$PORT"; var_is NBD_READONLY 0
		con_has '^NBD-ATTACH-END rc=0' && con_has '^NBD-CHECK rc=0' 'nbdboot -c after attach'
		con_has '^NBD-MOUNTED /dev/nbd0 /newroot ext4 rw'
		ours && con_has '^NBD-HOLDERS [0-9]+$' "one '@' process: the reconnect monitor"
		ours && con_has '^nbdboot: attached .*; it reconnects by itself' 'persist is the default at boot'
		no_ioctl_warning
		con_has "^ROOT-MARKER pid=1 root=/dev/nbd0 rw" && con_has "^ROOT-WROTE $TOKEN"
		image_has_token
	}
	done_scenario
fi

if scenario 2 "nbd-server, ioctl, Debian nbdroot=SRV:PORT/NAME root=/dev/nbd0"; then
	fresh_image flat
	serve start_nbd_server "$(nbd_server_conf rootfs "$IMG")" && {
		vm_boot "nbdroot=10.0.2.2:$PORT/rootfs root=/dev/nbd0 nbdboot.ioctl"
		var_is NBD_EXPORT rootfs; var_is NBD_ROOT /dev/nbd0; var_is NBD_METHOD ioctl
		con_has '^NBD-ATTACH-END rc=0' && con_has '^NBD-CHECK rc=0' 'nbdboot -c after attach'
		con_has '^NBD-MOUNTED /dev/nbd0 /newroot ext4 rw'
		con_has '^NBD-HOLDERS [0-9]' "a resident '@' process in ioctl mode"
		con_has '^ROOT-HOLDER [0-9]+ @' "the '@' holder survived switch_root"
		con_has "^ROOT-WROTE $TOKEN"
		image_has_token
	}
	done_scenario
fi

if scenario 3 "qemu-nbd, partitioned image, nbdroot=SRV:PORT/NAME root=/dev/nbd0p1"; then
	fresh_image part
	serve start_qemu_nbd part "$IMG" && {
		vm_boot "nbdroot=10.0.2.2:$PORT/part root=/dev/nbd0p1"
		var_is NBD_EXPORT part; var_is NBD_DEVICE /dev/nbd0; var_is NBD_ROOT /dev/nbd0p1
		con_has '^NBD-ATTACH-END rc=0'
		con_has '^NBD-DEV /dev/nbd0p1 present=yes size=65536 ' 'partition 1 of 32 MiB seen at once'
		con_has '^NBD-MOUNTED /dev/nbd0p1 /newroot ext4 rw'
		con_has "^ROOT-MARKER pid=1 root=/dev/nbd0p1 rw" && con_has "^ROOT-WROTE $TOKEN"
		image_has_token --partitioned
	}
	done_scenario
fi

if scenario 4 "server up 6 s after nbdboot starts, root=nbd://SRV:PORT/ nbdboot.wait=60"; then
	fresh_image flat
	if pick_port; then
		late_port=$FREE_PORT
		vm_boot_start "root=nbd://10.0.2.2:$late_port/ nbdboot.wait=60"
		for _ in $(seq $((SCEN_TIMEOUT * 5))); do
			grep -aq '^NBD-ATTACH-BEGIN' "$LOG" && break
			kill -0 "$VM_PID" 2>/dev/null || break
			sleep 0.2
		done
		if grep -aq '^NBD-ATTACH-BEGIN' "$LOG"; then
			sleep 6
			WANT_PORT=$late_port serve start_nbdkit file "$IMG"
		fi
		vm_boot_wait
		var_is NBD_PORT "$late_port"; var_is NBD_ROOT /dev/nbd0
		con_has '^NBD-ATTACH-END rc=0'
		a=$(attach_secs) && awk -v a="$a" 'BEGIN { exit !(a >= 4) }' ||
			why "attach took ${a:-?} s, expected >= 4 s (did it really wait for the server?)"
		con_has '^NBD-MOUNTED /dev/nbd0 /newroot ext4 rw'
		con_has "^ROOT-WROTE $TOKEN"
		image_has_token
	else
		why "no free port for the late server"
	fi
	done_scenario
fi

if scenario 5 "read-only export (nbdkit -r), netroot=nbd:SRV:PORT:ext4"; then
	fresh_image flat
	serve start_nbdkit -r file "$IMG" && {
		vm_boot "netroot=nbd:10.0.2.2:$PORT:ext4 nbdboot.nopersist"
		var_is NBD_FSTYPE ext4
		con_has '^NBD-HOLDERS none$' 'nbdboot.nopersist: no monitor, no process at all'
		con_has '^NBD-ATTACH-END rc=0'
		con_has '^NBD-DEV /dev/nbd0 present=yes size=65536 ro=1 ' 'the device is read-only'
		con_has '^NBD-MOUNTED /dev/nbd0 /newroot ext4 ro'
		con_has '^ROOT-MARKER pid=1 root=/dev/nbd0 ro'
		con_has '^ROOT-CANNOT-WRITE' && con_lacks '^ROOT-WROTE'
		con_lacks 'EXT4-fs error|I/O error|blk_update_request' 'no write reached the read-only export'
		image_unchanged
	}
	done_scenario
fi

if scenario 6 "ioctl mode: systemd-shutdown's SIGSTOP ends the holder; nbdboot warns"; then
	# The kernel's limit, not nbdboot's: a task in NBD_DO_IT is woken by any
	# signal, SIGSTOP included, and the driver then shuts the socket down.
	# systemd-shutdown stops every process, '@' or not, before each round.
	fresh_image flat
	serve start_nbdkit file "$IMG" && {
		vm_boot "root=nbd:10.0.2.2:$PORT:ext4:rw:ioctl vmtest.root=shutdown"
		var_is NBD_METHOD ioctl
		con_has '^NBD-ATTACH-END rc=0'
		if ours; then
			n=$(grep -Ec -- "$IOCTL_WARNING" <<<"$CON")
			[ "$n" = 1 ] || why "$n lines match /$IOCTL_WARNING/, expected one warning at attach time"
		fi
		con_has "^ROOT-WROTE $TOKEN" 'the root worked before the sequence'
		image_has_token
		holder=$(sed -n 's/^ROOT-HOLDER \([0-9]*\) @.*/\1/p' <<<"$CON")
		[ -n "$holder" ] || why "no '@' holder after switch_root"
		shutdown_ran
		# '@' processes only ever get SIGSTOP and SIGCONT (root-init.sh's
		# broadcast); how soon the holder exits after that is its own business
		con_has "^ROOT-KILL TERM: [0-9 ]+ \(spared: $holder\)" 'the holder was there, spared by SIGTERM'
		con_has '^ROOT-AFTER-KILL holders: none ' 'the holder is gone after the sequence'
		con_has 'I/O error, dev nbd0' 'the device fails after the sequence'
		con_has '^ROOT-READBACK-BAD|^ROOT-SHUTDOWN-WRITE-FAILED' 'the 1 MiB written after it does not read back'
		con_lacks '^ROOT-READBACK-OK'
		wrote=$(sed -n 's/^ROOT-READBACK-BAD wrote=\([0-9a-f]*\) .*/\1/p' <<<"$CON")
		if [ -n "$wrote" ]; then
			got=$("$here/extract-file.sh" "$IMG" /shutdown-data 2>/dev/null | md5sum | cut -d' ' -f1)
			[ "$got" != "$wrote" ] || why "image /shutdown-data has what the guest wrote after the sequence"
		fi
	}
	done_scenario
fi

if scenario 7 "wrong export name fails with the server's reason, nothing attached"; then
	fresh_image flat
	serve start_nbd_server "$(nbd_server_conf rootfs "$IMG")" && {
		vm_boot "nbdroot=10.0.2.2:$PORT/nosuch root=/dev/nbd0 nbdboot.wait=20"
		refused_boot 'no export named' "the server's reason on the console"
	}
	done_scenario
fi

if scenario 8 "nbdboot.device/readonly/blocksize/timeout, nbdroot=SRV:PORT/ root=/dev/nbd1"; then
	# blocksize 1024: the test root is ext4 with 1 KiB blocks (mkfs default for
	# 32 MB), and a partition table in 512-byte sectors would not survive it
	fresh_image flat
	serve start_nbdkit file "$IMG" && {
		vm_boot "nbdroot=10.0.2.2:$PORT/ root=/dev/nbd1 nbdboot.device=/dev/nbd1 nbdboot.readonly nbdboot.blocksize=1024 nbdboot.timeout=30"
		var_is NBD_DEVICE /dev/nbd1; var_is NBD_ROOT /dev/nbd1; var_is NBD_READONLY 1
		con_has '^NBD-ATTACH-END rc=0'
		con_has '^NBD-DEV /dev/nbd1 present=yes size=65536 ro=1 .* bs=1024$' 'read-only, 1024-byte blocks'
		con_has '^NBD-MOUNTED /dev/nbd1 /newroot ext4 ro'
		con_has '^ROOT-MARKER pid=1 root=/dev/nbd1 ro' && con_has '^ROOT-CANNOT-WRITE'
		image_unchanged
	}
	done_scenario
fi

if scenario 9 "netlink mode and its monitor survive systemd-shutdown's killing (SIGSTOP/SIGCONT to all)"; then
	fresh_image flat
	serve start_nbdkit file "$IMG" && {
		vm_boot "root=nbd:10.0.2.2:$PORT:ext4 vmtest.root=shutdown"
		var_is NBD_METHOD netlink
		con_has '^NBD-ATTACH-END rc=0'
		no_ioctl_warning
		monitor=$(sed -n 's/^ROOT-HOLDERS \([0-9]*\)$/\1/p' <<<"$CON")
		ours && { [ -n "$monitor" ] || why "not exactly one '@' process (the monitor) after switch_root"; }
		con_has "^ROOT-WROTE $TOKEN"
		image_has_token
		survived_shutdown "${monitor:-none}"
	}
	done_scenario
fi

if scenario 10 "TLS: root=nbds://SRV:PORT/ through kTLS, netlink, no process but the monitor"; then
	fresh_image flat
	serve start_nbdkit "${TLS_SRV[@]}" file "$IMG" && {
		vm_boot "root=nbds://10.0.2.2:$PORT/ $(tls_boot)"
		var_is NBD_TLS 1; var_is NBD_METHOD netlink
		con_has '^NBD-CLOCK ok' 'the guest clock is right (certificate dates)'
		con_has '^NBD-ATTACH-END rc=0' && con_has '^NBD-CHECK rc=0' 'nbdboot -c after attach'
		ours && con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 \(.*netlink, kTLS\)' 'the kernel carries TLS'
		ours && con_has '^NBD-RESIDENT [0-9]+:@bdboot$' 'kTLS: only the monitor stays, no proxy'
		con_has '^NBD-MOUNTED /dev/nbd0 /newroot ext4 rw'
		con_has "^ROOT-MARKER pid=1 root=/dev/nbd0 rw" && con_has "^ROOT-WROTE $TOKEN"
		con_lacks 'I/O error|EXT4-fs error|tls.*(error|fail)' 'no I/O errors over kTLS'
		image_has_token
	}
	done_scenario
fi

if scenario 11 "TLS via the proxy, netlink, survives systemd-shutdown's killing"; then
	fresh_image flat
	serve start_nbdkit "${TLS_SRV[@]}" file "$IMG" && {
		vm_boot "root=nbds://10.0.2.2:$PORT/ $(tls_boot) nbdboot.tls-proxy vmtest.root=shutdown"
		var_is NBD_TLS 1; var_is NBD_METHOD netlink
		con_has '^NBD-CLOCK ok' 'the guest clock is right (certificate dates)'
		con_has '^NBD-ATTACH-END rc=0'
		ours && con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 \(.*netlink, TLS via proxy\)' 'TLS through the proxy'
		ours && con_lacks 'kTLS\)' 'nbdboot.tls-proxy must not use kTLS'
		no_ioctl_warning
		con_has '^NBD-HOLDERS [0-9]+ [0-9]+$' "two '@' processes: the proxy and the monitor"
		holders=$(sed -n 's/^ROOT-HOLDERS \([0-9]* [0-9]*\)$/\1/p' <<<"$CON")
		[ -n "$holders" ] || why "not exactly two '@' processes (proxy, monitor) after switch_root"
		con_has "^ROOT-WROTE $TOKEN"
		image_has_token
		survived_shutdown "${holders:-none}"
	}
	done_scenario
fi

if scenario 12 "TLS with a client certificate, two connections (dracut NBDOPTS), kTLS"; then
	fresh_image flat
	nlog=$TESTDIR/nbdkit-12.log
	serve start_nbdkit "${TLS_SRV[@]}" --tls-verify-peer --filter=log file "$IMG" "logfile=$nlog" && {
		vm_boot "root=nbd:10.0.2.2:$PORT:ext4:rw:tls,conns=2,cert=/etc/nbd-client.pem,key=/etc/nbd-client-key.pem $(tls_boot)"
		var_is NBD_TLS 1; var_is NBD_METHOD netlink; con_has "^NBD-ENV NBD_CONNECTIONS='2'"
		con_has '^NBD-CLOCK ok' 'the guest clock is right (certificate dates)'
		con_has '^NBD-ATTACH-END rc=0'
		ours && con_has '^nbdboot: attached .*/dev/nbd0 \(.*netlink, kTLS\)' 'the kernel carries TLS'
		ours && con_has '^NBD-RESIDENT [0-9]+:@bdboot$' 'kTLS: only the monitor stays'
		con_has "^ROOT-MARKER pid=1 root=/dev/nbd0 rw" && con_has "^ROOT-WROTE $TOKEN"
		con_lacks 'I/O error|EXT4-fs error' 'no I/O errors over kTLS'
		image_has_token
		# connections the server saw over TLS that lived until the guest powered off
		stop_servers
		n=$(grep -c 'Connect export=.* tls=1' "$nlog" 2>/dev/null)
		[ "${n:-0}" -ge 2 ] || why "nbdkit saw ${n:-0} TLS connections, expected 2 ($nlog)"
		grep -q 'tls=0' "$nlog" 2>/dev/null && why "nbdkit saw a connection without TLS"
	}
	done_scenario
fi

if scenario 13 "TLS with the wrong CA is refused: not trusted, nothing attached"; then
	fresh_image flat
	serve start_nbdkit "${TLS_SRV[@]}" file "$IMG" && {
		vm_boot "root=nbds://10.0.2.2:$PORT/ $(tls_boot other-) nbdboot.wait=20"
		if ours; then refused_boot 'not trusted' 'the reason on the console'; else refused_boot; fi
	}
	done_scenario
fi

if scenario 15 "TLS on a kernel without kTLS falls back to the proxy by itself"; then
	fresh_image flat
	serve start_nbdkit "${TLS_SRV[@]}" file "$IMG" && {
		vm_boot "root=nbds://10.0.2.2:$PORT/ rootfstype=ext4 vmtest.notls $(tls_boot)"
		con_has '^NBD-NOTLS ok' 'the tls module was removed'
		con_has '^NBD-ATTACH-END rc=0'
		ours && con_has '^nbdboot: attached .*/dev/nbd0 \(.*netlink, TLS via proxy\)' 'the proxy took over'
		con_has "^ROOT-MARKER pid=1 root=/dev/nbd0 rw" && con_has "^ROOT-WROTE $TOKEN"
		con_lacks 'I/O error|EXT4-fs error' 'no I/O errors through the proxy'
		image_has_token
	}
	done_scenario
fi

if scenario 16 "the server's maximum block size (16 KiB, larger refused) is honoured"; then
	# nbdkit refuses (EINVAL) any request over the maximum it advertises; the
	# nbd driver's queue sends up to 128 KiB at once (max_sectors_kb) by default
	fresh_image flat
	serve start_nbdkit --filter=blocksize-policy file "$IMG" \
		blocksize-maximum=16384 blocksize-error-policy=error && {
		vm_boot "root=nbd:10.0.2.2:$PORT:ext4 vmtest.root=bigio"
		var_is NBD_METHOD netlink
		con_has '^NBD-ATTACH-END rc=0'
		con_has '^ROOT-MAX-SECTORS-KB 16$' 'the queue capped at the 16 KiB maximum'
		con_has '^ROOT-BIGREAD rc=0' '4 MiB O_DIRECT read of the device in 1 MiB requests'
		con_has '^ROOT-BIGWRITE rc=0' '1 MiB O_DIRECT write to a file'
		con_lacks 'I/O error|Other side returned error|EXT4-fs error' 'no request over the maximum'
		con_has "^ROOT-WROTE $TOKEN"
		image_has_token
		sum=$(sed -n 's/^ROOT-BIGIO-READBACK-OK \([0-9a-f]*\)$/\1/p' <<<"$CON")
		if [ -n "$sum" ]; then
			got=$("$here/extract-file.sh" "$IMG" /bigio-data 2>/dev/null | md5sum | cut -d' ' -f1)
			[ "$got" = "$sum" ] || why "image /bigio-data md5 $got, guest wrote $sum"
		else
			why "no ROOT-BIGIO-READBACK-OK"
		fi
	}
	done_scenario
fi

if scenario 14 "kernel refusals: busy device (netlink, ioctl), no nbd driver, -C 2 without multi-conn; -c and -d"; then
	fresh_image flat
	serve start_nbdkit file "$IMG" && port=$PORT &&
		serve start_nbdkit --filter=multi-conn file "$IMG" multi-conn-mode=disable && port_nomc=$PORT &&
		serve start_nbdkit --filter=blocksize-policy file "$IMG" \
			blocksize-maximum=16384 blocksize-error-policy=error && {
		vm_boot "vmtest.kerrors vmtest.port=$port vmtest.port-nomc=$port_nomc vmtest.port-max16k=$PORT"
		con_has '^KE-FIRST rc=0 nbdboot: attached'
		if ours; then
			con_has '^KE-BUSY-NETLINK rc=3 nbdboot: /dev/nbd0 is busy .*nbdboot -d /dev/nbd0' 'EBUSY explained'
			con_has '^KE-BUSY-IOCTL rc=3 nbdboot: /dev/nbd0 is busy' 'EBUSY explained (ioctl)'
			con_has '^KE-CHECK rc=0 [0-9]+' '-c prints the pid'
			con_has '^KE-STILL-READS  ?53 ef' 'the refused attaches left the first one working'
			con_has '^KE-DISCONNECT rc=0'
			con_has '^KE-CHECK-AFTER rc=1 nbdboot: /dev/nbd0 is not connected'
			con_has '^KE-FIRST-IOCTL rc=0 nbdboot: attached .*ioctl'
			con_has "^KE-FIRST-IOCTL-WARNING ${IOCTL_WARNING#^}" 'ioctl attach warns about systemd'
			con_lacks '^KE-FIRST-WARNING' 'netlink attach does not warn'
			con_has '^KE-BUSY2-IOCTL rc=3 nbdboot: /dev/nbd1 is busy' 'EBUSY against an ioctl holder'
			con_has '^KE-BUSY2-NETLINK rc=3 nbdboot: /dev/nbd1 is busy' 'EBUSY against an ioctl holder (netlink)'
			con_has '^KE-STILL-READS2  ?53 ef' 'the ioctl-mode device still works'
			con_has '^KE-DISCONNECT2 rc=0'
			con_has '^KE-MULTICONN rc=0 nbdboot: attached' '-C 2 where the export advertises CAN_MULTI_CONN'
			con_has '^KE-NO-MULTICONN rc=2 lines=1 nbdboot: .*CAN_MULTI_CONN.*-C 1' '-C 2 without CAN_MULTI_CONN refused, one line'
			con_has '^KE-NO-MULTICONN-CHECK rc=1 nbdboot: /dev/nbd0 is not connected' 'nothing attached'
			con_has '^KE-NO-MULTICONN-IOCTL rc=2 lines=1 nbdboot: .*CAN_MULTI_CONN.*-C 1' 'the same with the ioctls'
			con_has '^KE-NO-MULTICONN-IOCTL-CHECK rc=1 nbdboot: /dev/nbd0 is not connected' 'nothing attached (ioctl)'
			con_has '^KE-MAX16K-IOCTL rc=0 nbdboot: attached .*ioctl'
			con_has '^KE-MAX16K-MAX-SECTORS-KB 16$' 'ioctl mode caps the queue at the 16 KiB maximum'
			con_has '^KE-MAX16K-READ rc=0' '4 MiB O_DIRECT read in 1 MiB requests'
			con_has '^KE-MAX16K-WRITE rc=0' '1 MiB O_DIRECT write'
			con_has '^KE-MAX16K-REFUSED 0$' 'no request over the maximum'
			con_has '^KE-MAX16K-DISCONNECT rc=0'
			con_has '^KE-RMMOD ok'
			con_has '^KE-NO-DRIVER rc=3 nbdboot: no nbd driver .*modprobe nbd' 'no module explained'
			con_has '^KE-NO-DRIVER-IOCTL rc=3 nbdboot: no nbd driver'
		fi
	}
	done_scenario
fi

if scenario 17 "reconnect: the server is killed under a write load, restarted 4 s later"; then
	fresh_image flat
	load_restart "root=nbd:10.0.2.2:\$PORT:ext4" file "$IMG" && {
		var_is NBD_METHOD netlink
		load_survived 30
		reconnected
	}
	done_scenario
fi

if scenario 18 "reconnect over kTLS: the server killed under load and restarted"; then
	fresh_image flat
	load_restart "root=nbds://10.0.2.2:\$PORT/ rootfstype=ext4 $(tls_boot)" "${TLS_SRV[@]}" file "$IMG" && {
		ours && con_has '^nbdboot: attached .*/dev/nbd0 \(.*netlink, kTLS\)' 'the kernel carries TLS'
		load_survived 30
		reconnected
	}
	done_scenario
fi

if scenario 19 "reconnect through the TLS proxy: the server killed under load and restarted"; then
	fresh_image flat
	load_restart "root=nbds://10.0.2.2:\$PORT/ rootfstype=ext4 $(tls_boot) nbdboot.tls-proxy" \
		"${TLS_SRV[@]}" file "$IMG" && {
		ours && con_has '^nbdboot: attached .*/dev/nbd0 \(.*netlink, TLS via proxy\)' 'TLS through the proxy'
		load_survived 30
		reconnected
		con_has '^ROOT-AFTER-LOAD holders: [0-9]+ [0-9]+$' "two '@' processes after it: the monitor and one proxy"
	}
	done_scenario
fi

if scenario 20 "reconnect with two connections: both killed under load, both restored"; then
	fresh_image flat
	load_restart "root=nbd:10.0.2.2:\$PORT:ext4:rw:conns=2" file "$IMG" && {
		con_has "^NBD-ENV NBD_CONNECTIONS='2'"
		load_survived 30
		reconnected
		n=$(grep -c 'ROOT-DMESG .*nbdboot: /dev/nbd0 reconnected' <<<"$CON")
		[ "$n" = 2 ] || why "$n reconnections, expected 2 (one per connection)"
	}
	done_scenario
fi

if scenario 21 "a server stopped (SIGSTOP) for 15 s, longer than the 4 s request timeout"; then
	fresh_image flat
	serve start_nbdkit file "$IMG" && {
		vm_boot_start "root=nbd:10.0.2.2:$PORT:ext4 nbdboot.timeout=4 vmtest.root=load"
		outage stop 15
		vm_boot_wait
		load_survived 30
		reconnected
		stall=$(sed -n 's/^ROOT-LOAD-STALL max=\([0-9.]*\)$/\1/p' <<<"$CON")
		awk -v s="${stall:-0}" 'BEGIN { exit !(s >= 10) }' ||
			why "the longest pause was ${stall:-?} s: was the server really stopped?"
	}
	done_scenario
fi

if scenario 22 "failover: the first server killed for good, the second serves the same image"; then
	fresh_image flat
	serve start_nbdkit file "$IMG" && port2=$PORT && serve start_nbdkit file "$IMG" && {
		# the second started last: outage kills it, so boot from it first
		vm_boot_start "nbdroot=10.0.2.2:$PORT/ root=/dev/nbd0 nbdboot.failover=10.0.2.2:$port2 vmtest.root=load"
		outage gone 0
		vm_boot_wait
		load_survived 30
		reconnected "10\\.0\\.2\\.2:$port2"
	}
	done_scenario
fi

if scenario 23 "reconnect refusals and limits: failover at boot, another export size, a server gone for good"; then
	# tests/vm/guest/reconnect-errors.sh, no switch_root; ports: the image, a
	# wrong-size image, and one where nothing listens
	fresh_image flat
	wrong=$TESTDIR/wrong-$N.img
	truncate -s 16M "$wrong"
	wrong_sum=$(sha256sum <"$wrong")
	# (the free port is picked while the server listens: it cannot be the same)
	if serve start_nbdkit file "$IMG" && pick_port; then
		down=$FREE_PORT port=$PORT
		SCEN_TIMEOUT=180 vm_boot_start "vmtest.reconnect vmtest.port=$port vmtest.port-down=$down"
		step() {  # step N: the guest printed RE-STEP N
			wait_console "^RE-STEP $1[[:space:]]*\$" 120 || { why "the guest never reached step $1"; return 1; }
		}
		if step 2; then
			kill -KILL "${SERVERS[-1]}"; wait "${SERVERS[-1]}" 2>/dev/null
			WANT_PORT=$port serve start_nbdkit file "$wrong"
			if step 2b; then
				kill -KILL "${SERVERS[-1]}"; wait "${SERVERS[-1]}" 2>/dev/null
				WANT_PORT=$port serve start_nbdkit file "$IMG"
				if step 3; then
					kill -KILL "${SERVERS[-1]}"
					wait "${SERVERS[-1]}" 2>/dev/null
				fi
			fi
		fi
		vm_boot_wait
		con_has '^RE-ATTACH rc=0 '
		con_has "^RE-MSG nbdboot: attached 10\.0\.2\.2:$port to /dev/nbd0" 'the failover server at boot'
		ours && con_has "^RE-MSG nbdboot: .*10\.0\.2\.2:$down.*refused; trying 10\.0\.2\.2:$port" 'the first server named'
		con_has '^RE-MONITORS [0-9]+$' "one '@' process, the monitor"
		ours && con_has '^RE-IOCTL rc=0 nbdboot: warning: /dev/nbd2 cannot reconnect with the ioctls: .*netlink mode reconnects' '-p with -L says what it cannot do'
		con_has '^RE-IOCTL-DISCONNECT rc=0'
		con_has '^RE-WROTE rc=0 ' && sum=$(sed -n 's/^RE-WROTE rc=0 \([0-9a-f]*\)$/\1/p' <<<"$CON")
		con_has "^RE-REFUSED .*nbdboot: refusing 10\.0\.2\.2:$port for /dev/nbd0: it serves another export now \(16777216 bytes" 'the other size refused'
		con_has "^RE-READ-AFTER ${sum:-none} " 'the waiting read got what was written'
		con_has '^RE-RECONNECTED ' 'reconnected to the right export'
		con_has '^RE-REFUSED-TIMES 1$' 'the refusal told once, not at every attempt'
		[ "$(sha256sum <"$wrong")" = "$wrong_sum" ] || why "the wrong-size image was written to"
		con_has '^RE-DISCONNECT rc=0' && con_has '^RE-MONITOR-GONE$' 'the monitor ended with the device'
		con_has '^RE-ENDED ' 'and said so'
		con_has '^RE-ATTACH3 rc=0 '
		con_has '^RE-GONE rc=1 secs=([0-9]|1[0-9])$' 'the read failed within 20 s (dead timeout 6 s)'
		con_has '^RE-LATE .*its I/O fails now' 'the monitor said the I/O fails'
		con_has '^RE-DISCONNECT3 rc=0' && con_has '^RE-MONITOR-GONE3$' 'the monitor ended after the device was disconnected'
		con_has '^RE-RATELIMITED 0$' "the kernel log suppressed none of the monitor's lines"
		con_has '^RE-DONE'
	else
		why "no free port, or nbdkit did not start"
	fi
	done_scenario
fi

finish
