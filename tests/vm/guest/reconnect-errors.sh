#!/bin/sh
# reconnect-errors.sh - guest side of scenario 23 in tests/vm/scenarios.sh
# (initrd-nbd.sh runs it when the command line has vmtest.reconnect).  The host
# acts on the RE-STEP lines this prints (it watches the console):
#   1  nbdboot -p with a first server that is down (vmtest.port-down=) and
#      --failover to vmtest.port=: attached to the second, /dev/nbd0; then
#      -L -p on /dev/nbd2 warns that the ioctls cannot reconnect
#   2  a block is written (O_DIRECT); RE-STEP 2: the host kills the server and
#      starts one with an export of another size on the same port.  A read
#      waits; the monitor must refuse that server (its message on /dev/kmsg:
#      RE-REFUSED); RE-STEP 2b: the host serves the right image again and the
#      read completes with what was written (RE-READ-AFTER); the refusal was
#      told once (RE-REFUSED-TIMES).  Then -d ends the device and its monitor.
#   3  /dev/nbd1 with --dead-timeout 6; RE-STEP 3: the host kills the server
#      for good.  A read fails within a bound (RE-GONE rc=1 secs=N), the
#      monitor says the I/O fails now, -d works and the monitor ends.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
port="" down=""
for w in $(cat /proc/cmdline); do
	case $w in
	vmtest.port=*) port=${w#*=} ;;
	vmtest.port-down=*) down=${w#*=} ;;
	esac
done
up() { cut -d' ' -f1 /proc/uptime; }
# wait_dmesg REGEX SECONDS: until the kernel log has a line matching REGEX
wait_dmesg() {
	i=0
	while [ $i -lt $(($2 * 10)) ]; do
		l=$(dmesg | grep -E "$1" | tail -n1)
		[ -n "$l" ] && { echo "$l"; return 0; }
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
monitors() {  # the pids of '@' processes
	m=""
	for d in /proc/[0-9]*; do
		c=""
		IFS= read -r c 2>/dev/null <"$d/cmdline"
		case $c in @*) m="$m ${d#/proc/}" ;; esac
	done
	echo "${m# }"
}
# gone_within SECONDS: no '@' process left before then
gone_within() {
	i=0
	while [ -n "$(monitors)" ] && [ $i -lt $(($1 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
	[ -z "$(monitors)" ]
}

msg=$(nbdboot 10.0.2.2 "$down" /dev/nbd0 --failover "10.0.2.2:$port" -p --dead-timeout 60 2>&1)
echo "RE-ATTACH rc=$? $(printf '%s\n' "$msg" | head -n1)"
printf '%s\n' "$msg" | sed 's/^/RE-MSG /'
echo "RE-MONITORS $(monitors)"
# the ioctls cannot reconnect: -p with -L says so, and starts no monitor
msg=$(nbdboot 10.0.2.2 "$port" /dev/nbd2 -L -p 2>&1)
echo "RE-IOCTL rc=$? $(printf '%s\n' "$msg" | grep 'cannot reconnect')"
nbdboot -d /dev/nbd2
echo "RE-IOCTL-DISCONNECT rc=$?"

dd if=/dev/urandom of=/block bs=4k count=1 2>/dev/null
sum=$(md5sum </block | cut -d' ' -f1)
dd if=/block of=/dev/nbd0 bs=4k seek=256 oflag=direct conv=fsync 2>/dev/null
echo "RE-WROTE rc=$? $sum"
echo "RE-STEP 2"
# the host kills the server now: the read below waits for a connection
sleep 1
(dd if=/dev/nbd0 bs=4k skip=256 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1 >/read-after) &
reader=$!
if l=$(wait_dmesg 'nbdboot: refusing .* for /dev/nbd0' 60); then echo "RE-REFUSED $l"; else echo "RE-NOT-REFUSED"; fi
echo "RE-STEP 2b"
i=0
while kill -0 $reader 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
echo "RE-READ-AFTER $(cat /read-after 2>/dev/null) waited=$((i / 10)) s"
l=$(wait_dmesg 'nbdboot: /dev/nbd0 reconnected' 5) && echo "RE-RECONNECTED $l"
# told once, however many attempts met it: /dev/kmsg rate-limits its writers
echo "RE-REFUSED-TIMES $(dmesg | grep -c 'nbdboot: refusing .* for /dev/nbd0')"
nbdboot -d /dev/nbd0
echo "RE-DISCONNECT rc=$?"
if gone_within 15; then echo "RE-MONITOR-GONE"; else echo "RE-MONITOR-STILL $(monitors)"; fi
l=$(wait_dmesg 'nbdboot: /dev/nbd0 was disconnected; its monitor ends' 2) && echo "RE-ENDED $l"

msg=$(nbdboot 10.0.2.2 "$port" /dev/nbd1 -p --dead-timeout 6 2>&1)
echo "RE-ATTACH3 rc=$? $(printf '%s\n' "$msg" | head -n1)"
echo "RE-STEP 3"
sleep 2
t0=$(up)
dd if=/dev/nbd1 bs=4k skip=300 count=1 iflag=direct of=/dev/null 2>/dev/null
rc=$?
echo "RE-GONE rc=$rc secs=$(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%d", b - a + 0.5 }')"
l=$(wait_dmesg 'nbdboot: no server for /dev/nbd1 within 6 s' 15) && echo "RE-LATE $l"
nbdboot -d /dev/nbd1
echo "RE-DISCONNECT3 rc=$?"
if gone_within 45; then echo "RE-MONITOR-GONE3"; else echo "RE-MONITOR-STILL3 $(monitors)"; fi
echo "RE-RATELIMITED $(dmesg | grep -c 'nbdboot: .* suppressed due to ratelimiting')"
echo "RE-DONE"
