#!/bin/sh
# /sbin/nbdroot IFACE NETROOT NEWROOT (and /sbin/nbdsroot for nbds://): the
# netroot handler dracut's network code (/sbin/netroot) runs for each
# interface it brings up, network-legacy's and NetworkManager's alike.
# nbdboot attaches NETROOT once, whichever interface or job comes first.
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
type nbdboot_attach >/dev/null 2>&1 || . /lib/nbdboot-lib.sh

[ -n "$2" ] && nbdboot_is_spec "$2" || exit 1
nbdboot_attach "$2" "$1 is up"
