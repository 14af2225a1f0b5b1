#!/bin/bash
# nbdboot's dracut module (/usr/lib/dracut/modules.d/95nbdboot): the root
# file system on an NBD export, attached by nbdboot.  `dracut --add nbdboot`.
#
# It takes NBD roots over from dracut's own nbd module (95nbd, installed
# just before this one): its cmdline hook and generator are removed,
# /sbin/nbdroot is nbdboot's, so only nbdboot ever attaches, and nbd-client
# goes with the libraries only it used (GnuTLS, libnl: some 2 MB).
# TLS files come from /etc/nbdboot of the system the image is built on (see
# install()).

# called by dracut
check() {
	local _rootdev
	require_binaries nbdboot || return 1
	# host-only images get it by themselves when / is on an NBD device
	if [[ $hostonly ]]; then
		_rootdev=$(find_root_block_device)
		[[ -b /dev/block/$_rootdev ]] && check_block_and_slaves block_is_nbd "$_rootdev" && return 0
	fi
	return 255
}

# called by dracut
depends() {
	echo network rootfs-block
}

# called by dracut: the driver, and kTLS with the ciphers nbdboot offers
# (AES-GCM, ChaCha20-Poly1305) and their accelerated forms where the kernel
# has them; on every image, host-only or not (the host may never have
# loaded them)
installkernel() {
	hostonly='' instmods nbd tls gcm ghash-generic ghash-clmulni-intel ctr aesni-intel \
		chacha20poly1305 chacha-generic chacha-x86_64 poly1305-generic poly1305-x86_64
}

# called by dracut
install() {
	local _bin _f
	_bin=$(find_binary nbdboot) || return 1
	inst_simple "$_bin" /usr/sbin/nbdboot
	inst_simple "$moddir/nbdboot-lib.sh" /lib/nbdboot-lib.sh

	if dracut_module_included nbd; then
		dinfo "nbdboot: NBD roots are attached by nbdboot: dropping the nbd module's cmdline hook and generator, replacing /sbin/nbdroot"
		rm -f -- "$initdir/lib/dracut/hooks/cmdline/90-parse-nbdroot.sh" "$initdir/sbin/nbdroot" \
			"$initdir$systemdutildir/system-generators/dracut-nbd-generator"
		. /usr/lib/nbdboot/hook-functions.sh || return 1
		dinfo "$(nbdboot_drop_nbd_client "$initdir")"
	fi
	inst_hook cmdline 90 "$moddir/parse-nbdboot.sh"
	inst_script "$moddir/nbdroot.sh" /sbin/nbdroot
	ln_r /sbin/nbdroot /sbin/nbdsroot
	if dracut_module_included systemd-initrd; then
		inst_script "$moddir/nbdboot-generator.sh" "$systemdutildir/system-generators/dracut-nbdboot-generator"
	fi
	# systemd-networkd calls no netroot handler: the initqueue job attaches
	if dracut_module_included systemd-networkd; then
		: >"$initdir/lib/dracut/nbdboot-networkd"
	fi
	inst_multiple grep

	# TLS: the CA certificates nbdboot checks the server with, and a client
	# certificate when both halves are there, from the building system's
	# /etc/nbdboot, where nbdboot looks for them by default
	if [[ -f $dracutsysrootdir/etc/nbdboot/ca.pem ]]; then
		inst_simple /etc/nbdboot/ca.pem
	else
		dinfo "nbdboot: no /etc/nbdboot/ca.pem: TLS roots (nbds://) need nbdboot.cacert="
	fi
	if [[ -f $dracutsysrootdir/etc/nbdboot/cert.pem && -f $dracutsysrootdir/etc/nbdboot/key.pem ]]; then
		for _f in cert.pem key.pem; do inst_simple "/etc/nbdboot/$_f"; done
	fi
	dracut_need_initqueue
}
