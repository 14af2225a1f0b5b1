/*
 * dhcp - libFuzzer target for nbd_dhcp_parse, the /init mode's DHCP client
 * reading what its packet socket gives it.  Input: one received IPv4
 * packet, from its IP header.
 *
 * Each input is parsed twice: as the reply to a fixed xid and MAC, and as
 * the reply to the xid and MAC in its own BOOTP fields (when it is long
 * enough to have them), so that the option walk is reached whatever the
 * fuzzer puts there.
 *
 * Properties on success:
 *   - the type is OFFER, ACK or NAK;
 *   - an OFFER or ACK gives an address a host can have (not 0/8, 127/8,
 *     multicast, class E or broadcast), a server identifier, and a netmask
 *     that is contiguous and not 0;
 *   - at most NBD_DNS_MAX DNS servers;
 *   - host name, domain and root-path end inside their buffers; the names
 *     have only letters, digits, '-' and '.', the root-path only printable
 *     ASCII without spaces;
 *   - a DISCOVER, and a REQUEST for an OFFER, built for this client are
 *     well-formed (lengths, IPv4 checksum, options 50 and 54 the offer's)
 *     and the parser refuses both: they are a client's, not a server's.
 * On failure: a reason, one line of printable text.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

static const uint8_t fixed_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
#define FIXED_XID 0x11223344u

static bool name_ok(const char *s)
{
	return strspn(s, DIGITS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.") == strlen(s);
}

static bool path_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static bool host_addr(uint32_t a)
{
	uint8_t first = (uint8_t)(ntohl(a) >> 24);
	return first != 0 && first != 127 && first < 224;
}

/* All ones, then all zeroes: ~mask + 1 is a power of two. */
static bool contiguous(uint32_t mask)
{
	uint32_t inv = ~ntohl(mask);
	return (inv & (inv + 1)) == 0;
}

/* The value of option code in a built packet; NULL if absent. */
static const uint8_t *built_option(const uint8_t *p, size_t len, uint8_t code)
{
	size_t i = IPV4_HDR_LEN + UDP_HDR_LEN + sizeof(struct bootp_msg);
	while (i + 1 < len && p[i] != DHCP_OPT_END) {
		if (p[i] == DHCP_OPT_PAD) {
			i++;
			continue;
		}
		PROPERTY(i + 2 + p[i + 1] <= len, "built: option %u runs past the packet", p[i]);
		if (p[i] == code)
			return p + i + 2;
		i += 2 + p[i + 1];
	}
	return NULL;
}

/* What nbd_dhcp_build makes for this client: well-formed, and refused. */
static void check_built(uint32_t xid, const uint8_t *mac, const struct nbd_lease *offer)
{
	static uint8_t p[DHCP_PACKET_MAX];
	struct nbd_lease l;
	const char *host = offer && offer->hostname[0] ? offer->hostname : NULL;
	size_t n = nbd_dhcp_build(p, sizeof p, xid, mac, 1, offer, host);
	PROPERTY(n >= IPV4_HDR_LEN + UDP_HDR_LEN + DHCP_MIN_LEN && n <= sizeof p,
		 "built: %zu bytes", n);
	PROPERTY(be16_get(p + 2) == n && be16_get(p + IPV4_HDR_LEN + 4) == n - IPV4_HDR_LEN,
		 "built: IPv4 length %u, UDP length %u for %zu bytes", be16_get(p + 2),
		 be16_get(p + IPV4_HDR_LEN + 4), n);
	PROPERTY(ip_checksum(p, IPV4_HDR_LEN) == 0, "built: bad IPv4 header checksum");
	const uint8_t *type = built_option(p, n, DHCP_OPT_TYPE);
	PROPERTY(type && *type == (offer ? DHCP_REQUEST : DHCP_DISCOVER), "built: wrong message type");
	if (offer) {
		const uint8_t *want = built_option(p, n, DHCP_OPT_REQUESTED_IP);
		const uint8_t *server = built_option(p, n, DHCP_OPT_SERVER_ID);
		PROPERTY(want && !memcmp(want, &offer->addr, 4), "built: REQUEST without the offer's address");
		PROPERTY(server && !memcmp(server, &offer->server_id, 4), "built: REQUEST without the offer's server");
	}
	PROPERTY(nbd_dhcp_parse(p, n, xid, mac, &l) != NULL, "the parser took the client's own %s",
		 offer ? "REQUEST" : "DISCOVER");
}

static void check(const uint8_t *data, size_t size, uint32_t xid, const uint8_t *mac)
{
	static struct nbd_lease l;
	const char *why = nbd_dhcp_parse(data, size, xid, mac, &l);
	if (why) {
		PROPERTY(why[0], "an empty reason");
		for (const char *c = why; *c; c++)
			PROPERTY(*c >= ' ' && *c < 0x7f, "reason '%s' has byte 0x%02x", why, (unsigned char)*c);
		return;
	}
	PROPERTY(l.type == DHCP_OFFER || l.type == DHCP_ACK || l.type == DHCP_NAK, "type %u", l.type);
	PROPERTY(TERMINATED(l.hostname) && TERMINATED(l.domain) && TERMINATED(l.root_path),
		 "a name is not terminated inside its buffer");
	PROPERTY(name_ok(l.hostname), "host name '%s'", l.hostname);
	PROPERTY(name_ok(l.domain), "domain '%s'", l.domain);
	PROPERTY(path_ok(l.root_path) && strlen(l.root_path) <= NBD_ROOTPATH_MAX, "root-path '%s'", l.root_path);
	PROPERTY(l.ndns <= NBD_DNS_MAX, "%u DNS servers", l.ndns);
	if (l.type == DHCP_NAK)
		return;
	PROPERTY(host_addr(l.addr), "address %08x offered", ntohl(l.addr));
	PROPERTY(l.server_id, "no server identifier");
	PROPERTY(l.netmask && contiguous(l.netmask), "netmask %08x", ntohl(l.netmask));
	if (l.type == DHCP_OFFER)
		check_built(xid, mac, &l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact copy, so ASan sees any read past the packet */
	uint8_t *pkt = malloc(size ? size : 1);
	if (!pkt)
		abort();
	if (size)
		memcpy(pkt, data, size);
	check(pkt, size, htonl(FIXED_XID), fixed_mac);
	size_t bootp = size ? (size_t)(pkt[0] & 15) * 4 + UDP_HDR_LEN : 0;
	if (bootp && size >= bootp + offsetof(struct bootp_msg, chaddr) + 6) {
		uint32_t xid;
		uint8_t mac[6];
		memcpy(&xid, pkt + bootp + offsetof(struct bootp_msg, xid), 4);
		memcpy(mac, pkt + bootp + offsetof(struct bootp_msg, chaddr), 6);
		check(pkt, size, xid, mac);
	}
	free(pkt);
	static bool once;
	if (!once) {
		once = true;
		check_built(htonl(FIXED_XID), fixed_mac, NULL);
	}
	return 0;
}
