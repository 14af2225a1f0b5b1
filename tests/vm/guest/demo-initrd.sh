#!/bin/sh
# demo-initrd.sh - initramfs side of `make demo` (tests/vm/demo.sh): what an
# initramfs needs to boot from an NBD root with nbdboot, and nothing more.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo
echo "initramfs: kernel command line: $(cat /proc/cmdline)"
echo "initramfs: \$ nbdboot --cmdline"
nbdboot --cmdline || { echo "initramfs: nbdboot failed; no root"; exit 1; }
eval "$(nbdboot --cmdline --print-env)" || exit 1
mkdir -p /newroot
echo "initramfs: \$ mount -t $NBD_FSTYPE ${NBD_ROOTFLAGS:+-o $NBD_ROOTFLAGS }$NBD_ROOT /newroot"
mount -t "$NBD_FSTYPE" ${NBD_ROOTFLAGS:+-o "$NBD_ROOTFLAGS"} "$NBD_ROOT" /newroot || exit 1
echo "/newroot /sbin/init" >/run/switch-root
echo "initramfs: switching to the NBD root"
