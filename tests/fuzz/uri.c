/*
 * uri - libFuzzer target for nbd_parse_uri (nbd://, nbds://, nbd+unix://,
 * nbds+unix://).  Input: the URI (bytes after a NUL are not part of it).
 *
 * Properties on success:
 *   - the host has no byte <= ' ', '/', '[', ']' or >= 0x7f; a TCP URI has
 *     a host and no socket, a Unix URI a socket path and no host;
 *   - the port is a number from 1 to 65535 as printed by %u;
 *   - TLS is asked exactly for the nbds schemes;
 *   - every name is NUL-terminated inside its buffer.
 * On failure: an error is recorded.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

static bool host_ok(const char *h)
{
	for (; *h; h++)
		if ((unsigned char)*h <= ' ' || *h == '/' || *h == '[' || *h == ']' ||
		    (unsigned char)*h >= 0x7f)
			return false;
	return true;
}

static bool port_ok(const char *p)
{
	size_t n = strspn(p, "0123456789");
	return n > 0 && n <= 5 && !p[n] && p[0] != '0' && atoi(p) <= 65535;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_config cfg;
	char *uri = fuzz_string(data, size);
	bool is_unix = !strncmp(uri, "nbd+unix://", 11) || !strncmp(uri, "nbds+unix://", 12);
	bool wants_tls = !strncmp(uri, "nbds://", 7) || !strncmp(uri, "nbds+unix://", 12);

	config_defaults(&cfg);
	nbd_error_clear();
	int rc = nbd_parse_uri(&cfg, uri);
	if (rc) {
		PROPERTY(rc == -1, "nbd_parse_uri returned %d", rc);
		PROPERTY(nbd_last_error()[0], "'%s' failed without an error message", uri);
		free(uri);
		return 0;
	}
	PROPERTY(TERMINATED(cfg.host) && TERMINATED(cfg.port) && TERMINATED(cfg.unix_path) &&
			 TERMINATED(cfg.name),
		 "a name is not terminated inside its buffer");
	PROPERTY(host_ok(cfg.host), "host '%s' has a forbidden byte", cfg.host);
	if (is_unix)
		PROPERTY(cfg.unix_path[0] && !cfg.host[0], "nbd+unix URI '%s': socket '%s', host '%s'",
			 uri, cfg.unix_path, cfg.host);
	else
		PROPERTY(cfg.host[0] && !cfg.unix_path[0], "TCP URI '%s': host '%s', socket '%s'", uri,
			 cfg.host, cfg.unix_path);
	PROPERTY(port_ok(cfg.port), "port '%s'", cfg.port);
	PROPERTY(cfg.tls == wants_tls, "'%s' gives tls=%d", uri, cfg.tls);
	free(uri);
	return 0;
}
