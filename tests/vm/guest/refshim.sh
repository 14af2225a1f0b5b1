#!/bin/sh
# refshim.sh - a stand-in for nbdboot's kernel-command-line mode built on
# Debian's nbd-client, so that tests/vm/scenarios.sh can check its own guest
# and host logic against the reference client (SCEN_CLIENT=ref installs this
# as /sbin/nbdboot).  It knows only the forms the scenarios use.
case $1 in
-c | -d) exec nbd-client "$@" ;;
--cmdline) shift ;;
*) exec nbd-client "$@" ;;
esac
file=/proc/cmdline printenv=0
for a; do case $a in --print-env) printenv=1 ;; *) file=$a ;; esac; done
srv="" port=10809 name="" dev=/dev/nbd0 root="" fs="" flags="" method=netlink ro=0 wait=0
tls=0 cacert="" cert="" key="" tlsname="" conns=1
opt() {
	case $1 in
	tls | nbdboot.tls) tls=1 ;;
	cacert=* | nbdboot.cacert=*) tls=1 cacert=${1#*=} ;;
	cert=* | nbdboot.cert=*) cert=${1#*=} ;;
	key=* | nbdboot.key=*) key=${1#*=} ;;
	tlshostname=* | nbdboot.tlshostname=*) tlsname=${1#*=} ;;
	conns=* | nbdboot.conns=*) conns=${1#*=} ;;
	ioctl | nbdboot.ioctl) method=ioctl ;;
	readonly | nbdboot.readonly) ro=1 ;;
	wait=* | nbdboot.wait=*) wait=${1#*=} ;;
	device=* | nbdboot.device=*) dev=${1#*=} ;;
	esac
}
for w in $(cat "$file"); do
	case $w in
	root=nbd://* | netroot=nbd://* | root=nbds://* | netroot=nbds://*)
		case $w in *=nbds://*) tls=1 ;; esac
		v=${w#*://} hp=${v%%/*} name=${v#*/}
		srv=${hp%:*} port=${hp##*:} ;;
	root=nbd:* | netroot=nbd:*)
		v=${w#*=nbd:}
		IFS=: read -r srv p fs flags opts <<END
$v
END
		case $p in *[!0-9]* | "") name=$p ;; *) port=$p ;; esac
		IFS=,
		for o in $opts; do opt "$o"; done
		unset IFS ;;
	nbdroot=*,*) IFS=, read -r srv name d <<END
${w#nbdroot=}
END
		dev=/dev/$d ;;
	nbdroot=*)
		v=${w#nbdroot=} hp=${v%%/*} name=${v#*/}
		srv=${hp%:*} port=${hp#*:} ;;
	root=/dev/nbd*) root=${w#root=} ;;
	nbdboot.*) opt "$w" ;;
	esac
done
[ -n "$srv" ] || { echo "nbdboot: no nbd root on the kernel command line" >&2; exit 2; }
[ -n "$root" ] || root=$dev
if [ $printenv = 1 ]; then
	for v in "NBD_SERVER=$srv" "NBD_PORT=$port" "NBD_EXPORT=$name" "NBD_DEVICE=$dev" \
		"NBD_ROOT=$root" "NBD_FSTYPE=$fs" "NBD_ROOTFLAGS=$flags" "NBD_METHOD=$method" \
		"NBD_READONLY=$ro" "NBD_TLS=$tls" "NBD_CONNECTIONS=$conns"; do
		echo "${v%%=*}='${v#*=}'"
	done
	exit 0
fi
# -persist: what both generators pass (dracut -p, Debian -persist)
set -- "$srv" "$port" "$dev" -b 512 -persist
[ -z "$name" ] || set -- "$@" -N "$name"
[ $method = netlink ] || set -- "$@" -nonetlink -systemd-mark
[ $ro = 0 ] || set -- "$@" -R
[ "$conns" = 1 ] || set -- "$@" -C "$conns"
if [ $tls = 1 ]; then
	set -- "$@" -x
	[ -z "$cacert" ] || set -- "$@" -A "$cacert"
	[ -z "$cert" ] || set -- "$@" -certfile "$cert"  # 3.24 takes no -F
	[ -z "$key" ] || set -- "$@" -keyfile "$key"
	[ -z "$tlsname" ] || set -- "$@" -H "$tlsname"
fi
end=$(($(date +%s) + wait))
while :; do
	nbd-client "$@" >/tmp/nbd-client.out 2>&1 </dev/null && break
	out=$(cat /tmp/nbd-client.out)
	if [ "$(date +%s)" -ge $end ]; then
		echo "nbdboot: $(echo "$out" | tail -n1)" >&2
		exit 1
	fi
	sleep 1
done
blockdev --rereadpt "$dev" 2>/dev/null
exit 0
