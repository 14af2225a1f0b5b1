#!/bin/sh
# nbdboot-lib.sh - what nbdboot's dracut module does at boot; sourced (as
# /lib/nbdboot-lib.sh, after dracut-lib.sh) by its cmdline hook, its netroot
# handler (/sbin/nbdroot), its initqueue job and its systemd generator.
#
# The root is an NBD export when root= or netroot= says nbd:SRV:..., nbd://...
# or nbds://... (or, with root=dhcp, the DHCP root-path does).  nbdboot reads
# the whole kernel command line itself (--cmdline FILE): these functions only
# decide when it runs, see that it runs once, and give dracut the device as
# /dev/root.  State, in /run/nbdboot:
#   cmdline   what nbdboot reads: dracut's command line with the root's
#             SPEC in place of root=/netroot= (nbdboot_cmdline)
#   spec      the root's SPEC, once known
#   lock/     taken by the one attach (a handler per interface, the
#             networkd job: whoever comes first)
#   failed    nbdboot's exit status when the attach failed
#   wait      nbdboot.wait= (what nbdboot makes of the command line)
#   since     uptime when the networkd job began waiting for a link

NBDBOOT_RUN=/run/nbdboot
NBDBOOT_JOB=$hookdir/initqueue/nbdboot.sh
NBDBOOT_RULES=/etc/udev/rules.d/99-nbdboot-root.rules

# nbdboot_is_spec VALUE: VALUE names an NBD root (nbd:SRV:..., nbd://, nbds://)
nbdboot_is_spec() {
	case $1 in nbd:* | nbds:*) return 0 ;; esac
	return 1
}

# nbdboot_first_netroot: the first netroot= that names an NBD root
nbdboot_first_netroot() {
	local n
	for n in $(getargs netroot=); do
		nbdboot_is_spec "$n" && { echo "$n"; return 0; }
	done
	return 1
}

# nbdboot_job_add: the initqueue job (nbdboot_job, below), once
nbdboot_job_add() {
	[ -e "$NBDBOOT_JOB" ] || echo '. /lib/nbdboot-lib.sh && nbdboot_job' >"$NBDBOOT_JOB"
}

# nbdboot_networkd: the image's network module is systemd-networkd, which
# calls no netroot handler (decided when the image was built)
nbdboot_networkd() { [ -e /lib/dracut/nbdboot-networkd ]; }

# nbdboot_cmdline SPEC: write $NBDBOOT_RUN/cmdline, dracut's command line
# (getcmdline: /etc/cmdline.d, /etc/cmdline, /proc/cmdline) with every root=
# and netroot= replaced by SPEC: netroot=SPEC for dracut's nbd:SRV:... form,
# with root=/dev/... kept (a partition of the device, which nbdboot checks
# and waits for); root=SPEC for a URI, which nbdboot takes only after root=.
nbdboot_cmdline() {
	local w words= word=netroot=$1
	case $1 in nbd://* | nbds://*) word=root=$1 ;; esac
	set -f
	for w in $(getcmdline); do
		case $w in
		root=/dev/*) [ "${word%%=*}" = netroot ] || continue ;;
		root=* | netroot=*) continue ;;
		esac
		words="$words $w"
	done
	set +f
	mkdir -p "$NBDBOOT_RUN"
	echo "$1" >"$NBDBOOT_RUN/spec"
	echo "${words# } $word" >"$NBDBOOT_RUN/cmdline"
}

# nbdboot_env: NBD_DEVICE, NBD_FSTYPE, NBD_ROOTFLAGS... of that command line;
# false when nbdboot cannot use it (it said why on stderr)
nbdboot_env() {
	local env
	env=$(nbdboot --cmdline "$NBDBOOT_RUN/cmdline" --print-env) || return 1
	eval "$env"
}

# nbdboot_usable: false, saying why on the console, for what cannot boot:
# ioctl mode in the systemd flavour, where systemd's switch-root sends
# SIGSTOP to every process and so ends the holder's NBD_DO_IT (nbdboot
# warns about the same at shutdown; here the root would be lost at once)
nbdboot_usable() {
	[ -n "$DRACUT_SYSTEMD" ] && [ "$NBD_METHOD" = ioctl ] || return 0
	echo "nbdboot: ioctl mode (nbdboot.ioctl) cannot boot dracut's systemd flavour: systemd's switch-root stops every process, which ends the ioctl holder's NBD_DO_IT and the root with it; leave out nbdboot.ioctl (netlink), or build the image without systemd" >/dev/console
	return 1
}

# nbdboot_say TEXT: an informational line in the kernel log (and so on the
# console unless quiet, and in the journal)
nbdboot_say() { echo "<30>dracut: nbdboot: $*" >/dev/kmsg; }

# nbdboot_mount_options: rootflags (also from the spec's ROOTFLAGS field)
# and dracut's ro/rw words, for the /dev/root mount
nbdboot_mount_options() {
	local o=$NBD_ROOTFLAGS
	getargbool 0 ro && o=${o:+$o,}ro
	getargbool 0 rw && o=${o:+$o,}rw
	echo "$o"
}

# nbdboot_root_setup [boot]: what dracut needs besides the attach itself:
# the initqueue's finished condition, the udev rule that links /dev/root to
# the device once it has a file system and, for a /dev/root root, how it is
# mounted: in the shell flavour a mount hook that sets fstype and rflags for
# rootfs-block's mount; in the systemd flavour sysroot.mount, which the
# generator writes when the command line names the root, and which is
# written here when only the DHCP root-path did.  Idempotent: the cmdline
# hook calls it when the command line names the root, the attach again with
# "boot" (udevd and systemd may be asked to reload only then: during the
# cmdline hooks their sockets are there but they wait for the hooks).
nbdboot_root_setup() {
	local opts
	echo "nbdboot -c $NBD_DEVICE >/dev/null 2>&1" >"$hookdir/initqueue/finished/nbdboot.sh"
	case $root in block:/dev/root | dhcp | dhcp6) ;; *) return 0 ;; esac
	if [ ! -e "$NBDBOOT_RULES" ]; then
		printf 'KERNEL=="%s", ENV{DEVTYPE}=="disk", ENV{ID_FS_TYPE}=="?*", SYMLINK+="root"\n' \
			"${NBD_DEVICE#/dev/}" >"$NBDBOOT_RULES"
		[ "$1" = boot ] && udevadm control --reload
	fi
	opts=$(nbdboot_mount_options)
	if [ -z "$DRACUT_SYSTEMD" ]; then
		printf 'fstype=%s\nrflags=%s\n' "${NBD_FSTYPE:-auto}" "$opts" >"$hookdir/mount/01-nbdboot.sh"
	elif [ "$1" = boot ] && [ ! -e /run/systemd/generator/sysroot.mount ] &&
		[ ! -e /run/systemd/system/sysroot.mount ]; then
		nbdboot_mount_unit /run/systemd/system "$opts"
		systemctl daemon-reload
		systemctl --no-block start sysroot.mount
	fi
}

# nbdboot_mount_unit DIR OPTIONS: sysroot.mount for /dev/root in DIR, required
# by initrd-root-fs.target; /dev/root is waited for without systemd's 90 s
# device timeout (the initqueue and nbdboot's own deadline end a failed boot)
nbdboot_mount_unit() {
	local dir=$1 opts=$2 t
	mkdir -p "$dir/initrd-root-fs.target.requires" "$dir/dev-root.device.d"
	{
		echo '[Unit]'
		echo 'Before=initrd-root-fs.target'
		echo '[Mount]'
		echo 'Where=/sysroot'
		echo 'What=/dev/root'
		echo "Type=${NBD_FSTYPE:-auto}"
		[ -z "$opts" ] || echo "Options=$opts"
	} >"$dir/sysroot.mount"
	ln -sf ../sysroot.mount "$dir/initrd-root-fs.target.requires/sysroot.mount"
	t=$(getarg rd.timeout=)
	printf '[Unit]\nJobTimeoutSec=%s\nJobRunningTimeoutSec=%s\n' "${t:-0}" "${t:-0}" \
		>"$dir/dev-root.device.d/timeout.conf"
}

# nbdboot_attach SPEC WHY: run nbdboot for SPEC, once: the first caller takes
# the lock, later ones (another interface, the other mechanism) return.
# nbdboot's messages go straight to the console, where the ioctl-mode
# warning and any failure must be seen.  A failure is final: nbdboot
# already retried what might pass until nbdboot.wait=; the initqueue job
# takes the boot to dracut's emergency handling.
nbdboot_attach() {
	local rc
	mkdir -p "$NBDBOOT_RUN"
	mkdir "$NBDBOOT_RUN/lock" 2>/dev/null || return 0
	nbdboot_cmdline "$1"
	if ! nbdboot_env 2>/dev/console || ! nbdboot_usable; then
		echo 2 >"$NBDBOOT_RUN/failed"
		return 1
	fi
	# the cmdline hook loaded them when the command line named the root;
	# with root=dhcp only the root-path has said it is NBD, and over TLS
	modprobe -q nbd
	[ "$NBD_TLS" != 1 ] || modprobe -q tls
	nbdboot_root_setup boot
	nbdboot_say "$2: attaching $1 to $NBD_DEVICE"
	nbdboot --cmdline "$NBDBOOT_RUN/cmdline" >/dev/console 2>&1
	rc=$?
	[ "$rc" = 0 ] && return 0
	echo "$rc" >"$NBDBOOT_RUN/failed"
	return 1
}

# nbdboot_networkd_dhcp: with systemd-networkd in the systemd flavour and no
# ip= at all, DHCP on every Ethernet link (as network-legacy does for a
# netroot), asking for the root-path; written before networkd starts
nbdboot_networkd_dhcp() {
	[ -n "$DRACUT_SYSTEMD" ] && nbdboot_networkd || return 0
	[ -z "$(getargs ip=)" ] || return 0
	mkdir -p /run/systemd/network
	printf '[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nRequestOptions=17\n' \
		>/run/systemd/network/90-nbdboot.network
}

# nbdboot_uptime: whole seconds since boot
nbdboot_uptime() {
	local u
	read -r u _ </proc/uptime
	echo "${u%%.*}"
}

# nbdboot_networkd_up: systemd-networkd has configured a link that can route
# (its state files; there is no other interface for this in the initrd)
nbdboot_networkd_up() {
	local f
	for f in /run/systemd/netif/links/*; do
		[ -f "$f" ] || continue
		grep -qx 'ADMIN_STATE=configured' "$f" && grep -qx 'OPER_STATE=routable' "$f" && return 0
	done
	return 1
}

# nbdboot_networkd_rootpath: the DHCP root-path (option 17) in networkd's leases
nbdboot_networkd_rootpath() {
	local f l
	for f in /run/systemd/netif/leases/*; do
		[ -f "$f" ] || continue
		while IFS= read -r l; do
			case $l in ROOT_PATH=?*) echo "${l#ROOT_PATH=}"; return 0 ;; esac
		done <"$f"
	done
	return 1
}

# nbdboot_networkd_attach: with systemd-networkd nothing calls /sbin/nbdroot:
# attach once networkd has configured a link (the lease's root-path with
# root=dhcp).  No link within nbdboot.wait= (default 60 s) is a failure.
nbdboot_networkd_attach() {
	local spec since wait=60
	mkdir -p "$NBDBOOT_RUN" # root=dhcp: the cmdline hook made nothing yet
	[ -e "$NBDBOOT_RUN/since" ] || nbdboot_uptime >"$NBDBOOT_RUN/since"
	if ! nbdboot_networkd_up; then
		read -r since <"$NBDBOOT_RUN/since"
		[ -e "$NBDBOOT_RUN/wait" ] && read -r wait <"$NBDBOOT_RUN/wait"
		[ $(($(nbdboot_uptime) - since)) -gt "$wait" ] || return 0
		echo "nbdboot: no network: systemd-networkd configured no interface within $wait s (nbdboot.wait=); check ip= and the link" >/dev/console
		mkdir "$NBDBOOT_RUN/lock" 2>/dev/null && echo 1 >"$NBDBOOT_RUN/failed"
		return 0
	fi
	if [ -e "$NBDBOOT_RUN/spec" ]; then
		read -r spec <"$NBDBOOT_RUN/spec"
	elif spec=$(nbdboot_networkd_rootpath) && nbdboot_is_spec "$spec"; then
		nbdboot_say "the DHCP root-path is $spec"
	else
		nbdboot_say "root=dhcp: the DHCP root-path (${spec:-none}) names no NBD export; leaving it to others"
		rm -f -- "$NBDBOOT_JOB"
		return 0
	fi
	nbdboot_attach "$spec" "systemd-networkd configured a link"
}

# nbdboot_job: the initqueue job, sourced on each pass of the queue until
# the root is attached.  It gives up at once when the attach failed (the
# console already says why) the way dracut does when the queue times out.
nbdboot_job() {
	if [ -e "$NBDBOOT_RUN/failed" ]; then
		rm -f -- "$NBDBOOT_JOB"
		emergency_shell "nbdboot could not attach the root file system ($(cat "$NBDBOOT_RUN/spec" 2>/dev/null)): its reason is above"
		return
	fi
	if [ -e "$NBDBOOT_RUN/lock" ] && [ -e "$hookdir/initqueue/finished/nbdboot.sh" ] &&
		(. "$hookdir/initqueue/finished/nbdboot.sh"); then
		rm -f -- "$NBDBOOT_JOB"
		return
	fi
	nbdboot_networkd && nbdboot_networkd_attach
	return 0
}
