#!/bin/bash
# boot.sh - boot the cached Debian kernel with a test initramfs under qemu (tcg).
#
# Usage: tests/vm/boot.sh --initrd FILE [--append "kernel args"] [--timeout SEC]
#                         [--log FILE] [--mem MB] [--drive-none] [--tap IFNAME]
#                         [--nic SPEC] [-- EXTRA QEMU ARGS...]
# qemu-system-x86_64 -accel tcg,tb-size=128 -cpu max,-erms -m 512 (--mem) -nographic -no-reboot, serial console
# (console=ttyS0 panic=-1 + --append), -nic user,model=e1000 (host loopback is 10.0.2.2
# in the guest), or with --tap an e1000 on the existing tap device IFNAME (run
# in the network namespace that has it, see syslib.sh's sys_dhcp_net), or with
# --nic SPEC "-nic SPEC" (SPEC none: no network card).
# --drive-none: -nodefaults, so the guest gets no default IDE CD-ROM,
# floppy or VGA, only the serial console and the NIC. The console goes to stdout and,
# with --log, to FILE. Exit status: qemu's, or 124 if killed at the timeout
# (default 120 s).
#
# Why -erms: QEMU 7.2's TCG executes `rep stosb` on a page that once held
# translated code through its slow path (perf: page_collection_lock), and the
# guest kernel clears every page it allocates with `rep stosb` when the CPU
# says ERMS. After a large initramfs ran (dracut: bash, systemd, udev) and was
# freed, guests spent minutes clearing pages (soft lockups in clear_page_erms;
# dracut's shell-flavour boot reached multi-user at 362 s instead of 69 s).
# Without ERMS the kernel clears with `rep stosq`, 8 times fewer iterations.
# That was not all: a page's list of translated blocks can still make one
# clear take seconds (the guest stalled for 40-70 s after dracut's shell
# flavour switched root, its RIP in clear_page_rep); a 128 MiB translation
# cache (tb-size, default 1 GiB) is flushed now and then, which empties those
# lists: the same boot reached multi-user at 77-102 s instead of 190-230 s.
# NBDBOOT_VM_CPU and NBDBOOT_VM_ACCEL override -cpu and -accel.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

initrd="" append="" timeout=120 mem=512 log=/dev/null nodefaults=() extra=() nic=(-nic user,model=e1000)
while [ $# -gt 0 ]; do
	case $1 in
	--initrd) initrd=$2; shift 2 ;;
	--append) append=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--log) log=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--drive-none) nodefaults=(-nodefaults -serial mon:stdio); shift ;;
	--tap) nic=(-netdev "tap,id=n0,ifname=$2,script=no,downscript=no" -device e1000,netdev=n0); shift 2 ;;
	--nic) nic=(-nic "$2"); shift 2 ;;
	--) shift; extra=("$@"); break ;;
	*) die "unknown argument $1" ;;
	esac
done
[ -f "$initrd" ] || die "usage: $0 --initrd FILE [--append ARGS] [--timeout SEC] [--log FILE] [--drive-none] [--tap IFNAME] [--nic SPEC] [-- QEMU ARGS]"
need qemu-system-x86_64 qemu-system-x86
need timeout coreutils

# At most NBDBOOT_VM_SLOTS (default: the number of CPUs) guests at once on
# this machine, whoever starts them: TCG guests on a shared core are slow
# enough to trip the tests' deadlines.  Waiting for a slot is not counted
# against --timeout.
slots=${NBDBOOT_VM_SLOTS:-$(nproc)}
lockdir=${NBDBOOT_CACHE:-$HOME/.cache/nbdboot}
mkdir -p "$lockdir"
got_slot() {
	local i
	for i in $(seq "$slots"); do
		exec 8>"$lockdir/vm-slot.$i"
		flock -n 8 && return 0
		exec 8>&-
	done
	return 1
}
until got_slot; do sleep 0.5; done

tree=$("$here/kernel.sh")
kver=$(cat "$tree/kver")
set +e
timeout -k 5 "$timeout" qemu-system-x86_64 -accel "${NBDBOOT_VM_ACCEL:-tcg,tb-size=128}" -cpu "${NBDBOOT_VM_CPU:-max,-erms}" -m "$mem" -nographic -no-reboot \
	${nodefaults[@]+"${nodefaults[@]}"} \
	-kernel "$tree/boot/vmlinuz-$kver" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 $append" \
	"${nic[@]}" ${extra[@]+"${extra[@]}"} </dev/null | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" != 124 ] || echo "boot.sh: timed out after $timeout s" >&2
exit "$rc"
