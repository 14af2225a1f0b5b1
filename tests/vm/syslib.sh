# shellcheck shell=bash
# syslib.sh - the systemd-root harness, sourced after tests/lib.sh and
# tests/vm/lib.sh by tests/vm/hooks.sh and bench/boot (not run directly).
#
# The root is tests/vm/sysroot.sh's Debian 12 tree (systemd as init, the
# generators, Debian's nbd-client, the kernel's modules).  Initramfs images
# are built inside it, as a user would on that system: sys_run runs a
# command chrooted into a throwaway overlay of the tree, after `make install`
# of this checkout into it (nbdboot, man page, dracut module,
# initramfs-tools hook and script).  The image served is an ext4 filesystem
# made from the tree (plain, or in partition 1 of an MBR table); each boot gets
# a sparse copy.  After a boot the host checks the console (vmtest-systemd.sh's
# VMTEST lines, systemd's shutdown, no I/O error), the image (e2fsck -fn) and
# the data the guest wrote.
#
#   sys_init                     SYS_TREE, SYS_KVER; template images built once
#   sys_run [--install] CMD      sh -c CMD chrooted into a fresh overlay of the
#                                tree; host directory $SYS_OUT is /out inside
#   sys_image flat|part          IMG = a fresh copy of the template image
#   sys_boot INITRD APPEND...    boot it (SYS_TIMEOUT, default 240 s); console in
#                                CON, log in $LOGDIR/$SYS_NAME.log, VM_RC; the
#                                array SYS_BOOT_OPTS goes to boot.sh last
#                                (--nic SPEC, -- QEMU ARGS)
#   sys_boot_start/sys_boot_wait the same in two halves (parallel boots)
#   sys_booted DEV [flat|part]   the boot reached systemd with root DEV, wrote
#                                and read back its data, powered off cleanly,
#                                no I/O error; image clean with the data on it
#   sys_times                    "switch_root=S multi_user=S" from the console
#   sys_late_ok N                the '@' processes (N) and the root were still
#                                there when systemd-shutdown ran its hooks
#   sys_dhcp_net ROOTPATH [NAME] a network namespace of its own (SYS_NETNS) that
#                                boots join instead of qemu's user networking:
#                                dnsmasq hands out leases with ROOTPATH as the
#                                DHCP root-path (option 17); its address is
#                                SYS_NET_SRV; DHCP_PIDS; sys_dhcp_net_stop; with
#                                NAME it serves DNS too, NAME being SYS_NET_SRV
#   sys_dhcp_serve ARGS...       nbdkit ARGS in it, on SYS_NET_SRV:10809
#   sys_queue PREFIX BOOT...     boots two at a time, each with its start_BOOT
#                                and check_BOOT (see "Boots two at a time")
# (no set -u: tests/lib.sh is not written for it)

: "${SYS_TIMEOUT:=240}" "${SYS_MEM:=1024}"
SYS_OUT=$TESTDIR/sysout

sys_init() {
	SYS_TREE=$("$here/sysroot.sh" 2>"$TESTDIR/sysroot.log") ||
		{ echo "sysroot.sh failed: $(tail -n3 "$TESTDIR/sysroot.log")"; return 1; }
	SYS_KVER=$(ls "$SYS_TREE/lib/modules" | head -n1)
	SYS_CACHE=$(dirname "$SYS_TREE")
	mkdir -p "$SYS_OUT"
	_sys_template flat && _sys_template part
}

# _sys_template flat|part: the cached template image next to the tree.  The
# filesystem is the tree as it is, 3 GiB, label nbdroot; "part" puts it in
# partition 1 (from 1 MiB) of an MBR table.
_sys_template() {
	local t=$SYS_CACHE/$1.img size=3072
	[ -f "$t" ] && return 0
	exec 7>"$SYS_CACHE/.$1.lock"
	flock -w 600 7 || return 1
	[ -f "$t" ] && { exec 7>&-; return 0; }  # made while we waited
	rm -f "$t.$$.tmp"
	if [ "$1" = flat ]; then
		mkfs.ext4 -q -F -L nbdroot -d "$SYS_TREE" "$t.$$.tmp" "${size}M" >&2 || return 1
	else
		truncate -s $((size + 1))M "$t.$$.tmp" &&
			echo 'label: dos
start=2048, type=83' | sfdisk -q "$t.$$.tmp" >/dev/null &&
			mkfs.ext4 -q -F -L nbdroot -E offset=1048576 -d "$SYS_TREE" "$t.$$.tmp" "${size}M" >&2 || return 1
	fi
	mv "$t.$$.tmp" "$t"
	exec 7>&-
}

sys_image() {
	IMG=$TESTDIR/sys-$1-${SYS_NAME:-img}.img
	IMG_KIND=$1
	cp --sparse=always "$SYS_CACHE/$1.img" "$IMG"
}

# sys_run [--install] CMD: in a private mount namespace, an overlay of the
# tree (upper layer thrown away afterwards) with /proc, /sys, /dev and
# $SYS_OUT (as /out) mounted; --install first runs this checkout's
# `make install DESTDIR=<overlay>`.  Output goes to stdout/stderr.
sys_run() {
	local install=0 w
	[ "$1" = --install ] && { install=1; shift; }
	w=$(mktemp -d "$TESTDIR/overlay.XXXXXX")
	mkdir -p "$w/upper" "$w/work" "$w/root"
	unshare -m --propagation private /bin/bash -euc '
		tree=$1 w=$2 out=$3 install=$4 src=$5 cmd=$6
		mount -t overlay overlay -o "lowerdir=$tree,upperdir=$w/upper,workdir=$w/work" "$w/root"
		mount -t proc proc "$w/root/proc"
		mount --rbind /sys "$w/root/sys"
		mount --rbind /dev "$w/root/dev"
		mount -t tmpfs tmpfs "$w/root/tmp"
		mount -t tmpfs tmpfs "$w/root/run"
		mkdir -p "$w/root/out" && mount --bind "$out" "$w/root/out"
		if [ "$install" = 1 ]; then
			make -s -C "$src" install DESTDIR="$w/root" PREFIX=/usr >&2
		fi
		chroot "$w/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh -c "$cmd"
	' sys_run "$SYS_TREE" "$w" "$SYS_OUT" "$install" "$ROOT" "$1"
	local rc=$?
	rm -rf "$w"
	return $rc
}

sys_boot_start() {
	local initrd=$1
	shift
	LOG=$LOGDIR/${SYS_NAME:-sys}.log
	: >"$LOG"
	# --drive-none: no IDE CD-ROM or floppy to probe (a lost ATA interrupt
	# under a busy host once printed "I/O error" for the empty CD drive)
	local net=()
	[ -z "${SYS_NETNS:-}" ] || net=(ip netns exec "$SYS_NETNS")
	${net[@]+"${net[@]}"} "$here/boot.sh" --initrd "$initrd" --timeout "$SYS_TIMEOUT" --mem "$SYS_MEM" --log "$LOG" \
		--drive-none ${SYS_NETNS:+--tap tap0} --append "$*" ${SYS_BOOT_OPTS[@]+"${SYS_BOOT_OPTS[@]}"} \
		>/dev/null 2>"$LOG.stderr" &
	VM_PID=$!
}
sys_boot_wait() {
	wait "$VM_PID"
	VM_RC=$?
	CON=$(tr -d '\r' <"$LOG")
	[ "$VM_RC" != 124 ] || why "qemu killed at the ${SYS_TIMEOUT}s timeout"
}
sys_boot() { sys_boot_start "$@"; sys_boot_wait; }

sys_con_has() {  # sys_con_has REGEX [WHAT]
	grep -Eq -- "$1" <<<"$CON" && return 0
	why "console lacks /$1/${2:+ ($2)}"
	return 1
}
sys_con_lacks() {
	local l
	l=$(grep -Em1 -- "$1" <<<"$CON") || return 0
	why "console has '$l'${2:+ ($2)}"
	return 1
}

# I/O trouble on the console: the block layer, ext4, or the nbd driver
SYS_IO_ERRORS='I/O error|EXT4-fs error|EXT4-fs warning|Buffer I/O|block nbd[0-9]+: (Connection timed out|Receive control failed|shutting down sockets|Dead connection)|Remounting filesystem read-only'

sys_booted() {
	local dev=$1 sum got src=$IMG
	sys_con_has "^VMTEST root=$dev fstype=ext4 options=rw" "systemd runs on $dev, read-write" || return 1
	sys_con_has '^VMTEST data ok [0-9a-f]{64}' 'the guest wrote and read back its data' || return 1
	sys_con_has 'reboot: Power down' 'systemctl poweroff reached the end' || return 1
	sys_con_lacks "$SYS_IO_ERRORS" 'no I/O error, before or during shutdown' || return 1
	[ "$IMG_KIND" = part ] && src="$IMG?offset=1048576"
	e2fsck -fn "$src" >"$TESTDIR/e2fsck.log" 2>&1 ||
		{ why "e2fsck -fn finds the image unclean: $(grep -v '^Pass\|^e2fsck\|^$' "$TESTDIR/e2fsck.log" | head -n3 | tr '\n' ' ')"; return 1; }
	sum=$(sed -n 's/^VMTEST data ok \([0-9a-f]*\).*/\1/p' <<<"$CON" | head -n1)
	got=$(debugfs -R "cat /var/lib/vmtest/data" "$src" 2>/dev/null | sha256sum | cut -d' ' -f1)
	[ "$got" = "$sum" ] || { why "the data on the image (sha256 $got) is not what the guest wrote ($sum)"; return 1; }
}

# sys_late_ok N: vmtest-systemd.sh's systemd-shutdown hook ran after the
# killing rounds and found N '@' processes (nbdboot's monitor, and its proxy)
# and the root device still reading, just before poweroff
sys_late_ok() {
	local re='[0-9]+:@[^,]*'
	[ "$1" = 2 ] && re="$re,$re"
	sys_con_has "^VMTEST late resident=$re read=0\$" "the '@' processes outlived systemd-shutdown and the root reads until poweroff"
}

sys_times() {
	sed -n 's/^VMTEST times \(switch_root=[0-9.a-z]* multi_user=[0-9.a-z]*\).*/\1/p' <<<"$CON" | head -n1
}

# ==== A DHCP server with a root-path =========================================
# qemu's user networking sends no root-path (DHCP option 17), so root=dhcp and
# nbdroot=dhcp boot on a network of their own: a namespace nbdboot-PID-N (the
# test's PID: tests/lib.sh's cleanup removes what is left) with a tap device,
# tap0, SYS_NET_SRV/24, that qemu joins (boot.sh --tap, run in the namespace
# when SYS_NETNS is set), and dnsmasq handing out leases there.  Nothing in
# it reaches beyond this machine.

SYS_NET_SRV=10.0.3.1
_sys_nets=0

# sys_dhcp_net ROOTPATH [NAME]: SYS_NETNS, with dnsmasq running (DHCP_PIDS);
# with NAME, dnsmasq is the network's name server too (DHCP option 6), and
# NAME is SYS_NET_SRV's name there
sys_dhcp_net() {
	local d dns=(--port=0)
	[ -z "${2:-}" ] || dns=(--port=53 --no-resolv --no-hosts "--host-record=$2,$SYS_NET_SRV")
	_sys_nets=$((_sys_nets + 1))
	SYS_NETNS=nbdboot-$$-$_sys_nets-$BASHPID
	d=$TESTDIR/$SYS_NETNS
	DHCP_PIDS=()
	mkdir -p "$d"
	{ ip netns add "$SYS_NETNS" && ip -n "$SYS_NETNS" link set lo up &&
		ip -n "$SYS_NETNS" tuntap add dev tap0 mode tap &&
		ip -n "$SYS_NETNS" addr add "$SYS_NET_SRV/24" dev tap0 &&
		ip -n "$SYS_NETNS" link set tap0 up; } >"$d/ip.log" 2>&1 ||
		{ why "could not make network namespace $SYS_NETNS: $(tail -n2 "$d/ip.log" | tr '\n' ' ')"; return 1; }
	ip netns exec "$SYS_NETNS" dnsmasq --keep-in-foreground --conf-file=/dev/null "${dns[@]}" --user=root \
		--interface=tap0 --bind-interfaces --dhcp-authoritative \
		--dhcp-range=10.0.3.10,10.0.3.99,255.255.255.0,1h "--dhcp-option=option:root-path,$1" \
		--dhcp-leasefile="$d/leases" --pid-file="$d/dnsmasq.pid" --log-dhcp --log-facility="$d/dnsmasq.log" \
		>"$d/dnsmasq.out" 2>&1 </dev/null &
	DHCP_PIDS+=($!)
	_wait_ready "$!" test -s "$d/dnsmasq.pid" && return 0
	why "dnsmasq did not start: $(cat "$d/dnsmasq.out" "$d/dnsmasq.log" 2>/dev/null | tail -n3 | tr '\n' ' ')"
	return 1
}

# sys_dhcp_serve NBDKIT-ARGS...: nbdkit in SYS_NETNS on SYS_NET_SRV:10809
sys_dhcp_serve() {
	local d=$TESTDIR/$SYS_NETNS
	ip netns exec "$SYS_NETNS" nbdkit -f --exit-with-parent -P "$d/nbdkit.pid" -i "$SYS_NET_SRV" -p 10809 "$@" \
		>"$d/nbdkit.log" 2>&1 </dev/null &
	DHCP_PIDS+=($!)
	_wait_ready "$!" test -s "$d/nbdkit.pid" && return 0
	why "nbdkit did not start in $SYS_NETNS: $(tail -n3 "$d/nbdkit.log" | tr '\n' ' ')"
	return 1
}

# sys_dhcp_net_stop: its servers stopped, the namespace removed
sys_dhcp_net_stop() {
	local p
	for p in "${DHCP_PIDS[@]}"; do stop_server "$p"; done
	DHCP_PIDS=()
	[ -z "${SYS_NETNS:-}" ] || ip netns del "$SYS_NETNS" 2>/dev/null
	SYS_NETNS=
}

# ==== Boots two at a time =====================================================
# A suite names each boot B (1, 2, 5a, ...) and defines start_B (servers
# through `serve B START ARGS...`, then sys_boot_start), check_B (judges CON
# with why()), NAMES[B], and IMGS[B]/KINDS[B] (or those of B less its
# letter) for sys_booted; optionally boot_done B (after the verdict: times)
# and TIMEOUTS[B] (qemu killed at its timeout is then expected).
#   sys_queue PREFIX B...    runs them, two at a time (tests named "PREFIX B:
#                            NAMES[B]"); SYS_EXCERPT: the console lines shown
#                            when one fails
#   has_line FILE REGEX WHAT / lacks_line FILE REGEX WHAT   a file's lines
#   ktime REGEX              the kernel timestamp of the first console line
#                            matching REGEX

declare -A SERVERS START_WHY NETNS IMGS KINDS NAMES TIMEOUTS _RUNNING _LOGS LAUNCHED
: "${SYS_EXCERPT:=nbdboot|^VMTEST|Kernel panic|nbd[0-9]|EXT4-fs (error|warning)}"

has_line() {
	grep -Eq -- "$2" "$1" && return 0
	why "$3 (no line /$2/ in $(basename "$1"))"
	return 1
}
lacks_line() {
	local l
	l=$(grep -Em1 -- "$2" "$1") || return 0
	why "$3 ($(basename "$1") has '$l')"
	return 1
}
ktime() { sed -n "s/^\[ *\([0-9.]*\)\] .*$1.*/\1/p" <<<"$CON" | head -n1; }

# serve B START ARGS...: a server for boot B (tests/lib.sh's start_*), stopped
# when B is judged; one that does not come up fails B
serve() {
	local b=$1
	shift
	if "$@"; then
		SERVERS[$b]+=" $SERVER_PID"
		return 0
	fi
	START_WHY[$b]="${1#start_} did not start (its log is above)"
	return 1
}

_queue_check() {
	local b=$1 n=${1%%[a-z]} p
	CON=$(tr -d '\r' <"${_LOGS[$b]}")
	LOG=${_LOGS[$b]} IMG=${IMGS[$b]:-${IMGS[$n]:-}} IMG_KIND=${KINDS[$b]:-${KINDS[$n]:-}}
	[ -n "$CON" ] || why "no boot: the console is empty"
	"check_$b"
	if ! end_test; then
		echo "     console excerpt (${_LOGS[$b]}):"
		grep -aE "$SYS_EXCERPT" <<<"$CON" | tail -n 25 | sed 's/^/     | /'
	fi
	! declare -F boot_done >/dev/null || boot_done "$b"
	for p in ${SERVERS[$b]}; do stop_server "$p"; done
	[ -z "${NETNS[$b]:-}" ] || ip netns del "${NETNS[$b]}"
}
_queue_launch() {
	local b=$1
	SYS_NAME=$_QPREFIX-$b
	begin "$_QPREFIX $b: ${NAMES[$b]}"
	LAUNCHED[$b]=$(date +%s)
	if "start_$b"; then
		_RUNNING[$VM_PID]=$b _LOGS[$b]=$LOG
		return
	fi
	why "${START_WHY[$b]:-the boot did not start}"
	end_test
}
# wait for one of the running boots to end (bash's wait -n misses a child
# that has already ended), and judge it
_queue_collect() {
	local pid b
	while :; do
		for pid in "${!_RUNNING[@]}"; do
			kill -0 "$pid" 2>/dev/null && continue
			wait "$pid"
			VM_RC=$? ENDED=$(date +%s) b=${_RUNNING[$pid]}
			begin "$_QPREFIX $b: ${NAMES[$b]}"
			[ "$VM_RC" != 124 ] || [ -n "${TIMEOUTS[$b]:-}" ] || why "qemu killed at the ${SYS_TIMEOUT}s timeout"
			_queue_check "$b"
			unset "_RUNNING[$pid]"
			return
		done
		sleep 0.5
	done
}
sys_queue() {
	local b
	_QPREFIX=$1
	shift
	for b in "$@"; do
		[ "${#_RUNNING[@]}" -lt 2 ] || _queue_collect
		_queue_launch "$b"
	done
	while [ "${#_RUNNING[@]}" -gt 0 ]; do _queue_collect; done
}
