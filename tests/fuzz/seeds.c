/*
 * seeds.c - write the seed corpora that come from tests/unit.c's tables:
 * kernel command lines (cmdline), URIs (uri), argument vectors (argv),
 * the unit tests' certificate skeletons (san), the /init mode's words (ip)
 * and DHCP server replies (dhcp).  Built and run by
 * tests/fuzz/make-seeds.sh, not by make:  seeds CORPUS_DIR
 * With --dhcp-capture IFACE DIR it records dnsmasq's replies instead (see
 * dhcp_capture below).
 *
 * Includes unit.c (which includes nbdboot.c) for its tables; unit.c's main
 * is renamed out of the way.
 */
#define main unit_main
#include "../unit.c"
#undef main

#include <sys/stat.h>

static const char *corpus;

static void put_seed(const char *target, const char *name, const void *data, size_t len)
{
	char path[512], slug[96];
	size_t n = 0;
	for (const char *p = name; *p && n + 1 < sizeof slug; p++) {
		char c = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			slug[n++] = c;
		else if (n && slug[n - 1] != '-')
			slug[n++] = '-';
	}
	while (n && slug[n - 1] == '-')
		n--;
	slug[n] = 0;
	snprintf(path, sizeof path, "%s/%s", corpus, target);
	mkdir(path, 0755);
	snprintf(path, sizeof path, "%s/%s/%s", corpus, target, slug);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* Command line, then ROOTPATH and ROOTSERVER after NUL bytes (see cmdline.c). */
static void cmdline_seeds(void)
{
	static const char dhcp_path[] = "nbdroot=dhcp\0" "10.1.1.1:/dhcpdisk";
	static const char dhcp_server[] = "nbdroot=/d2\0\0" "10.2.2.2";
	static const char dhcp_comma[] = "nbdroot=dhcp root=/dev/nbd1p2\0" "srv,disk,nbd1";
	char long_path[14 + 600];
	for (size_t i = 0; i < sizeof cmdline_cases / sizeof cmdline_cases[0]; i++)
		put_seed("cmdline", cmdline_cases[i].name, cmdline_cases[i].text,
			 strlen(cmdline_cases[i].text));
	put_seed("cmdline", "dhcp root-path", dhcp_path, sizeof dhcp_path - 1);
	put_seed("cmdline", "dhcp server", dhcp_server, sizeof dhcp_server - 1);
	put_seed("cmdline", "dhcp root-path comma form", dhcp_comma, sizeof dhcp_comma - 1);
	memcpy(long_path, "nbdroot=dhcp\0", 13);
	memset(long_path + 13, 'a', sizeof long_path - 13);
	put_seed("cmdline", "dhcp root-path too long", long_path, sizeof long_path);
}

/* Arguments separated by NUL bytes (see argv.c). */
static void argv_seeds(void)
{
	static const char all_flags[] = "srv\0-N\0n\0" "10809\0/dev/nbd0\0-swap\0-persist\0"
					"-systemd-mark\0-b\0" "1024\0-t\0" "30\0-C\0" "4\0-R\0-L\0-g\0"
					"--wait\0" "7";
	static const char tls[] = "nbds://h/x\0--cacert\0/etc/ca.pem\0-H\0name\0--cert\0c\0--key\0k";
	static const char cmdline[] = "--cmdline\0/proc/cmdline\0--print-env\0-v";
	for (size_t i = 0; i < sizeof args_cases / sizeof args_cases[0]; i++) {
		char buf[1024];
		size_t n = 0;
		for (int a = 0; args_cases[i].argv[a]; a++) {
			size_t l = strlen(args_cases[i].argv[a]);
			if (a)
				buf[n++] = 0;
			memcpy(buf + n, args_cases[i].argv[a], l);
			n += l;
		}
		put_seed("argv", args_cases[i].name, buf, n);
	}
	put_seed("argv", "every nbd-client flag", all_flags, sizeof all_flags - 1);
	put_seed("argv", "tls options", tls, sizeof tls - 1);
	put_seed("argv", "cmdline print-env", cmdline, sizeof cmdline - 1);
}

/* Every URI of the argument and command line tables. */
static void uri_seeds(void)
{
	static const char *const extra[] = { "nbds://h/x", "nbds+unix:///x?socket=/s" };
	for (size_t i = 0; i < sizeof args_cases / sizeof args_cases[0]; i++)
		for (int a = 0; args_cases[i].argv[a]; a++)
			if (strstr(args_cases[i].argv[a], "://"))
				put_seed("uri", args_cases[i].name, args_cases[i].argv[a],
					 strlen(args_cases[i].argv[a]));
	for (size_t i = 0; i < sizeof cmdline_cases / sizeof cmdline_cases[0]; i++) {
		const char *u = strstr(cmdline_cases[i].text, "root=nbd");
		if (u && strstr(u, "://")) {
			u += 5;
			put_seed("uri", cmdline_cases[i].name, u, strcspn(u, " "));
		}
	}
	for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
		put_seed("uri", extra[i], extra[i], strlen(extra[i]));
}

/* test_der's skeletons: address-length byte (0: 4 bytes), address, DER. */
static void san_seeds(void)
{
	static const uint8_t names[] = {
		0x82, 0x08, 'n', 'b', 'd', '.', 't', 'e', 's', 't',
		0x87, 0x04, 10, 0, 2, 2,
	};
	static const uint8_t bad_san[] = { 0x87, 0x09, 10, 0, 2, 2 };
	uint8_t seed[1 + 4 + 400] = { 0, 10, 0, 2, 2 };
	size_t n = der_cert(seed + 5, names, sizeof names, false);
	put_seed("san", "unit skeleton", seed, 5 + n);
	n = der_cert(seed + 5, names, sizeof names, true);
	put_seed("san", "unit skeleton critical", seed, 5 + n);
	n = der_cert(seed + 5, bad_san, sizeof bad_san, false);
	put_seed("san", "unit skeleton bad ipaddress", seed, 5 + n);
}

/* ip= values, BOOTIF= values and /init command lines (see ip.c). */
static void ip_seeds(void)
{
	static const char boot[] = "BOOTIF=01-52-54-00-12-34-56 ip=10.0.2.15::10.0.2.2:255.255.255.0:box:eth0:off "
				   "root=nbd:10.0.2.2:rootfs:ext4 nbdboot.overlay=512m nbdboot.panic=30 "
				   "nbdboot.wait=20 init=/lib/systemd/systemd ro quiet -- single";
	char name[160];
	for (size_t i = 0; i < sizeof ip_cases / sizeof ip_cases[0]; i++)
		put_seed("ip", ip_cases[i].name, ip_cases[i].value, strlen(ip_cases[i].value));
	for (size_t i = 0; i < sizeof bootif_cases / sizeof bootif_cases[0]; i++) {
		snprintf(name, sizeof name, "bootif %s", bootif_cases[i].name);
		put_seed("ip", name, bootif_cases[i].value, strlen(bootif_cases[i].value));
	}
	for (size_t i = 0; i < sizeof boot_cases / sizeof boot_cases[0]; i++) {
		snprintf(name, sizeof name, "boot %s", boot_cases[i].name);
		put_seed("ip", name, boot_cases[i].text, strlen(boot_cases[i].text));
	}
	put_seed("ip", "boot a whole init command line", boot, sizeof boot - 1);
}

/* What qemu's user networking (libslirp's bootp.c) sends: from 10.0.2.2 to
 * the broadcast address, TOS low delay, a UDP checksum, 548 bytes of BOOTP
 * (312 of them options, zero-padded), siaddr 10.0.2.2; a NAK has yiaddr
 * 255.255.255.255, no server id and a message (56). */
static size_t slirp_reply(uint8_t *p, uint8_t type)
{
	static const uint8_t lease[] = { 53, 1, 0, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2,
					 6, 4, 10, 0, 2, 3, 51, 4, 0, 1, 0x51, 0x80, 255 };
	static const char nak[] = "\x35\x01\x06\x38\x1frequested address not available\xff";
	static uint8_t pseudo[12 + DHCP_PACKET_MAX];
	const size_t total = IPV4_HDR_LEN + UDP_HDR_LEN + 236 + 312;
	uint32_t xid = htonl(CLIENT_XID);
	memset(p, 0, total);
	p[0] = 0x45, p[1] = 0x10;
	be16_put(p + 2, (uint16_t)total);
	be16_put(p + 4, 0x0007); /* slirp's IP ids count up */
	p[8] = 64, p[9] = IPPROTO_UDP;
	memcpy(p + 12, "\x0a\x00\x02\x02\xff\xff\xff\xff", 8);
	be16_put(p + 10, ip_checksum(p, IPV4_HDR_LEN));
	be16_put(p + AT_UDP, DHCP_SERVER_PORT);
	be16_put(p + AT_UDP + 2, DHCP_CLIENT_PORT);
	be16_put(p + AT_UDP + 4, (uint16_t)(total - AT_UDP));
	p[AT_OP] = BOOTP_REPLY, p[AT_OP + 1] = 1, p[AT_OP + 2] = 6;
	memcpy(p + AT_XID, &xid, 4);
	memcpy(p + AT_YIADDR, type == DHCP_NAK ? "\xff\xff\xff\xff" : "\x0a\x00\x02\x0f", 4);
	memcpy(p + AT_YIADDR + 4, "\x0a\x00\x02\x02", 4);
	memcpy(p + AT_CHADDR, client_mac, 6);
	be32_put(p + AT_MAGIC, DHCP_MAGIC_COOKIE);
	if (type == DHCP_NAK) {
		memcpy(p + AT_OPTIONS, nak, sizeof nak - 1);
	} else {
		memcpy(p + AT_OPTIONS, lease, sizeof lease);
		p[AT_OPTIONS + 2] = type;
	}
	memcpy(pseudo, p + 12, 8); /* the UDP checksum's pseudo-header */
	pseudo[9] = IPPROTO_UDP;
	be16_put(pseudo + 10, (uint16_t)(total - AT_UDP));
	memcpy(pseudo + 12, p + AT_UDP, total - AT_UDP);
	uint16_t sum = ip_checksum(pseudo, 12 + total - AT_UDP);
	be16_put(p + AT_UDP + 6, sum ? sum : 0xffff);
	return total;
}

/* Server replies of unit.c's tests and their refusals, qemu's, and what
 * nbdboot itself sends (see dhcp.c); make-seeds.sh adds dnsmasq's. */
static void dhcp_seeds(void)
{
	static uint8_t p[DHCP_PACKET_MAX];
	static const char *const paths[] = { "nbd:10.0.3.1:10809:ext4", "nbd://10.0.3.1/rootfs",
					     "nbds://10.0.3.1:10900/rootfs", "10.0.3.1:10809/rootfs",
					     "10.0.3.1,rootfs,nbd1" };
	struct nbd_lease offer = { .type = DHCP_OFFER, .addr = htonl(0x0a000232), .server_id = htonl(0x0a000301) };
	char name[160];
	put_seed("dhcp", "offer", p, server_reply(p, O(OFFER_OPTS, 6, 8, 10, 0, 3, 53, 10, 0, 3, 54, 255)));
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		snprintf(name, sizeof name, "ack root-path %s", paths[i]);
		put_seed("dhcp", name, p, ack_with(p, DHCP_OPT_ROOT_PATH, paths[i], strlen(paths[i]) + (i & 1)));
	}
	put_seed("dhcp", "ack host name", p, ack_with(p, DHCP_OPT_HOSTNAME, "box-1", 5));
	put_seed("dhcp", "ack domain", p, ack_with(p, DHCP_OPT_DOMAIN, "ex.lan", 6));
	put_seed("dhcp", "nak", p, server_reply(p, O(53, 1, DHCP_NAK, 54, 4, 10, 0, 3, 1, 56, 4, 'g', 'o', 'n', 'e', 255)));
	put_seed("dhcp", "ack option overload", p, overload_reply(p));
	for (size_t i = 0; i < sizeof dhcp_bad / sizeof dhcp_bad[0]; i++) {
		snprintf(name, sizeof name, "refused %s", dhcp_bad[i].name);
		put_seed("dhcp", name, p, bad_reply(p, &dhcp_bad[i]));
	}
	put_seed("dhcp", "qemu slirp offer", p, slirp_reply(p, DHCP_OFFER));
	put_seed("dhcp", "qemu slirp ack", p, slirp_reply(p, DHCP_ACK));
	put_seed("dhcp", "qemu slirp nak", p, slirp_reply(p, DHCP_NAK));
	put_seed("dhcp", "nbdboot discover", p, nbd_dhcp_build(p, sizeof p, htonl(CLIENT_XID), client_mac, 0, NULL, NULL));
	put_seed("dhcp", "nbdboot request", p, nbd_dhcp_build(p, sizeof p, htonl(CLIENT_XID), client_mac, 2, &offer, "box"));
}

/* ---- seeds --dhcp-capture IFACE DIR: dnsmasq's replies --------------------------
 * From a packet socket on IFACE (in a network namespace make-seeds.sh made,
 * dnsmasq at the other end of a veth pair): nbdboot's own DISCOVER and
 * REQUEST, what comes back written as dnsmasq-offer and dnsmasq-ack, then a
 * REQUEST for an address outside dnsmasq's range for dnsmasq-nak. */

static size_t capture_reply(int fd, uint32_t xid, const uint8_t *mac, uint8_t want, uint8_t *p,
			    struct nbd_lease *l)
{
	int64_t until = nbd_now_ms() + 5000;
	while (poll_until(fd, POLLIN, until) == 0) {
		ssize_t n = recv(fd, p, DHCP_PACKET_MAX, MSG_DONTWAIT);
		if (n > 0 && !nbd_dhcp_parse(p, (size_t)n, xid, mac, l) && l->type == want)
			return (size_t)n;
	}
	return 0;
}

static int capture_exchange(int fd, int index, const uint8_t *mac, const struct nbd_lease *offer,
			    uint8_t want, const char *dir, const char *file, struct nbd_lease *l)
{
	static uint8_t p[DHCP_PACKET_MAX];
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
				  .sll_ifindex = index, .sll_halen = 6 };
	uint32_t xid = htonl(0x5eed0000u | want);
	char path[512];
	memset(to.sll_addr, 0xff, 6);
	for (int tries = 0; tries < 3; tries++) {
		size_t n = nbd_dhcp_build(p, sizeof p, xid, mac, 0, offer, "nbdboot-seed");
		if (sendto(fd, p, n, 0, (struct sockaddr *)&to, sizeof to) < 0)
			break;
		if ((n = capture_reply(fd, xid, mac, want, p, l))) {
			snprintf(path, sizeof path, "%s/%s", dir, file);
			FILE *f = fopen(path, "wb");
			if (!f || fwrite(p, 1, n, f) != n || fclose(f))
				break;
			printf("  %-36s %5zu bytes\n", file, n);
			return 0;
		}
	}
	fprintf(stderr, "seeds: no DHCP %s from dnsmasq\n", file);
	return -1;
}

static int dhcp_capture(const char *iface, const char *dir)
{
	struct nbd_lease offer, ack, nak;
	uint8_t mac[6];
	int index = iface_index(iface);
	struct sockaddr_ll me = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = index };
	int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
	if (index <= 0 || !iface_mac(iface, mac) || fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
		fprintf(stderr, "seeds: no packet socket on %s: %s\n", iface, strerror(errno));
		return 1;
	}
	if (capture_exchange(fd, index, mac, NULL, DHCP_OFFER, dir, "dnsmasq-offer", &offer) ||
	    capture_exchange(fd, index, mac, &offer, DHCP_ACK, dir, "dnsmasq-ack", &ack))
		return 1;
	offer.addr = htonl((ntohl(offer.addr) & ~0xffu) | 250);
	return capture_exchange(fd, index, mac, &offer, DHCP_NAK, dir, "dnsmasq-nak", &nak) ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--dhcp-capture"))
		return dhcp_capture(argv[2], argv[3]);
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR | --dhcp-capture IFACE DIR\n", argv[0]);
		return 2;
	}
	corpus = argv[1];
	cmdline_seeds();
	argv_seeds();
	uri_seeds();
	san_seeds();
	ip_seeds();
	dhcp_seeds();
	return 0;
}
