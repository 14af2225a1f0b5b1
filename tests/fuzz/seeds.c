/*
 * seeds.c - write the seed corpora that come from tests/unit.c's tables:
 * kernel command lines (cmdline), URIs (uri), argument vectors (argv) and
 * the unit tests' certificate skeletons (san).  Built and run by
 * tests/fuzz/make-seeds.sh, not by make:  seeds CORPUS_DIR
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

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	corpus = argv[1];
	cmdline_seeds();
	argv_seeds();
	uri_seeds();
	san_seeds();
	return 0;
}
