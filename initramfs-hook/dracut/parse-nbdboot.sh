#!/bin/sh
# cmdline hook 90 (where dracut's network code looks for netroot parsers, so
# that a DHCP root-path comes back here): an NBD root= or netroot= is
# nbdboot's.  root=nbd:SRV:PORT_OR_NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]],
# root=nbd://..., root=nbds://..., or the same after netroot= (root= wins).
# The device becomes /dev/root (root=block:/dev/root), the network module
# calls /sbin/nbdroot (nbdsroot for nbds://) when an interface is up, and
# with systemd-networkd, which calls no handler, the initqueue job attaches.
type nbdboot_is_spec >/dev/null 2>&1 || . /lib/nbdboot-lib.sh

[ -z "$root" ] && root=$(getarg root=)
[ -z "$netroot" ] && { netroot=$(nbdboot_first_netroot) || unset netroot; }
if nbdboot_is_spec "$root"; then
	[ -n "$netroot" ] && [ "$netroot" != "$root" ] && warn "root takes precedence over netroot: ignoring netroot=$netroot"
	netroot=$root
	root=block:/dev/root
fi

if ! nbdboot_is_spec "$netroot"; then
	# root=dhcp: network-legacy (and NetworkManager) bring the root-path
	# back here; with systemd-networkd the job reads it from the lease
	if nbdboot_networkd && [ -n "$DRACUT_SYSTEMD" ] &&
		{ [ "$root" = dhcp ] || [ "$netroot" = dhcp ]; }; then
		nbdboot_job_add
		nbdboot_networkd_dhcp
	fi
	return 0
fi

[ -z "$root" ] && root=block:/dev/root
modprobe -q nbd
nbdboot_cmdline "$netroot"
if nbdboot_env 2>/dev/console && nbdboot_usable; then
	echo "$NBD_WAIT" >"$NBDBOOT_RUN/wait"
	[ "$NBD_TLS" = 1 ] && modprobe -q tls
	nbdboot_root_setup
else
	# nbdboot said why; the initqueue job gives up at once
	mkdir -p "$NBDBOOT_RUN/lock" && echo 2 >"$NBDBOOT_RUN/failed"
fi
rootok=1
nbdboot_job_add
nbdboot_networkd_dhcp
