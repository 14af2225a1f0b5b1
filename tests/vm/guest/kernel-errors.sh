#!/bin/sh
# kernel-errors.sh - guest side of scenario 14 in tests/vm/scenarios.sh: the
# kernel's refusals each get their own message and exit code 3, and a refused
# attach leaves the device that was already attached working.  Prints KE-*
# lines; initrd-nbd.sh runs it when the command line has vmtest.kerrors.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
port=""
for w in $(cat /proc/cmdline); do
	case $w in vmtest.port=*) port=${w#*=} ;; esac
done
try() {  # try LABEL ARGS...: one line with the exit code and the message
	label=$1
	shift
	msg=$(nbdboot "$@" 2>&1)
	echo "KE-$label rc=$? $msg" | head -n1
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
# without the driver, and without a modprobe the kernel could load it with
rm -f /sbin/modprobe
rmmod nbd && echo "KE-RMMOD ok"
try NO-DRIVER 10.0.2.2 "$port" /dev/nbd0
try NO-DRIVER-IOCTL -L 10.0.2.2 "$port" /dev/nbd0
