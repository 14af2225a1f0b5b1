#!/bin/bash
# hooks-itools.sh - nbdboot's initramfs-tools hook and boot script
# (initramfs-hook/initramfs-tools/), with real mkinitramfs run inside the
# Debian 12 systemd root of tests/vm/sysroot.sh and real boots of that root.
#
# Usage: tests/vm/hooks-itools.sh [NUMBER...]     (default: 0 to 6 and 8; 7 on request)
# Environment: NBDBOOT_VM_SLOTS, SYS_TIMEOUT as in boot.sh and syslib.sh;
# RESULTS, VERBOSE as in tests/lib.sh.  Console logs: build/vm/itools-N.log.
#
# Two images are built at once, each in its own throwaway overlay of the root
# after `make install` of this checkout, as a user would build them:
#   std     /etc/nbdboot/ca.pem, cert.pem and key.pem (tests/pki.sh: CA,
#           client certificate and key), then `mkinitramfs -o std.img KVER`
#   dropin  /etc/initramfs-tools/conf.d/nbdboot says
#           "export NBDCLIENT=/sbin/nbdboot", then `mkinitramfs -o dropin.img`
# The root has Debian's nbd-client, so its hook and nbd boot script take part.
#
#   0 the images: std has nbdboot, nbd, tls and the kTLS ciphers, the NIC
#     driver, the three TLS files, nbdboot's two scripts and not
#     Debian's (one NBD root script); the hook warned that the key is in a
#     world-readable image; dropin keeps Debian's script, ordered before
#     nbdboot's; neither has nbd-client, GnuTLS or libnl, both keep libc and
#     libidn2 (which libc may dlopen); and on a made-up root the hook's
#     nbdboot_drop_nbd_client removes nbd-client and the libraries only it
#     needs, keeping those that a remaining binary or a file naming them needs
# Boots of std.img (each ends in the root's vmtest unit, checked by
# sys_booted: root device, data written and read back, clean poweroff and
# image, no I/O error), two at a time:
#   1 nbd-server (default export), Debian's nbdroot=10.0.2.2,PORT,nbd0
#     root=/dev/nbd0 ip=dhcp rw: one attach, by nbdboot's script (Debian's
#     never ran); ipconfig's first round got the lease (the link was up; so
#     in 2, 3, 4 and 6 too); init-top/nbdboot's udev rule brought it up as
#     udev named it (its kernel-log line; so in 4 too), and its early
#     ipconfig had the lease before local-top began (so in 6 and 8 too)
#   2 qemu-nbd, partitioned image: nbdroot=10.0.2.2:PORT/part root=/dev/nbd0p1
#     (DHCP without ip=)
#   3 TLS: nbdkit --tls=require --tls-verify-peer (tests/pki.sh), root=nbds://
#     10.0.2.2:PORT/ nbdboot.tlshostname=nbd.test: the CA and client
#     certificate from the image's /etc/nbdboot, kTLS (no resident process but
#     the monitor, there with the root reading at systemd-shutdown's hooks);
#     init mounted /dev/nbd0 though root= named no device (ROOT= in
#     /conf/param.conf)
#   5 failures: a wrong export name (nbdroot=HOST:PORT/nosuch) and no server
#     at all (dracut's root=nbd:10.0.2.2:PORT:ext4 nbdboot.wait=5): nbdboot's
#     reason on the console, then our panic line, in that order; nothing
#     attached, no "ALERT! ... does not exist" and no wait for the root device.
#     The test kills qemu once the failure is visible (panic=-1 from boot.sh
#     usually reboots it first)
#   6 dracut's root=nbd:10.0.2.2:PORT:ext4:noatime ip=:::::ens2:dhcp against
#     nbdkit's default export: ROOTFSTYPE and ROOTFLAGS from dracut's fields
#     reach init (the root is mounted noatime); the udev rule for the device
#     ip= names brought it up
#   8 nbdroot=dhcp root=/dev/nbd0 ip=dhcp: the root-path from DHCP, on a network
#     of its own (syslib.sh's sys_dhcp_net: dnsmasq in a network namespace,
#     root-path SRV:10809/rootfs, nbdkit there): nbdboot attached export
#     rootfs of that server, and the server saw one connection
# Boot of dropin.img:
#   4 Debian's nbd script with NBDCLIENT=/sbin/nbdboot (the drop-in), nbd-server,
#     nbdroot=10.0.2.2:PORT/rootfs root=/dev/nbd0 ip=dhcp: Debian's script ran
#     and nbdboot attached once; nbdboot's local-top script stepped aside
# Reference, only when asked for ("7"):
#   7 the root's own initramfs (no nbdboot installed): Debian's script with
#     nbd-client, as 1 but nbdroot=10.0.2.2:PORT/rootfs; for the boot times
# Each boot prints "times: link=S attach=S switch_root=S multi_user=S" (guest
# seconds: the NIC's link up, the nbd device's capacity set).
# (no set -u: tests/lib.sh is not written for it)
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"     # pass/fail/summary, start_* servers, TESTDIR, cleanup
. "$here/lib.sh"        # die/say/need
T0_ALL=$(date +%s)
LOGDIR=$ROOT/build/vm
mkdir -p "$LOGDIR"
. "$here/syslib.sh"     # sys_run, sys_image, sys_boot_*, sys_booted
want=" ${*:-0 1 2 3 4 5 6 8} "
wanted() { case $want in *" $1 "*) return 0 ;; esac; return 1; }

finish() {
	echo "tests/vm/hooks-itools.sh: $N_PASS passed, $N_FAIL failed in $(($(date +%s) - T0_ALL)) s (boots waited ~${SLOT_WAIT} s for VM slots; logs: $LOGDIR/itools-*.log)"
	[ "$N_FAIL" -eq 0 ]
	exit
}
prep_fail() { fail "itools: setup" "$*"; finish; }

need qemu-system-x86_64 qemu-system-x86
need nbdkit nbdkit
need nbd-server nbd-server
need qemu-nbd qemu-utils
need debugfs e2fsprogs
need openssl openssl
need dnsmasq dnsmasq-base

# ==== Setup: the root, the PKI, two images (at once), boot images ==========

make -s -C "$ROOT" nbdboot || prep_fail "make nbdboot failed" # before two installs race
sys_init || prep_fail "sys_init failed"
KVER=$SYS_KVER
PKI=$TESTDIR/pki
"$here/../pki.sh" "$PKI" 2>"$TESTDIR/pki.log" || prep_fail "tests/pki.sh failed: $(tail -n3 "$TESTDIR/pki.log")"
mkdir -p "$SYS_OUT/pki"
cp "$PKI/ca.pem" "$PKI/client.pem" "$PKI/client-key.pem" "$SYS_OUT/pki/"

# build NAME SETUP: SETUP, mkinitramfs, then the image unpacked for test 0
# (file list in NAME.files, local-top's ORDER in NAME.order)
build() {
	sys_run --install "set -e; $2
		mkinitramfs -o /out/$1.img $KVER
		unmkinitramfs /out/$1.img /tmp/x
		(cd /tmp/x && find . | sed 's,^\./,/,') >/out/$1.files
		cat /tmp/x/scripts/local-top/ORDER >/out/$1.order" >"$TESTDIR/$1.build.log" 2>&1
}
tb=$(date +%s)
build std "mkdir -p /etc/nbdboot
	cp /out/pki/ca.pem /etc/nbdboot/ca.pem
	cp /out/pki/client.pem /etc/nbdboot/cert.pem
	cp /out/pki/client-key.pem /etc/nbdboot/key.pem" &
b1=$!
build dropin "echo 'export NBDCLIENT=/sbin/nbdboot' >/etc/initramfs-tools/conf.d/nbdboot" &
b2=$!
ref_ok=1
if wanted 7; then
	sys_run "mkinitramfs -o /out/ref.img $KVER" >"$TESTDIR/ref.build.log" 2>&1 || ref_ok=0
fi
wait "$b1" || prep_fail "mkinitramfs (std) failed: $(tail -n3 "$TESTDIR/std.build.log")"
wait "$b2" || prep_fail "mkinitramfs (dropin) failed: $(tail -n3 "$TESTDIR/dropin.build.log")"
[ "$ref_ok" = 1 ] || prep_fail "mkinitramfs (ref) failed: $(tail -n3 "$TESTDIR/ref.build.log")"
echo "itools: images built in $(($(date +%s) - tb)) s ($(du -m "$SYS_OUT/std.img" | cut -f1) MB)"

# Every boot's root image is copied now, before the boots start.
for n in 1 2 3 4 5 6 7 8; do
	wanted "$n" || continue
	kind=flat
	[ "$n" = 2 ] && kind=part
	SYS_NAME=itools-$n sys_image "$kind"
	IMGS[$n]=$IMG KINDS[$n]=$kind
done

# ==== Helpers =================================================================

std=$SYS_OUT/std.img dropin=$SYS_OUT/dropin.img

# print_times BOOT: guest times, and the wall time the boot took (qemu runs
# about as long as the guest's clock says; the rest was boot.sh waiting for
# one of the machine's VM slots)
SLOT_WAIT=0
print_times() {
	local t wall ran
	t=$(sys_times)
	wall=$((ENDED - ${LAUNCHED[$1]}))
	ran=$(grep -aoE '^\[ *[0-9]+' <<<"$CON" | tail -n1 | tr -d '[ ')
	ran=${ran:-0}
	[ "$wall" -le "$ran" ] || SLOT_WAIT=$((SLOT_WAIT + wall - ran))
	echo "     times: link=$(ktime 'link becomes ready') attach=$(ktime 'nbd[0-9]*: detected capacity change from 0') ${t:-switch_root=? multi_user=?}; wall ${wall} s, qemu ~${ran} s"
}

# The console lines nbdboot's script is judged by
IPCONFIG_RETRY='IP-Config: no response after'
DEBIAN_RAN='Begin: Setting up nbd-client'
OUR_PANIC='^nbdboot could not attach the NBD root'
LINK_EARLY='\] nbdboot: ens2 is up \(as soon as udev named it\)'

# ==== The boots: start_N starts boot N (VM_PID), check_N judges it ==========

start_1() {
	serve 1 start_nbd_server "" "${IMGS[1]}" &&
		sys_boot_start "$std" "nbdroot=10.0.2.2,$PORT,nbd0 root=/dev/nbd0 ip=dhcp rw"
}
check_1() {
	sys_booted /dev/nbd0
	sys_con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink' 'nbdboot attached the default export'
	[ "$(grep -c '^nbdboot: ' <<<"$CON")" = 1 ] || why "nbdboot said more than the one attach line: $(grep '^nbdboot: ' <<<"$CON" | tr '\n' '|')"
	sys_con_lacks "$DEBIAN_RAN" "Debian's nbd script is not in the image"
	sys_con_lacks "$IPCONFIG_RETRY" "ipconfig's first round got the lease (the link was up)"
	sys_con_has "$LINK_EARLY" "init-top/nbdboot's udev rule brought the link up"
	lease_early
}
# lease_early: init-top/nbdboot's ipconfig had the lease before local-top began
lease_early() {
	local a b
	a=$(grep -En -m1 'IP-Config: [a-z0-9]+ complete' <<<"$CON" | cut -d: -f1)
	b=$(grep -En -m1 'Begin: Mounting root file system' <<<"$CON" | cut -d: -f1)
	[ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ] ||
		why "the lease (console line ${a:-none}) did not come before local-top (line ${b:-none}): no early DHCP"
}

start_2() {
	serve 2 start_qemu_nbd part "${IMGS[2]}" &&
		sys_boot_start "$std" "nbdroot=10.0.2.2:$PORT/part root=/dev/nbd0p1 rw"
}
check_2() {
	sys_booted /dev/nbd0p1
	sys_con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ export part to /dev/nbd0 ' 'nbdboot attached export part'
	sys_con_lacks "$IPCONFIG_RETRY" "ipconfig's first round got the lease"
}

TLS_SRV=(--tls=require "--tls-certificates=$PKI/nbdkit" --tls-verify-peer)
start_3() {
	serve 3 start_nbdkit "${TLS_SRV[@]}" file "${IMGS[3]}" &&
		sys_boot_start "$std" "root=nbds://10.0.2.2:$PORT/ nbdboot.tlshostname=nbd.test rw"
}
check_3() {
	sys_booted /dev/nbd0
	sys_con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ to /dev/nbd0 .*netlink, kTLS\)' 'TLS through kTLS'
	sys_con_has '^VMTEST resident=[0-9]+:@[^,]*$' "kTLS: one '@' process, the reconnect monitor"
	sys_late_ok 1
	sys_con_lacks "$IPCONFIG_RETRY" "ipconfig's first round got the lease"
}

start_4() {
	serve 4 start_nbd_server "$(printf '[rootfs]\nexportname = %s\n' "${IMGS[4]}")" &&
		sys_boot_start "$dropin" "nbdroot=10.0.2.2:$PORT/rootfs root=/dev/nbd0 ip=dhcp rw"
}
check_4() {
	sys_booted /dev/nbd0
	sys_con_has "$DEBIAN_RAN" "Debian's nbd script ran"
	sys_con_has '^nbdboot: attached 10\.0\.2\.2:[0-9]+ export rootfs to /dev/nbd0 ' 'nbdboot attached as its client'
	sys_con_lacks "$IPCONFIG_RETRY" "ipconfig's first round got the lease (init-premount/nbdboot)"
	sys_con_has "$LINK_EARLY" "init-top/nbdboot's udev rule brought the link up"
	[ "$(grep -c '^nbdboot: ' <<<"$CON")" = 1 ] || why "more than one nbdboot line (a second attach?): $(grep '^nbdboot: ' <<<"$CON" | tr '\n' '|')"
}

# Boot 5 is two boots, 5a and 5b, each killed once its failure is visible.
start_5a() {
	serve 5a start_nbd_server "$(printf '[rootfs]\nexportname = %s\n' "${IMGS[5]}")" &&
		sys_boot_start "$std" "nbdroot=10.0.2.2:$PORT/nosuch root=/dev/nbd0 ip=dhcp rw" &&
		kill_when_failed
}
check_5a() {
	failed_boot "server has no export named 'nosuch'"
}
start_5b() {
	pick_port &&
		sys_boot_start "$std" "root=nbd:10.0.2.2:$FREE_PORT:ext4 nbdboot.wait=5 rw" &&
		kill_when_failed
}
check_5b() {
	failed_boot 'unable to connect to 10\.0\.2\.2:[0-9]+: Connection refused \(gave up after 5 s'
}
# kill_when_failed: in the background, once the console shows the end of a
# failed boot (our panic, or initramfs-tools' own wait for the root), or 120 s
# after qemu started (boot.sh may first wait for a VM slot), stop qemu: the
# timeout(1) that boot.sh runs it under passes the signal on
kill_when_failed() {
	local log=$LOG vm=$VM_PID
	(
		while [ ! -s "$log" ]; do
			kill -0 "$vm" 2>/dev/null || exit 0
			sleep 0.5
		done
		for _ in $(seq 240); do
			grep -aEq "$OUR_PANIC|Waiting for root file system|ALERT!" "$log" && break
			kill -0 "$vm" 2>/dev/null || exit 0
			sleep 0.5
		done
		sleep 2
		t=$(pgrep -P "$vm" -x timeout) && kill -TERM $t
	) 2>/dev/null & # quiet if the cleanup ends it (or its sleep)
	track $!
}
# failed_boot REASON: nbdboot's reason, then our panic; nothing attached, no
# wait for the root device and no "ALERT!"
failed_boot() {
	local a b
	sys_con_has "^nbdboot: $1" "nbdboot's reason on the console" &&
		sys_con_has "$OUR_PANIC" 'the script panics after it' || return
	a=$(grep -En "^nbdboot: $1" <<<"$CON" | head -n1 | cut -d: -f1)
	b=$(grep -En "$OUR_PANIC" <<<"$CON" | head -n1 | cut -d: -f1)
	[ "$a" -lt "$b" ] || why "the panic line comes before nbdboot's reason"
	sys_con_lacks 'nbd[0-9]+: detected capacity change' 'nothing attached'
	sys_con_lacks 'Waiting for root file system|Gave up waiting|ALERT!' "no wait for a root that cannot come"
	sys_con_lacks '^VMTEST' 'no switch_root'
}

start_6() {
	serve 6 start_nbdkit file "${IMGS[6]}" &&
		sys_boot_start "$std" "root=nbd:10.0.2.2:$PORT:ext4:noatime ip=:::::ens2:dhcp rw"
}
check_6() {
	sys_booted /dev/nbd0
	sys_con_has '^VMTEST root=/dev/nbd0 fstype=ext4 options=rw,noatime' "mounted with dracut's ROOTFLAGS (noatime)"
	sys_con_lacks "$IPCONFIG_RETRY" "ipconfig's first round got the lease"
	sys_con_has "$LINK_EARLY" "the udev rule for ip='s device (NAME==ens2) brought it up"
	lease_early
}

start_8() {
	local rc
	sys_dhcp_net "$SYS_NET_SRV:10809/rootfs" &&
		sys_dhcp_serve --filter=log file "${IMGS[8]}" "logfile=$TESTDIR/nbdkit-8.log" &&
		sys_boot_start "$std" "nbdroot=dhcp root=/dev/nbd0 ip=dhcp rw"
	rc=$?
	SERVERS[8]+=" ${DHCP_PIDS[*]}" NETNS[8]=$SYS_NETNS SYS_NETNS=
	return $rc
}
check_8() {
	local n
	sys_booted /dev/nbd0
	sys_con_has '^nbdboot: attached 10\.0\.3\.1:10809 export rootfs to /dev/nbd0 ' 'nbdboot attached what the root-path names'
	n=$(grep -c 'Connect export=' "$TESTDIR/nbdkit-8.log" 2>/dev/null)
	[ "${n:-0}" = 1 ] || why "the server saw ${n:-0} connections, expected 1"
	lease_early
}

start_7() {
	serve 7 start_nbd_server "$(printf '[rootfs]\nexportname = %s\n' "${IMGS[7]}")" &&
		sys_boot_start "$SYS_OUT/ref.img" "nbdroot=10.0.2.2:$PORT/rootfs root=/dev/nbd0 ip=dhcp rw"
}
check_7() {
	sys_booted /dev/nbd0
	sys_con_has "$DEBIAN_RAN" "Debian's nbd script ran"
	grep -q "$IPCONFIG_RETRY" <<<"$CON" && echo "     (ipconfig's first round gave up: the link was not up yet)"
}

NAMES=([1]="nbdroot=SRV,PORT,nbd0 ip=dhcp, nbd-server" [2]="partitioned, nbdroot=SRV:PORT/NAME root=/dev/nbd0p1, qemu-nbd"
	[3]="TLS root=nbds://, CA and client certificate from the image, nbdkit" [4]="Debian's nbd script with NBDCLIENT=/sbin/nbdboot, nbd-server"
	[5a]="failure: wrong export name" [5b]="failure: no server (nbdboot.wait=5)" [6]="dracut root=nbd:SRV:PORT:ext4:noatime ip=:::::ens2:dhcp, nbdkit"
	[7]="reference: Debian's nbd script with nbd-client, nbd-server"
	[8]="nbdroot=dhcp: the DHCP root-path (dnsmasq), nbdkit")

# ==== 0: the images ===========================================================

if wanted 0; then
	begin "itools 0: what the hook put in the images"
	f=$SYS_OUT/std.files
	for p in /usr/sbin/nbdboot /etc/nbdboot/ca.pem /etc/nbdboot/cert.pem /etc/nbdboot/key.pem \
		/scripts/local-top/nbdboot /scripts/init-premount/nbdboot; do
		has_line "$f" "^$p\$" "std has $p"
	done
	for m in nbd tls gcm ghash-clmulni-intel ctr aesni-intel chacha20poly1305 e1000; do
		has_line "$f" "/$m\\.ko\$" "std has $m.ko"
	done
	lacks_line "$f" '^/scripts/local-top/nbd$' "Debian's nbd script is left out of std"
	for i in std dropin; do
		lacks_line "$SYS_OUT/$i.files" '/(nbd-client|libgnutls\.so[.0-9]*|libnl-3\.so[.0-9]*)$' "nbd-client and what only it used are left out of $i"
	done
	has_line "$f" '/libc\.so\.6$' 'std keeps libc'
	has_line "$f" '/libidn2\.so\.0$' "std keeps libidn2, which nbd-client used and libc may load"
	# the function itself on a made-up root: nbd-client with its libraries,
	# /bin/true (libc) and a file that names libgmp (as a dlopen() would)
	out=$(sys_run --install 'set -e; r=/tmp/r; mkdir -p $r/usr/sbin $r/usr/bin $r/usr/lib/x86_64-linux-gnu
		cp /usr/sbin/nbd-client $r/usr/sbin/; cp /bin/true $r/usr/bin/
		for l in $(ldd /usr/sbin/nbd-client | sed -n "s/.*=> \(\/[^ ]*\) .*/\1/p"); do
			cp -L $l $r/usr/lib/x86_64-linux-gnu/; done
		echo libgmp.so.10 >$r/usr/bin/loader
		. /usr/lib/nbdboot/hook-functions.sh; nbdboot_drop_nbd_client $r
		cd $r && find . -type f | sort' 2>&1)
	for x in ./usr/bin/true ./usr/lib/x86_64-linux-gnu/libc.so.6 ./usr/lib/x86_64-linux-gnu/libgmp.so.10; do
		grep -qx "$x" <<<"$out" || why "nbdboot_drop_nbd_client removed $x, which a file that stays needs: $(tr '\n' ' ' <<<"$out")"
	done
	for x in ./usr/sbin/nbd-client ./usr/lib/x86_64-linux-gnu/libgnutls.so.30 ./usr/lib/x86_64-linux-gnu/libhogweed.so.6; do
		grep -qx "$x" <<<"$out" && why "nbdboot_drop_nbd_client left $x"
	done
	has_line "$TESTDIR/std.build.log" '^W: nbdboot: /etc/nbdboot/key.pem is in the initramfs' 'the hook warns about the key'
	has_line "$SYS_OUT/dropin.files" '^/scripts/local-top/nbd$' "dropin keeps Debian's nbd script"
	order=$(grep -o 'local-top/nbd[a-z]*' "$SYS_OUT/dropin.order" | tr '\n' ' ')
	[ "$order" = "local-top/nbd local-top/nbdboot " ] || why "dropin's local-top ORDER is '$order', not nbd then nbdboot"
	end_test
fi

# ==== The boots, two at a time ================================================

SYS_EXCERPT='^(nbdboot|VMTEST|IP-Config|Begin: Setting|ALERT|Gave up|Kernel panic|mount:)|nbd[0-9]|EXT4-fs (error|warning)'
boot_done() { print_times "$1"; }
queue=()
for b in 1 2 3 6 4 8 7 5a 5b; do wanted "${b%[ab]}" && queue+=("$b"); done
sys_queue itools "${queue[@]}"
finish
