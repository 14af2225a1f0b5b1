#!/bin/sh
# kernel-errors.sh - guest side of scenario 14 in tests/vm/scenarios.sh: the
# kernel's refusals each get their own message and exit code 3, and a refused
# attach leaves the device that was already attached working; -C 2 to an
# export without NBD_FLAG_CAN_MULTI_CONN is refused before anything is
# attached; in ioctl mode the queue is capped at the server's maximum block
# size.  Prints KE-* lines; initrd-nbd.sh runs it when the command line has
# vmtest.kerrors.  Ports: vmtest.port= (a plain export), vmtest.port-nomc= (no
# CAN_MULTI_CONN), vmtest.port-max16k= (maximum block size 16 KiB, larger
# requests refused).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
port="" port_nomc="" port_max16k=""
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.port=*) port=${w#*=} ;;
	vmtest.port-nomc=*) port_nomc=${w#*=} ;;
	vmtest.port-max16k=*) port_max16k=${w#*=} ;;
	esac
done
# nbdboot's warning that ioctl mode cannot survive systemd's shutdown gets a
# line of its own (KE-LABEL-WARNING), so the first other line stays in KE-LABEL
IOCTL_WARNING='^nbdboot: warning: .*ioctl.*systemd'
try() {  # try LABEL ARGS...: one line with the exit code and the message
	label=$1
	shift
	msg=$(nbdboot "$@" 2>&1)
	rc=$?
	printf '%s\n' "$msg" | grep -E "$IOCTL_WARNING" | sed "s/^/KE-$label-WARNING /"
	echo "KE-$label rc=$rc $(printf '%s\n' "$msg" | grep -Ev "$IOCTL_WARNING" | head -n1)"
}
refused() {  # refused LABEL ARGS...: exit code, number of stderr lines, the first
	label=$1
	shift
	err=$(nbdboot "$@" 2>&1 >/dev/null)
	rc=$?
	echo "KE-$label rc=$rc lines=$(printf '%s' "$err" | grep -c '') $(printf '%s\n' "$err" | head -n1)"
}
try FIRST 10.0.2.2 "$port" /dev/nbd0
try BUSY-NETLINK 10.0.2.2 "$port" /dev/nbd0
try BUSY-IOCTL -L 10.0.2.2 "$port" /dev/nbd0
try CHECK -c /dev/nbd0
# the ext4 magic (53 ef at byte 1080) read through the first attach
echo "KE-STILL-READS $(dd if=/dev/nbd0 bs=1024 skip=1 count=1 2>/dev/null | od -An -tx1 -j56 -N2 | tr -s ' ')"
try DISCONNECT -d /dev/nbd0
sleep 0.5
try CHECK-AFTER -c /dev/nbd0
# the same against a device held by an ioctl-mode holder
try FIRST-IOCTL -L 10.0.2.2 "$port" /dev/nbd1
try BUSY2-IOCTL -L 10.0.2.2 "$port" /dev/nbd1
try BUSY2-NETLINK 10.0.2.2 "$port" /dev/nbd1
echo "KE-STILL-READS2 $(dd if=/dev/nbd1 bs=1024 skip=1 count=1 2>/dev/null | od -An -tx1 -j56 -N2 | tr -s ' ')"
try DISCONNECT2 -d /dev/nbd1
sleep 0.5
# two connections: fine where the export advertises CAN_MULTI_CONN; refused
# before anything is attached where it does not (netlink and ioctl)
try MULTICONN -C 2 10.0.2.2 "$port" /dev/nbd0
try MULTICONN-DISCONNECT -d /dev/nbd0
sleep 0.5
refused NO-MULTICONN -C 2 10.0.2.2 "$port_nomc" /dev/nbd0
try NO-MULTICONN-CHECK -c /dev/nbd0
refused NO-MULTICONN-IOCTL -L -C 2 10.0.2.2 "$port_nomc" /dev/nbd0
try NO-MULTICONN-IOCTL-CHECK -c /dev/nbd0
# ioctl mode against a server that refuses requests over 16 KiB
try MAX16K-IOCTL -L 10.0.2.2 "$port_max16k" /dev/nbd2
echo "KE-MAX16K-MAX-SECTORS-KB $(cat /sys/block/nbd2/queue/max_sectors_kb)"
dd if=/dev/nbd2 of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
echo "KE-MAX16K-READ rc=$?"
dd if=/dev/nbd2 of=/run/max16k bs=1M skip=8 count=1 iflag=direct 2>/dev/null &&
	dd if=/run/max16k of=/dev/nbd2 bs=1M seek=8 count=1 oflag=direct conv=notrunc 2>/dev/null
echo "KE-MAX16K-WRITE rc=$?"
echo "KE-MAX16K-REFUSED $(dmesg | grep -c 'nbd2: Other side returned error')"
try MAX16K-DISCONNECT -d /dev/nbd2
sleep 0.5
# without the driver, and without a modprobe the kernel could load it with
rm -f /sbin/modprobe
rmmod nbd && echo "KE-RMMOD ok"
try NO-DRIVER 10.0.2.2 "$port" /dev/nbd0
try NO-DRIVER-IOCTL -L 10.0.2.2 "$port" /dev/nbd0
