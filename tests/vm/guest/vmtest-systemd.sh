#!/bin/bash
# /usr/local/sbin/vmtest of the systemd test root (tests/vm/sysroot.sh), run by
# vmtest.service after multi-user.target.  Prints, on the console:
#   VMTEST root=DEV fstype=T options=O       what / is
#   VMTEST times switch_root=S multi_user=S   guest seconds from kernel start
#                                             (systemd's monotonic timestamps)
#   VMTEST resident=PID:NAME,...              processes whose argv[0] starts with '@'
#   VMTEST initramfs=empty | FILES            nbdboot as /init: what is left in the
#                                             initramfs a resident process has as root
#   VMTEST overlay tmpfs size=S               nbdboot.overlay: its tmpfs's size
#   VMTEST data ok SHA256 | VMTEST data FAILED ...
# The data check writes 4 MiB of random bytes to /var/lib/vmtest/data (name
# from vmtest.data=, default data), syncs, drops the page cache and reads it
# back; the host reads the file from the image after shutdown and compares.
# It also installs a systemd-shutdown hook (/usr/lib/systemd/system-shutdown/),
# which runs after systemd-shutdown's killing rounds and the remount read-only,
# just before poweroff, and prints
#   VMTEST late resident=PID:NAME,... read=RC  the '@' processes still there,
#                                             and dd's status reading 4 MiB of
#                                             the root device with O_DIRECT
# Then: systemctl poweroff (vmtest.halt=none leaves the machine running).
set -u
exec >/dev/console 2>&1
say() { echo "VMTEST $*"; }
arg() { local w; for w in $(cat /proc/cmdline); do case $w in "$1="*) echo "${w#*=}"; return ;; esac; done; echo "$2"; }
mono() { # UNIT PROPERTY: a monotonic timestamp in seconds (3 decimals)
	local us
	us=$(systemctl show -P "$2" ${1:+"$1"} 2>/dev/null)
	[ -n "$us" ] && [ "$us" != 0 ] && printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000)) || echo none
}

read -r dev mnt fstype opts _ < <(awk '$2 == "/"' /proc/mounts | tail -n1)
say "root=$(readlink -f "$dev") fstype=$fstype options=$opts"
sw=$(mono "" UserspaceTimestampMonotonic)
say "times switch_root=$sw multi_user=$(mono multi-user.target ActiveEnterTimestampMonotonic) now=$(cut -d' ' -f1 /proc/uptime)"
say "resident=$(ps -eo pid=,args= | awk '$2 ~ /^@/ { printf "%s%s:%s", n++ ? "," : "", $1, $2 }')"
# nbdboot as /init: what is left of the initramfs (its root, seen through a
# resident process that was forked there) and the overlay's tmpfs
for p in $(ps -eo pid=,args= | awk '$2 ~ /^@/ { print $1 }'); do
	[ "$(stat -L -c %d:%i "/proc/$p/root/")" = "$(stat -c %d:%i /)" ] && continue
	left=$(ls -A "/proc/$p/root/" 2>/dev/null | grep -vx root | tr '\n' ' ')
	say "initramfs=${left:-empty}"
	break
done
o=$(awk '$2 == "/run/nbdboot/rw" { print $4 }' /proc/mounts | tr ',' '\n' | grep '^size=')
[ -z "$o" ] || say "overlay tmpfs $o"

mkdir -p /usr/lib/systemd/system-shutdown
cat >/usr/lib/systemd/system-shutdown/vmtest-late <<'LATE'
#!/bin/sh
exec >/dev/console 2>&1
r=$(ps -eo pid=,args= | awk '$2 ~ /^@/ { printf "%s%s:%s", n++ ? "," : "", $1, $2 }')
dev=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts)
dd if="$(readlink -f "$dev")" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null
echo "VMTEST late resident=$r read=$?"
LATE
chmod 755 /usr/lib/systemd/system-shutdown/vmtest-late
sync

name=$(arg vmtest.data data)
mkdir -p /var/lib/vmtest
f=/var/lib/vmtest/$name
if head -c 4194304 /dev/urandom >"$f.tmp" && sync "$f.tmp" && mv "$f.tmp" "$f" && sync; then
	sum=$(sha256sum <"$f" | cut -d' ' -f1)
	echo 3 >/proc/sys/vm/drop_caches
	back=$(sha256sum <"$f" | cut -d' ' -f1)
	if [ "$sum" = "$back" ]; then say "data ok $sum"; else say "data FAILED wrote $sum read $back"; fi
else
	say "data FAILED could not write $f"
fi
sync
[ "$(arg vmtest.halt poweroff)" = none ] || systemctl poweroff --no-block
