#!/bin/bash
# init.sh - nbdboot as the whole /init: an initramfs made by `make initramfs`
# (initramfs-hook/nbdboot-initramfs) with nbdboot as its only program, booting
# the Debian 12 systemd root of tests/vm/sysroot.sh under qemu.
#
# Usage: tests/vm/init.sh [NUMBER...]     (default: all)
# Environment: NBDBOOT_VM_SLOTS, SYS_TIMEOUT as in boot.sh and syslib.sh;
# RESULTS, VERBOSE as in tests/lib.sh.  Console logs: build/vm/init-N.log.
#
# Two images are built on the host, as a user would (make initramfs KVER=...
# BASEDIR=<the kernel package's tree>):
#   std    the default modules, and tests/pki.sh's CA, client certificate and
#          key from TLSDIR
#   nonic  MODULES="nbd ext4": no driver for the VM's network card
#   0 the images: std has /init and nothing else to run (no shell), the
#     modules with depmod's three files, the TLS files; nonic has no e1000
# Boots of std that end in the root's vmtest unit (sys_booted: root device,
# data written and read back, clean poweroff and image, no I/O error), each
# with nbdboot's own lines on the console:
#   1 ip=dhcp from qemu's DHCP server, BOOTIF= with the card's address,
#     dracut's root=nbd:SRV:PORT:ext4, rw: the monitor is there at
#     systemd-shutdown's hooks, the initramfs's memory was freed (its files
#     deleted)
#   2 static ip=CLIENT::GW:MASK:HOST:eth0:off (no DHCP at all), a partitioned
#     image from qemu-nbd, Debian's nbdroot=SRV:PORT/NAME root=/dev/nbd0p1 (no
#     fstype: found by trying), rootflags=noatime, nbd.nbds_max=2 given to
#     the nbd module (nbdboot.verbose shows it)
#   3 TLS (nbdkit --tls=require --tls-verify-peer), root=nbds://, no ip=:
#     DHCP by default, tls and its ciphers loaded, kTLS; no rw: mounted
#     read-only (systemd remounts it as fstab says)
#   3b the same through the TLS proxy (nbdboot.tls-proxy): the proxy and the
#     monitor outlive systemd-shutdown
#   4 nbdboot.overlay=256m over nbdkit without its cow filter: the export is
#     attached read-only, / is an overlay, the guest writes its data, and
#     the image file is untouched (same mtime, no data file on it)
#   5 root=dhcp with the root-path from dnsmasq in a network namespace of
#     its own (nbd:nbd.test:10809:ext4: a name, which dnsmasq, the name
#     server DHCP gives, resolves), ip=eth0:dhcp, init=/lib/systemd/systemd
# Failures, each ending in nbdboot's "fatal:" line with the reason and what
# to do, then the reboot that the kernel's panic=-1 (boot.sh) asks for, and
# never a kernel panic:
#   6a a bad command line (an unknown option in dracut's NBDOPTS): at once,
#      before any network
#   6b no driver for the network card (nonic, nbdboot.wait=4)
#   6c no carrier (the link set down from qemu's monitor, nbdboot.wait=5)
#   6d no DHCP answer (qemu's user network without IPv4, nbdboot.wait=5), with
#      root=dhcp waiting for it
#   6e no server (a closed port, nbdboot.wait=5)
#   6f init=/nosuch: not in the root
#   6g BOOTIF= naming an address no interface has
#   7a nbdboot.panic=0: it waits, and is still waiting 10 s later
#   7b nbdboot.panic=3: it reboots 3 s after the fatal line
# (no set -u: tests/lib.sh is not written for it)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"     # pass/fail/summary, start_* servers, TESTDIR, cleanup
. "$here/lib.sh"        # die/say/need
T0_ALL=$(date +%s)
LOGDIR=$ROOT/build/vm
mkdir -p "$LOGDIR"
. "$here/syslib.sh"     # sys_image, sys_boot_*, sys_booted
want=" ${*:-0 1 2 3 4 5 6 7} "
wanted() { case $want in *" $1 "*) return 0 ;; esac; return 1; }

finish() {
	echo "tests/vm/init.sh: $N_PASS passed, $N_FAIL failed in $(($(date +%s) - T0_ALL)) s (logs: $LOGDIR/init-*.log)"
	[ "$N_FAIL" -eq 0 ]
	exit
}
prep_fail() { fail "init: setup" "$*"; finish; }

need qemu-system-x86_64 qemu-system-x86
need nbdkit nbdkit
need qemu-nbd qemu-utils
need debugfs e2fsprogs
need openssl openssl
need dnsmasq dnsmasq-base
need zstd zstd

# ==== Setup: the root, the PKI, the two images ================================

make -s -C "$ROOT" nbdboot || prep_fail "make nbdboot failed"
sys_init || prep_fail "sys_init failed"
KTREE=$("$here/kernel.sh") || prep_fail "kernel.sh failed"
PKI=$TESTDIR/pki
"$here/../pki.sh" "$PKI" 2>"$TESTDIR/pki.log" || prep_fail "tests/pki.sh failed: $(tail -n3 "$TESTDIR/pki.log")"
mkdir -p "$TESTDIR/tls"
cp "$PKI/ca.pem" "$TESTDIR/tls/ca.pem"
cp "$PKI/client.pem" "$TESTDIR/tls/cert.pem"
cp "$PKI/client-key.pem" "$TESTDIR/tls/key.pem"
STD=$SYS_OUT/init-std.img NONIC=$SYS_OUT/init-nonic.img
tb=$(date +%s)
make -s -C "$ROOT" initramfs KVER="$SYS_KVER" BASEDIR="$KTREE" TLSDIR="$TESTDIR/tls" OUT="$STD" \
	>"$TESTDIR/std.build.log" 2>&1 || prep_fail "make initramfs (std) failed: $(tail -n3 "$TESTDIR/std.build.log")"
make -s -C "$ROOT" initramfs KVER="$SYS_KVER" BASEDIR="$KTREE" TLSDIR=/nonexistent MODULES="nbd ext4" OUT="$NONIC" \
	>"$TESTDIR/nonic.build.log" 2>&1 || prep_fail "make initramfs (nonic) failed: $(tail -n3 "$TESTDIR/nonic.build.log")"
echo "init: images built in $(($(date +%s) - tb)) s: std $(stat -c %s "$STD") bytes, nonic $(stat -c %s "$NONIC") bytes"
for i in std nonic; do
	zstd -dc "$SYS_OUT/init-$i.img" | cpio -t --quiet 2>/dev/null | sed 's,^,/,' >"$TESTDIR/$i.files"
done

for n in 1 2 3 3b 4 5 6f; do
	wanted "${n%[a-z]}" || continue
	kind=flat
	[ "$n" = 2 ] && kind=part
	SYS_NAME=init-$n sys_image "$kind"
	IMGS[$n]=$IMG KINDS[$n]=$kind
done

# ==== Helpers =================================================================

# nbdboot's lines reach the console through the kernel log: "[ T] nbdboot: ..."
NB='^\[ *[0-9.]+\] nbdboot: '

# booted_init DEV: sys_booted, plus nbdboot's own lines as /init
booted_init() {
	sys_booted "$1" "${2:-flat}"
	sys_con_has "${NB}switching to the root on $1 " 'nbdboot switched to the root'
	sys_con_lacks "${NB}(fatal|warning)" 'no warning and no failure'
	sys_con_lacks 'Kernel panic|Attempted to kill init' 'no kernel panic'
}

# ==== The boots: start_N starts boot N (VM_PID), check_N judges it ==========

start_1() {
	serve 1 start_nbdkit file "${IMGS[1]}" &&
		sys_boot_start "$STD" "root=nbd:10.0.2.2:$PORT:ext4 ip=dhcp BOOTIF=01-52-54-00-12-34-56 rw"
}
check_1() {
	booted_init /dev/nbd0
	sys_con_has "${NB}network: eth0 is 10\.0\.2\.15/24, gateway 10\.0\.2\.2 \(DHCP from 10\.0\.2\.2" 'DHCP from qemu'
	sys_con_has "${NB}attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink\); it reconnects" 'attached, with the monitor'
	sys_con_has "${NB}switching to the root on /dev/nbd0 \(read-write\) and starting /sbin/init" 'rw, /sbin/init'
	sys_con_has '^VMTEST resident=[0-9]+:@[^,]*$' "one '@' process, the reconnect monitor"
	sys_late_ok 1
	sys_con_has '^VMTEST initramfs=empty' 'the initramfs was emptied (its memory freed)'
}

start_2() {
	serve 2 start_qemu_nbd part "${IMGS[2]}" &&
		sys_boot_start "$STD" "nbdroot=10.0.2.2:$PORT/part root=/dev/nbd0p1 rootflags=noatime nbd.nbds_max=2 nbdboot.verbose ip=10.0.2.15::10.0.2.2:255.255.255.0:nbdtest:eth0:off rw"
}
check_2() {
	booted_init /dev/nbd0p1 part
	sys_con_has '^VMTEST root=/dev/nbd0p1 fstype=ext4 options=rw,noatime' 'rootflags=noatime'
	sys_con_has '^nbdboot: .*module nbd loaded with nbds_max=2$' "the module's parameter from the command line"
	sys_con_has "${NB}network: eth0 is 10\.0\.2\.15/24, gateway 10\.0\.2\.2 \(ip=\)" 'the static address'
	sys_con_lacks "${NB}.*DHCP" 'no DHCP'
	sys_con_has "${NB}attached 10\.0\.2\.2:[0-9]+ export part to /dev/nbd0 " 'export part'
}

TLS_SRV=(--tls=require "--tls-certificates=$PKI/nbdkit" --tls-verify-peer)
start_3() {
	serve 3 start_nbdkit "${TLS_SRV[@]}" file "${IMGS[3]}" &&
		sys_boot_start "$STD" "root=nbds://10.0.2.2:$PORT/ nbdboot.tlshostname=nbd.test rootfstype=ext4"
}
check_3() {
	booted_init /dev/nbd0
	sys_con_has "${NB}switching to the root on /dev/nbd0 \(read-only\)" 'read-only without rw' 
	sys_con_has "${NB}network: eth0 is 10\.0\.2\.15/24.*DHCP" 'DHCP without ip='
	sys_con_has "${NB}attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink, kTLS\)" 'kTLS'
	sys_con_has '^VMTEST resident=[0-9]+:@[^,]*$' "kTLS: one '@' process, the monitor"
	sys_late_ok 1
}

start_3b() {
	serve 3b start_nbdkit "${TLS_SRV[@]}" file "${IMGS[3b]}" &&
		sys_boot_start "$STD" "root=nbds://10.0.2.2:$PORT/ nbdboot.tlshostname=nbd.test nbdboot.tls-proxy rw"
}
check_3b() {
	booted_init /dev/nbd0
	sys_con_has "${NB}attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink, TLS via proxy\)" 'TLS through the proxy'
	sys_con_has '^VMTEST resident=[0-9]+:@[^,]*,[0-9]+:@[^,]*$' "two '@' processes: the proxy and the monitor"
	sys_late_ok 2
}

start_4() {
	MTIME4=$(stat -c %Y "${IMGS[4]}")
	serve 4 start_nbdkit file "${IMGS[4]}" &&
		sys_boot_start "$STD" "root=nbd:10.0.2.2:$PORT:ext4 nbdboot.overlay=256m"
}
check_4() {
	sys_con_has '^VMTEST root=/?overlay fstype=overlay options=rw' '/ is the overlay, writable'
	sys_con_has '^VMTEST data ok [0-9a-f]{64}' 'the guest wrote and read back its data (in RAM)'
	sys_con_has 'reboot: Power down' 'a clean poweroff'
	sys_con_lacks "$SYS_IO_ERRORS" 'no I/O error'
	sys_con_has "${NB}attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink, read-only\)" 'the export attached read-only'
	sys_con_has "${NB}switching to the root on /dev/nbd0 \(read-only under a 256m tmpfs overlay\)" 'the overlay, 256m'
	sys_con_has '^VMTEST overlay tmpfs size=262144k' "the overlay's tmpfs has the size asked for"
	[ "$(stat -c %Y "${IMGS[4]}")" = "$MTIME4" ] || why "the image file was written (mtime changed)"
	debugfs -R 'stat /var/lib/vmtest/data' "${IMGS[4]}" 2>&1 | grep -q 'File not found' ||
		why "the guest's data file is on the image: the overlay wrote through"
}

start_5() {
	local rc
	sys_dhcp_net "nbd:nbd.test:10809:ext4" nbd.test &&
		sys_dhcp_serve file "${IMGS[5]}" &&
		sys_boot_start "$STD" "root=dhcp ip=eth0:dhcp rw init=/lib/systemd/systemd"
	rc=$?
	SERVERS[5]+=" ${DHCP_PIDS[*]}" NETNS[5]=$SYS_NETNS SYS_NETNS=
	return $rc
}
check_5() {
	booted_init /dev/nbd0
	sys_con_has "${NB}network: eth0 is 10\.0\.3\.[0-9]+/24, gateway 10\.0\.3\.1 \(DHCP from 10\.0\.3\.1, lease [0-9]+ s, root-path nbd:nbd\.test:10809:ext4\)" 'the lease with its root-path'
	sys_con_has "${NB}attached nbd\.test:10809 to /dev/nbd0 " 'attached the server the root-path names, by the name DHCP'"'"'s name server resolved'
	sys_con_has "${NB}switching to the root on /dev/nbd0 \(read-write\) and starting /lib/systemd/systemd" 'init='
}

# failed_init REASON [STEP]: the fatal line with the reason, the hint, the
# reboot, and no kernel panic
failed_init() {
	sys_con_has "${NB}fatal: unable to ${2:-[a-z ]+}: $1" "nbdboot's reason on the console" || return
	sys_con_has "${NB}(correct the kernel command line|the initramfs may lack a module|check the network)" 'what to do'
	sys_con_has "${NB}rebooting now \(panic=-1\)" 'the reboot the kernel command line asks for'
	sys_con_has 'reboot: Restarting system' 'it rebooted'
	sys_con_lacks 'Kernel panic|Attempted to kill init' 'no kernel panic'
	sys_con_lacks '^VMTEST' 'no switch_root'
}

start_6a() { sys_boot_start "$STD" "root=nbd:10.0.2.2:10809:ext4::bogus ip=dhcp"; }
check_6a() {
	failed_init "root: unknown nbdboot option 'bogus'" 'read the NBD root from the kernel command line'
	sys_con_lacks "${NB}network:" 'before any network'
	sys_con_lacks 'nbd[0-9]+: detected capacity change' 'nothing attached'
}
start_6b() { sys_boot_start "$NONIC" "root=nbd:10.0.2.2:10809:ext4 nbdboot.wait=4"; }
check_6b() {
	failed_init 'no network interface appeared in 4 s: the initramfs has no driver for this machine.s network card' 'bring up the network'
}
start_6c() {
	pick_port || return 1
	local mport=$FREE_PORT
	SYS_BOOT_OPTS=(--nic "user,model=e1000,id=n0" -- -monitor "tcp:127.0.0.1:$mport,server=on,wait=off")
	sys_boot_start "$STD" "root=nbd:10.0.2.2:10809:ext4 nbdboot.wait=5"
	SYS_BOOT_OPTS=()
	( # the link down before the guest's driver is loaded (seconds later)
		for _ in $(seq 240); do
			if exec 9<>"/dev/tcp/127.0.0.1/$mport"; then
				printf 'set_link n0 off\n' >&9
				sleep 1
				exit 0
			fi 2>/dev/null
			sleep 0.5
		done
	) &
	track $!
}
check_6c() { failed_init 'no carrier on eth0 after 5 s' 'bring up the network'; }
start_6d() {
	SYS_BOOT_OPTS=(--nic "user,model=e1000,ipv4=off,ipv6=on")
	sys_boot_start "$STD" "root=dhcp nbdboot.wait=5"
	SYS_BOOT_OPTS=()
}
check_6d() { failed_init 'no DHCP answer on eth0 in [0-9]+ s \(nbdboot.wait=5 covers the link and DHCP\)' 'bring up the network'; }
start_6e() { pick_port && sys_boot_start "$STD" "root=nbd:10.0.2.2:$FREE_PORT:ext4 nbdboot.wait=5"; }
check_6e() {
	failed_init 'unable to connect to 10\.0\.2\.2:[0-9]+: Connection refused' 'attach the NBD root'
	sys_con_lacks 'nbd[0-9]+: detected capacity change' 'nothing attached'
}
start_6f() {
	serve 6f start_nbdkit --filter=cow file "${IMGS[6f]}" &&
		sys_boot_start "$STD" "root=nbd:10.0.2.2:$PORT:ext4 init=/nosuch"
}
check_6f() { failed_init 'init=/nosuch is not an executable file in the root' 'find init in the root'; }
start_6g() { sys_boot_start "$STD" "root=nbd:10.0.2.2:10809:ext4 BOOTIF=01-02-00-00-00-00-01 nbdboot.wait=4"; }
check_6g() {
	failed_init 'no interface with the MAC address of BOOTIF= here \(this machine has eth0\)' 'bring up the network'
}

start_7a() {
	TIMEOUTS[7a]=40
	SYS_TIMEOUT=40 sys_boot_start "$STD" "root=nbd:10.0.2.2:10809:ext4::bogus nbdboot.panic=0"
}
check_7a() {
	local t
	sys_con_has "${NB}fatal: unable to read the NBD root" 'the fatal line'
	sys_con_has "${NB}waiting for ever \(nbdboot.panic=0" 'it says it waits'
	sys_con_lacks 'reboot: Restarting|Kernel panic' 'no reboot, no panic'
	[ "$VM_RC" = 124 ] || why "qemu ended by itself (rc $VM_RC): it should have waited until killed"
	t=$(ktime 'nbdboot: waiting for ever')
	[ -n "$t" ] && [ "$(awk -v t="$t" 'BEGIN { print (t < 30) }')" = 1 ] ||
		why "the fatal line came late (${t:-never}): the 40 s timeout does not show a 10 s wait"
}
start_7b() { sys_boot_start "$STD" "root=nbd:10.0.2.2:10809:ext4::bogus nbdboot.panic=3"; }
check_7b() {
	local a b
	sys_con_has "${NB}rebooting in 3 s \(nbdboot.panic=\)" 'the wait is announced'
	a=$(ktime 'nbdboot: rebooting in 3 s') b=$(ktime 'reboot: Restarting system')
	[ -n "$a" ] && [ -n "$b" ] && [ "$(awk -v a="$a" -v b="$b" 'BEGIN { print (b - a >= 2.9 && b - a < 10) }')" = 1 ] ||
		why "the reboot came ${a:+$(awk -v a="$a" -v b="${b:-0}" 'BEGIN { print b - a }') s }after the announcement, not 3 s"
}

NAMES=([1]="ip=dhcp (qemu), dracut's root=nbd:SRV:PORT:ext4, nbdkit" [2]="static ip=, partitioned, Debian's nbdroot=, qemu-nbd"
	[3]="TLS root=nbds://, DHCP by default, kTLS" [3b]="TLS through the proxy" [4]="nbdboot.overlay=256m: writes in RAM, the image untouched"
	[5]="root=dhcp: the root-path from dnsmasq; init=" [6a]="failure: a bad command line" [6b]="failure: no network driver"
	[6c]="failure: no carrier" [6d]="failure: no DHCP answer" [6e]="failure: no server" [6f]="failure: init= not in the root" [6g]="failure: BOOTIF= matches no interface"
	[7a]="nbdboot.panic=0 waits" [7b]="nbdboot.panic=3 reboots after 3 s")

# ==== 0: the images ===========================================================

if wanted 0; then
	begin "init 0: what make initramfs put in the images"
	f=$TESTDIR/std.files
	has_line "$f" '^/init$' 'std has /init'
	lacks_line "$f" '^/(bin|sbin|usr)/' 'no other program (no shell, no busybox)'
	for m in nbd e1000 ext4 overlay tls gcm aesni-intel crc32c_generic; do
		has_line "$f" "/$m\\.ko\$" "std has $m.ko"
	done
	for x in modules.dep modules.alias modules.softdep; do
		has_line "$f" "^/lib/modules/$SYS_KVER/$x\$" "std has $x"
	done
	for x in ca.pem cert.pem key.pem; do has_line "$f" "^/etc/nbdboot/$x\$" "std has /etc/nbdboot/$x"; done
	has_line "$TESTDIR/std.build.log" 'warning: the client key is in the image' 'the key is warned about'
	lacks_line "$TESTDIR/nonic.files" '/e1000\.ko$' 'nonic has no e1000'
	has_line "$TESTDIR/nonic.files" '/nbd\.ko$' 'nonic has nbd'
	end_test
fi

# ==== The boots, two at a time ================================================

boot_done() {
	[ -z "$(ktime 'nbdboot: switching')" ] ||
		echo "     times: nbdboot switched at $(ktime 'nbdboot: switching') s, systemd: $(sys_times); wall $((ENDED - ${LAUNCHED[$1]})) s"
}
queue=()
for b in 1 2 3 3b 4 5 6a 6b 6c 6d 6e 6f 6g 7a 7b; do wanted "${b%[a-z]}" && queue+=("$b"); done
sys_queue init "${queue[@]}"
finish
