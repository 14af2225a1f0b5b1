/*
 * cmdline - libFuzzer target for the kernel command line parser
 * (nbd_parse_cmdline) and what --print-env makes of its result.
 *
 * Input: COMMAND LINE \0 ROOTPATH \0 ROOTSERVER.  The two DHCP values are
 * what an initramfs exports after DHCP; a missing part is unset, an empty
 * part is set to "".  Without any NUL byte the input is a plain command line.
 *
 * Properties on success:
 *   - cfg.device is /dev/nbdN and cfg.root is that device or a partition of
 *     it, /dev/nbdNpM (N, M without leading zeros, M not 0);
 *   - nbd_format_env's text, decoded as sh reads NAME='...' lines, gives
 *     back exactly the 15 values of cfg and nothing else, and its length is
 *     below NBD_ENV_MAX;
 *   - nbd_config_check runs on the result.
 * On failure: an error is recorded and it is one line.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

/* Decimal without a leading zero, as the kernel names devices. */
static bool kernel_number(const char *s)
{
	size_t n = strspn(s, "0123456789");
	return n > 0 && !s[n] && (n == 1 || s[0] != '0');
}

static bool is_nbd_device(const char *dev)
{
	return !strncmp(dev, "/dev/nbd", 8) && kernel_number(dev + 8);
}

static bool is_root_of(const char *root, const char *dev)
{
	size_t n = strlen(dev);
	if (strncmp(root, dev, n))
		return false;
	if (!root[n])
		return true;
	return root[n] == 'p' && kernel_number(root + n + 1) && strcmp(root + n + 1, "0");
}

/* ---- NAME='VALUE' lines, decoded the way sh does --------------------------- */

struct env_var {
	const char *name;
	char want[NBD_STRING_MAX + 1];
	bool seen;
};

/* The value after NAME=: quoted segments and \' only, up to the newline.
 * Anything else would be shell syntax and is a violation. */
static const char *sh_value(const char *p, const char *end, char *out, size_t outsz)
{
	size_t n = 0;
	for (;;) {
		if (p < end && *p == '\'') {
			const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
			PROPERTY(q, "print-env: unterminated quote");
			PROPERTY(n + (size_t)(q - p - 1) < outsz, "print-env: value longer than any field");
			memcpy(out + n, p + 1, (size_t)(q - p - 1));
			n += (size_t)(q - p - 1);
			p = q + 1;
		} else if (end - p >= 2 && p[0] == '\\' && p[1] == '\'') {
			PROPERTY(n + 1 < outsz, "print-env: value longer than any field");
			out[n++] = '\'';
			p += 2;
		} else {
			PROPERTY(p < end && *p == '\n', "print-env: unquoted byte 0x%02x in a value",
				 p < end ? (unsigned char)*p : 0);
			out[n] = 0;
			return p + 1;
		}
	}
}

static void check_env(const struct nbd_config *cfg)
{
	static char text[NBD_ENV_MAX], value[NBD_STRING_MAX + 1];
	static struct env_var vars[] = {
		{ .name = "NBD_SERVER" },    { .name = "NBD_PORT" },      { .name = "NBD_SOCKET" },
		{ .name = "NBD_EXPORT" },    { .name = "NBD_DEVICE" },    { .name = "NBD_ROOT" },
		{ .name = "NBD_FSTYPE" },    { .name = "NBD_ROOTFLAGS" }, { .name = "NBD_METHOD" },
		{ .name = "NBD_READONLY" },  { .name = "NBD_TLS" },       { .name = "NBD_WAIT" },
		{ .name = "NBD_BLOCKSIZE" }, { .name = "NBD_TIMEOUT" },   { .name = "NBD_CONNECTIONS" },
	};
	const size_t nvars = sizeof vars / sizeof vars[0];
	bool on_unix = cfg->unix_path[0] != 0;
	const char *values[] = {
		on_unix ? "" : cfg->host, on_unix ? "" : cfg->port, cfg->unix_path, cfg->name,
		cfg->device, cfg->root, cfg->fstype, cfg->rootflags,
		cfg->use_ioctl ? "ioctl" : "netlink", cfg->readonly ? "1" : "0", cfg->tls ? "1" : "0",
	};
	for (size_t i = 0; i < nvars; i++) {
		vars[i].seen = false;
		if (i < sizeof values / sizeof values[0])
			snprintf(vars[i].want, sizeof vars[i].want, "%s", values[i]);
	}
	snprintf(vars[11].want, sizeof vars[11].want, "%u", cfg->wait_seconds);
	snprintf(vars[12].want, sizeof vars[12].want, "%u",
		 cfg->block_size ? cfg->block_size : NBD_DEFAULT_BLOCK);
	snprintf(vars[13].want, sizeof vars[13].want, "%u", cfg->timeout);
	snprintf(vars[14].want, sizeof vars[14].want, "%u", cfg->conns);

	size_t len = nbd_format_env(cfg, text, sizeof text);
	PROPERTY(len < NBD_ENV_MAX, "print-env: %zu bytes, NBD_ENV_MAX is %d", len, NBD_ENV_MAX);
	PROPERTY(strlen(text) == len, "print-env: returned %zu, wrote %zu", len, strlen(text));
	char *exact = malloc(len + 1); /* the same text into a buffer of exactly its size */
	PROPERTY(exact && nbd_format_env(cfg, exact, len + 1) == len && !strcmp(exact, text),
		 "print-env: a buffer of the returned size + 1 does not get the same text");
	free(exact);

	for (const char *p = text, *end = text + len; p < end;) {
		const char *eq = memchr(p, '=', (size_t)(end - p));
		PROPERTY(eq, "print-env: a line without '='");
		struct env_var *v = NULL;
		for (size_t i = 0; i < nvars; i++)
			if (strlen(vars[i].name) == (size_t)(eq - p) &&
			    !memcmp(vars[i].name, p, (size_t)(eq - p)))
				v = &vars[i];
		PROPERTY(v, "print-env: unexpected variable '%.*s'", (int)(eq - p), p);
		PROPERTY(!v->seen, "print-env: %s printed twice", v->name);
		v->seen = true;
		p = sh_value(eq + 1, end, value, sizeof value);
		PROPERTY(!strcmp(value, v->want), "print-env: %s reads back as '%s', cfg has '%s'",
			 v->name, value, v->want);
	}
	for (size_t i = 0; i < nvars; i++)
		PROPERTY(vars[i].seen, "print-env: %s missing", vars[i].name);
}

/* ---- one run ------------------------------------------------------------------- */

static void set_dhcp(const char *name, const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nul;
	if (!*p) {
		unsetenv(name);
		return;
	}
	nul = memchr(*p, 0, (size_t)(end - *p));
	char *v = fuzz_string(*p, nul ? (size_t)(nul - *p) : (size_t)(end - *p));
	setenv(name, v, 1);
	free(v);
	*p = nul ? nul + 1 : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_config cfg;
	const uint8_t *end = data + size, *nul = memchr(data, 0, size);
	const uint8_t *rest = nul ? nul + 1 : NULL;
	char *text = fuzz_string(data, nul ? (size_t)(nul - data) : size);
	set_dhcp("ROOTPATH", &rest, end);
	set_dhcp("ROOTSERVER", &rest, end);

	config_defaults(&cfg);
	nbd_error_clear();
	int rc = nbd_parse_cmdline(&cfg, text);
	free(text);
	if (rc) {
		PROPERTY(rc == -1, "nbd_parse_cmdline returned %d", rc);
		PROPERTY(nbd_last_error()[0], "failed without an error message");
		PROPERTY(!strchr(nbd_last_error(), '\n'), "error message is more than one line: '%s'",
			 nbd_last_error());
		return 0;
	}
	PROPERTY(TERMINATED(cfg.host) && TERMINATED(cfg.port) && TERMINATED(cfg.unix_path) &&
			 TERMINATED(cfg.name) && TERMINATED(cfg.device) && TERMINATED(cfg.root) &&
			 TERMINATED(cfg.fstype) && TERMINATED(cfg.rootflags) &&
			 TERMINATED(cfg.cacert) && TERMINATED(cfg.cert) && TERMINATED(cfg.key) &&
			 TERMINATED(cfg.tlshostname),
		 "a string in the configuration is not terminated inside its buffer");
	PROPERTY(is_nbd_device(cfg.device), "device '%s' is not /dev/nbdN", cfg.device);
	PROPERTY(is_root_of(cfg.root, cfg.device), "root '%s' is neither %s nor a partition of it",
		 cfg.root, cfg.device);
	check_env(&cfg);
	nbd_error_clear();
	if (nbd_config_check(&cfg))
		PROPERTY(nbd_last_error()[0], "nbd_config_check failed without an error message");
	return 0;
}
