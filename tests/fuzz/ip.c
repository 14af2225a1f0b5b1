/*
 * ip - libFuzzer target for the /init mode's words of the kernel command
 * line: the input (bytes after a NUL are not part of it) is given to
 * nbd_parse_ip as an ip= value, to nbd_parse_bootif as a BOOTIF= value,
 * and to nbd_parse_boot as a whole command line.
 *
 * Properties of an ip= configuration taken (alone or in a command line):
 *   - it asks for DHCP or leaves the network off or is static, never two:
 *     without a client address exactly one of DHCP and off, with one never
 *     off;
 *   - the device ends inside its buffer, is shorter than 16 bytes, has no
 *     '/' and is not "." or "..";
 *   - the host name ends inside its buffer and has only letters, digits,
 *     '-' and '.';
 *   - the netmask is 0 or contiguous;
 *   - a MAC given by BOOTIF= before it is kept.
 * nbd_parse_bootif: a MAC taken prints back as the input (lower case, '-'
 * between bytes, without a leading "01-").
 * nbd_parse_boot: init is "" or an absolute path, ending inside its
 * buffer; the overlay size is "" or digits with at most one of k, m, g, %
 * after them (and only with the overlay on); panic is unset or 0 to
 * NBD_WAIT_MAX seconds, wait at most NBD_WAIT_MAX.
 * On failure: an error is recorded and it is one line.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

static const uint8_t bootif_mac[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };

static void check_failure(const char *what, int rc)
{
	PROPERTY(rc == -1, "%s returned %d", what, rc);
	PROPERTY(nbd_last_error()[0], "%s failed without an error message", what);
	PROPERTY(!strchr(nbd_last_error(), '\n'), "%s: error message is more than one line: '%s'", what,
		 nbd_last_error());
}

static bool contiguous(uint32_t mask)
{
	uint32_t inv = ~ntohl(mask);
	return (inv & (inv + 1)) == 0;
}

static void check_ip(const struct nbd_ipconf *ip)
{
	PROPERTY(ip->given, "ip= taken but not marked given");
	if (ip->addr)
		PROPERTY(!ip->off, "a client address with the network off");
	else
		PROPERTY(ip->dhcp != ip->off, "no client address: dhcp %d, off %d", ip->dhcp, ip->off);
	PROPERTY(TERMINATED(ip->device) && strlen(ip->device) < 16, "device not terminated or too long");
	PROPERTY(!strchr(ip->device, '/') && strcmp(ip->device, ".") && strcmp(ip->device, ".."),
		 "device '%s'", ip->device);
	PROPERTY(TERMINATED(ip->hostname) &&
			 strspn(ip->hostname, DIGITS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.") ==
				 strlen(ip->hostname),
		 "host name '%.64s'", ip->hostname);
	PROPERTY(contiguous(ip->netmask), "netmask %08x", ntohl(ip->netmask));
}

static void check_parse_ip(const char *text)
{
	struct nbd_ipconf ip = { .has_mac = true };
	memcpy(ip.mac, bootif_mac, 6);
	nbd_error_clear();
	int rc = nbd_parse_ip(&ip, text);
	PROPERTY(ip.has_mac && !memcmp(ip.mac, bootif_mac, 6), "BOOTIF's MAC lost");
	if (rc) {
		check_failure("nbd_parse_ip", rc);
		return;
	}
	check_ip(&ip);
}

static void check_bootif(const char *text)
{
	struct nbd_ipconf ip = { 0 };
	char back[32], want[32];
	nbd_error_clear();
	int rc = nbd_parse_bootif(&ip, text);
	if (rc) {
		check_failure("nbd_parse_bootif", rc);
		return;
	}
	PROPERTY(ip.has_mac, "BOOTIF taken without a MAC");
	snprintf(back, sizeof back, "%02x-%02x-%02x-%02x-%02x-%02x", ip.mac[0], ip.mac[1], ip.mac[2],
		 ip.mac[3], ip.mac[4], ip.mac[5]);
	snprintf(want, sizeof want, "%s", strlen(text) == 20 ? text + 3 : text);
	for (char *c = want; *c; c++)
		*c = *c == ':' ? '-' : *c >= 'A' && *c <= 'F' ? (char)(*c - 'A' + 'a') : *c;
	PROPERTY(!strcmp(back, want), "BOOTIF=%s read as %s", text, back);
}

static bool size_ok(const char *s)
{
	size_t n = strspn(s, DIGITS);
	return !*s || (n && (!s[n] || (strchr("kKmMgG%", s[n]) && !s[n + 1])));
}

static void check_boot(const char *text)
{
	static struct nbd_boot b;
	nbd_error_clear();
	int rc = nbd_parse_boot(&b, text);
	if (rc) {
		check_failure("nbd_parse_boot", rc);
		return;
	}
	PROPERTY(TERMINATED(b.init) && (!b.init[0] || b.init[0] == '/'), "init '%.100s'", b.init);
	PROPERTY(TERMINATED(b.overlay_size) && size_ok(b.overlay_size), "overlay size '%.32s'",
		 b.overlay_size);
	PROPERTY(b.overlay || !b.overlay_size[0], "an overlay size without the overlay");
	PROPERTY(b.panic_s == NBD_PANIC_UNSET || (b.panic_s >= 0 && b.panic_s <= NBD_WAIT_MAX), "panic %d",
		 b.panic_s);
	PROPERTY(b.wait_s <= NBD_WAIT_MAX, "wait %u", b.wait_s);
	if (b.ip.given)
		check_ip(&b.ip);
	else
		PROPERTY(!b.ip.dhcp && !b.ip.off && !b.ip.addr && !b.ip.device[0], "ip= settings without ip=");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_string(data, size);
	check_parse_ip(text);
	check_bootif(text);
	check_boot(text);
	free(text);
	return 0;
}
