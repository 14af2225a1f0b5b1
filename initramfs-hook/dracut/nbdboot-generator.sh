#!/bin/sh
# systemd generator (systemd flavour): sysroot.mount for an NBD root named on
# the command line, /dev/root mounted with the spec's FSTYPE and ROOTFLAGS
# (rootfstype=, rootflags=, ro, rw).  A root named only by the DHCP
# root-path gets its unit when it is attached (nbdboot_root_setup).
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
. /lib/nbdboot-lib.sh

root=$(getarg root=)
if nbdboot_is_spec "$root"; then
	spec=$root
else
	case $root in "" | block:/dev/root) spec=$(nbdboot_first_netroot) || exit 0 ;; *) exit 0 ;; esac
fi
nbdboot_cmdline "$spec"
nbdboot_env 2>/dev/null || NBD_FSTYPE=$(getarg rootfstype=) NBD_ROOTFLAGS=$(getarg rootflags=)
nbdboot_mount_unit "$1" "$(nbdboot_mount_options)"
