/*
 * nbdboot - attach a Network Block Device export as the root of a booting
 * Linux system.  One static binary for the initramfs.
 *
 * The file reads in the order a boot flows through it:
 *   errors -> configuration (argv, URIs) -> connection -> wire I/O ->
 *   negotiation -> output -> main.
 * Each section says what it owns and what it may call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbdboot.h"

#ifndef NBDBOOT_TLS
#define NBDBOOT_TLS 1
#endif
#ifndef NBDBOOT_VERSION
#define NBDBOOT_VERSION "0.1"
#endif

_Static_assert(NBD_REPLY_MAX >= NBD_INFO_MAX, "receive buffer holds an INFO");
_Static_assert(NBD_REPLY_MAX >= NBD_ERRMSG_MAX, "receive buffer holds an error");

/* ==== Errors ================================================================
 * The first failure is recorded with its class (exit code) and whether a
 * retry may help; callers return -1 and main() prints it once.  Owns the
 * error buffer; calls nothing but libc formatting.
 */

static struct {
	char msg[640];
	int cls;
	bool transient;
} err;

static int fail_v(int cls, bool transient, const char *fmt, va_list ap)
{
	int saved = errno;
	vsnprintf(err.msg, sizeof err.msg, fmt, ap);
	err.cls = cls;
	err.transient = transient;
	errno = saved;
	return -1;
}

#define DEFINE_FAIL(fn, cls, transient)                 \
	static int fn(const char *fmt, ...)             \
	{                                               \
		va_list ap;                             \
		va_start(ap, fmt);                      \
		fail_v(cls, transient, fmt, ap);        \
		va_end(ap);                             \
		return -1;                              \
	}
DEFINE_FAIL(fail_usage, EXIT_USAGE, false)
DEFINE_FAIL(fail_server, EXIT_SERVER, false)
DEFINE_FAIL(fail_retry, EXIT_SERVER, true)

const char *nbd_last_error(void) { return err.msg; }
int nbd_last_error_class(void) { return err.cls ? err.cls : EXIT_SERVER; }
bool nbd_last_error_transient(void) { return err.transient; }

static void say(const char *fmt, ...)
{
	char line[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "nbdboot: %s\n", line);
}

void nbd_sanitise(char *out, size_t outsz, const uint8_t *in, size_t len)
{
	size_t n = 0, i;
	if (outsz == 0)
		return;
	for (i = 0; i < len && i < NBD_SHOW_MAX && n + 1 < outsz; i++)
		out[n++] = (in[i] >= 0x20 && in[i] < 0x7f) ? (char)in[i] : '?';
	if (i < len && n + 4 < outsz) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = 0;
}

/* The export name as shown in messages: sanitised, bounded. */
static const char *shown_name(const char *name)
{
	static char buf[NBD_SHOW_MAX + 4];
	nbd_sanitise(buf, sizeof buf, (const uint8_t *)name, strlen(name));
	return buf;
}

/* ==== Configuration =========================================================
 * Fills struct nbd_config from argv (nbd-client compatible, long and
 * single-dash long options, options after positionals) and from NBD URIs.
 * Calls only the error helpers.
 */

enum {
	O_PROBE = 256, O_WAIT, O_CMDLINE, O_PRINT_ENV,
};

struct opt {
	int id;           /* short letter or O_* */
	const char *name; /* long name, also accepted with a single dash */
	bool arg;
};

static const struct opt options[] = {
	{ 'N', "name", true },        { 'b', "block-size", true },
	{ 't', "timeout", true },     { 'C', "connections", true },
	{ 'R', "readonly", false },   { 'R', "read-only", false },
	{ 'p', "persist", false },    { 's', "swap", false },
	{ 'S', "sdp", false },        { 'm', "systemd-mark", false },
	{ 'n', "nofork", false },     { 'L', "nonetlink", false },
	{ 'L', "ioctl", false },      { 'B', "size", true },
	{ 'P', "preinit", false },    { 'g', "no-optgo", false },
	{ 'u', "unix", false },       { 'x', "enable-tls", false },
	{ 'x', "tls", false },        { 'A', "cacertfile", true },
	{ 'A', "cacert", true },      { 'F', "certfile", true },
	{ 'F', "cert", true },        { 'K', "keyfile", true },
	{ 'K', "key", true },         { 'H', "tlshostname", true },
	{ 'l', "list", false },       { 'c', "check", true },
	{ 'd', "disconnect", true },  { 'h', "help", false },
	{ 'V', "version", false },    { O_PROBE, "probe", false },
	{ O_WAIT, "wait", true },     { O_CMDLINE, "cmdline", false },
	{ O_PRINT_ENV, "print-env", false },
};

static const struct opt *find_long(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
		if (strlen(options[i].name) == len && !memcmp(options[i].name, name, len))
			return &options[i];
	return NULL;
}

static const struct opt *find_short(char c)
{
	for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
		if (options[i].id == (unsigned char)c)
			return &options[i];
	return NULL;
}

static int copy_str(char *dst, size_t dstsz, const char *src, const char *what)
{
	size_t len = strlen(src);
	if (len >= dstsz)
		return fail_usage("%s is too long (%zu bytes, at most %zu)", what, len, dstsz - 1);
	memcpy(dst, src, len + 1);
	return 0;
}

/* Unsigned decimal in [lo, hi]; no sign, no junk. */
static int parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out, const char *what)
{
	uint64_t v = 0;
	if (!*s)
		return fail_usage("%s is empty", what);
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
			return fail_usage("%s '%s' is not a number", what, shown_name(s));
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v < lo || v > hi)
		return fail_usage("%s %s is out of range (%llu to %llu)", what, s,
				  (unsigned long long)lo, (unsigned long long)hi);
	*out = v;
	return 0;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out, const char *what)
{
	uint64_t v;
	if (parse_uint(s, lo, hi, &v, what))
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int set_port(struct nbd_config *cfg, const char *s)
{
	uint64_t v;
	if (parse_uint(s, 1, 65535, &v, "port"))
		return -1;
	snprintf(cfg->port, sizeof cfg->port, "%u", (unsigned)v);
	return 0;
}

/* A host name or address literal: no spaces, controls, or URI syntax. */
static int set_host(struct nbd_config *cfg, const char *s, size_t len)
{
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s++;
		len -= 2;
	}
	if (len == 0)
		return fail_usage("server host is empty");
	if (len > NBD_HOST_MAX)
		return fail_usage("server host is too long (%zu bytes)", len);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == '/' || s[i] == '[' || s[i] == ']' ||
		    (unsigned char)s[i] >= 0x7f)
			return fail_usage("server host '%s' has invalid characters", shown_name(s));
	memcpy(cfg->host, s, len);
	cfg->host[len] = 0;
	return 0;
}

static bool is_device_arg(const char *s)
{
	if (!strncmp(s, "/dev/", 5))
		return true;
	if (strncmp(s, "nbd", 3) || !s[3])
		return false;
	for (s += 3; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static int set_device(struct nbd_config *cfg, const char *s)
{
	char buf[NBD_DEVICE_MAX + 1];
	const char *base = strncmp(s, "/dev/", 5) ? s : s + 5;
	if (!is_device_arg(s) || strncmp(base, "nbd", 3) || !base[3])
		return fail_usage("'%s' is not an nbd device (expected /dev/nbdN)", shown_name(s));
	for (const char *p = base + 3; *p; p++)
		if (*p < '0' || *p > '9')
			return fail_usage("'%s' is not an nbd device (expected /dev/nbdN)", shown_name(s));
	if (strlen(base) + 5 > NBD_DEVICE_MAX)
		return fail_usage("device name '%s' is too long", shown_name(s));
	snprintf(buf, sizeof buf, "/dev/%s", base);
	return copy_str(cfg->device, sizeof cfg->device, buf, "device");
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding for URI paths and query values. */
static int uri_decode(char *dst, size_t dstsz, const char *s, size_t len, const char *what)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned c = (unsigned char)s[i];
		if (c == '%') {
			int hi = i + 2 < len ? hexval(s[i + 1]) : -1;
			int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return fail_usage("bad %%-escape in URI %s", what);
			c = (unsigned)(hi << 4 | lo);
			i += 2;
			if (c == 0)
				return fail_usage("URI %s contains a NUL byte", what);
		}
		if (n + 1 >= dstsz)
			return fail_usage("URI %s is too long", what);
		dst[n++] = (char)c;
	}
	dst[n] = 0;
	return 0;
}

/* nbd+unix:///export?socket=PATH: only "socket=" is meaningful to us. */
static int uri_query(struct nbd_config *cfg, const char *q, bool is_unix)
{
	while (q && *q) {
		const char *end = strchr(q, '&');
		size_t len = end ? (size_t)(end - q) : strlen(q);
		if (len > 7 && !strncmp(q, "socket=", 7)) {
			if (!is_unix)
				return fail_usage("URI has socket= but is not an nbd+unix URI");
			if (uri_decode(cfg->unix_path, sizeof cfg->unix_path, q + 7, len - 7,
				       "socket path"))
				return -1;
		} else if (len > 0 && !(len >= 10 && !strncmp(q, "tls-certif", 10))) {
			return fail_usage("URI query parameter '%.*s' is not supported",
					  (int)(len > 40 ? 40 : len), q);
		}
		q = end ? end + 1 : NULL;
	}
	if (is_unix && !cfg->unix_path[0])
		return fail_usage("nbd+unix URI needs ?socket=PATH");
	return 0;
}

/* Authority: [user@]host[:port], host may be a bracketed IPv6 literal. */
static int uri_authority(struct nbd_config *cfg, const char *a, size_t len)
{
	const char *at = memchr(a, '@', len);
	const char *colon = NULL;
	if (at) {
		len -= (size_t)(at + 1 - a);
		a = at + 1;
	}
	if (len && a[0] == '[') {
		const char *rb = memchr(a, ']', len);
		if (!rb)
			return fail_usage("URI has an unterminated IPv6 address");
		if ((size_t)(rb + 1 - a) < len) {
			if (rb[1] != ':')
				return fail_usage("URI has junk after the IPv6 address");
			colon = rb + 1;
		}
	} else {
		colon = memchr(a, ':', len);
	}
	size_t hostlen = colon ? (size_t)(colon - a) : len;
	if (set_host(cfg, a, hostlen))
		return -1;
	if (colon) {
		char port[16];
		size_t plen = len - hostlen - 1;
		if (plen == 0 || plen >= sizeof port)
			return fail_usage("URI has a bad port");
		memcpy(port, colon + 1, plen);
		port[plen] = 0;
		return set_port(cfg, port);
	}
	return 0;
}

int nbd_parse_uri(struct nbd_config *cfg, const char *uri)
{
	static const struct { const char *scheme; bool tls, is_unix; } schemes[] = {
		{ "nbd://", false, false }, { "nbds://", true, false },
		{ "nbd+unix://", false, true }, { "nbds+unix://", true, true },
	};
	const char *rest = NULL;
	bool is_unix = false;
	for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
		size_t n = strlen(schemes[i].scheme);
		if (!strncmp(uri, schemes[i].scheme, n)) {
			rest = uri + n;
			cfg->tls = cfg->tls || schemes[i].tls;
			is_unix = schemes[i].is_unix;
			break;
		}
	}
	if (!rest)
		return fail_usage("'%s' is not an NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://)",
				  shown_name(uri));
	const char *path = rest + strcspn(rest, "/?#");
	if (*path == '#' || strchr(path, '#'))
		return fail_usage("URI fragments are not supported");
	if (is_unix && path != rest)
		return fail_usage("nbd+unix URI must have an empty host (nbd+unix:///export?socket=PATH)");
	if (!is_unix && uri_authority(cfg, rest, (size_t)(path - rest)))
		return -1;
	const char *query = strchr(path, '?');
	size_t plen = query ? (size_t)(query - path) : strlen(path);
	if (plen > 0 && uri_decode(cfg->name, sizeof cfg->name, path + 1, plen - 1, "export name"))
		return -1;
	return uri_query(cfg, query ? query + 1 : NULL, is_unix);
}

/* A positional argument: HOST or URI first, then PORT and/or DEVICE. */
static int positional(struct nbd_config *cfg, const char *a, int *npos)
{
	if (cfg->mode == MODE_CMDLINE) {
		if ((*npos)++)
			return fail_usage("--cmdline takes at most one FILE");
		return copy_str(cfg->cmdline_file, sizeof cfg->cmdline_file, a, "command line file");
	}
	if ((*npos)++ == 0) {
		if (strstr(a, "://"))
			return nbd_parse_uri(cfg, a);
		return copy_str(cfg->host, sizeof cfg->host, a, "server host");
	}
	if (is_device_arg(a))
		return set_device(cfg, a);
	if (*a >= '0' && *a <= '9')
		return set_port(cfg, a);
	return fail_usage("unexpected argument '%s' (port must be numeric, device /dev/nbdN)",
			  shown_name(a));
}

static int set_mode(struct nbd_config *cfg, enum nbd_mode m)
{
	if (cfg->mode != MODE_ATTACH && cfg->mode != m)
		return fail_usage("conflicting modes on the command line");
	cfg->mode = m;
	return 0;
}

static int apply_option(struct nbd_config *cfg, int id, const char *v)
{
	uint64_t u;
	switch (id) {
	case 'N': return copy_str(cfg->name, sizeof cfg->name, v, "export name");
	case 'b': return parse_u32(v, 1, UINT32_MAX, &cfg->block_size, "block size");
	case 't': return parse_u32(v, 1, UINT32_MAX, &cfg->timeout, "timeout");
	case 'C': return parse_u32(v, 1, 64, &cfg->conns, "connections");
	case 'R': cfg->readonly = true; return 0;
	case 'p': cfg->persist = true; return 0;
	case 's': cfg->swap = true; return 0;
	case 'S': return fail_usage("SDP is not supported (and was removed from Linux)");
	case 'm': cfg->systemd_mark = true; return 0;
	case 'n': cfg->nofork = true; return 0;
	case 'L': cfg->use_ioctl = true; return 0;
	case 'B': return parse_uint(v, 1, NBD_SIZE_MAX, &cfg->size_override, "size");
	case 'P': cfg->preinit = true; return 0;
	case 'g': cfg->no_optgo = true; return 0;
	case 'u': cfg->unix_path[0] = 1; return 0; /* marker: host is a socket path */
	case 'x': cfg->tls = true; return 0;
	case 'A': return copy_str(cfg->cacert, sizeof cfg->cacert, v, "CA file");
	case 'F': return copy_str(cfg->cert, sizeof cfg->cert, v, "certificate file");
	case 'K': return copy_str(cfg->key, sizeof cfg->key, v, "key file");
	case 'H': return copy_str(cfg->tlshostname, sizeof cfg->tlshostname, v, "TLS host name");
	case 'l': return set_mode(cfg, MODE_LIST);
	case 'c': return set_mode(cfg, MODE_CHECK) || set_device(cfg, v);
	case 'd': return set_mode(cfg, MODE_DISCONNECT) || set_device(cfg, v);
	case 'h': return set_mode(cfg, MODE_HELP);
	case 'V': return set_mode(cfg, MODE_VERSION);
	case O_PROBE: return set_mode(cfg, MODE_PROBE);
	case O_CMDLINE: return set_mode(cfg, MODE_CMDLINE);
	case O_PRINT_ENV: cfg->print_env = true; return 0;
	case O_WAIT:
		if (parse_uint(v, 0, NBD_WAIT_MAX, &u, "--wait seconds"))
			return -1;
		cfg->wait_seconds = (unsigned)u;
		return 0;
	}
	return fail_usage("internal: unhandled option");
}

/* One "-x", "-xyz", "-b512", "--name=v", "-name v" or "--name v" word. */
static int option_word(struct nbd_config *cfg, int argc, char **argv, int *i)
{
	const char *a = argv[*i], *word = a + (a[1] == '-' ? 2 : 1);
	const char *eq = strchr(word, '=');
	const struct opt *o = find_long(word, eq ? (size_t)(eq - word) : strlen(word));
	if (o) {
		const char *v = eq ? eq + 1 : NULL;
		if (!o->arg && v)
			return fail_usage("option %.*s takes no value", (int)(eq - a), a);
		if (o->arg && !v) {
			if (*i + 1 >= argc)
				return fail_usage("option %s needs a value", a);
			v = argv[++*i];
		}
		return apply_option(cfg, o->id, v);
	}
	if (a[1] == '-')
		return fail_usage("unknown option '%s' (see --help)", shown_name(a));
	for (const char *p = a + 1; *p; p++) {
		o = find_short(*p);
		if (!o)
			return fail_usage("unknown option '-%c' in '%s' (see --help)", *p, shown_name(a));
		if (!o->arg) {
			if (apply_option(cfg, o->id, NULL))
				return -1;
			continue;
		}
		if (p[1])
			return apply_option(cfg, o->id, p + 1);
		if (*i + 1 >= argc)
			return fail_usage("option -%c needs a value", *p);
		return apply_option(cfg, o->id, argv[++*i]);
	}
	return 0;
}

static void config_defaults(struct nbd_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->mode = MODE_ATTACH;
	memcpy(cfg->port, NBD_DEFAULT_PORT, sizeof NBD_DEFAULT_PORT);
	cfg->wait_seconds = NBD_WAIT_DEFAULT;
	cfg->conns = 1;
}

int nbd_parse_args(struct nbd_config *cfg, int argc, char **argv)
{
	int npos = 0;
	bool unix_flag;
	config_defaults(cfg);
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int r;
		if (!strcmp(a, "--")) {
			while (++i < argc)
				if (positional(cfg, argv[i], &npos))
					return -1;
			break;
		}
		r = (a[0] == '-' && a[1]) ? option_word(cfg, argc, argv, &i)
					  : positional(cfg, a, &npos);
		if (r)
			return -1;
	}
	unix_flag = cfg->unix_path[0] == 1;
	if (unix_flag) {
		cfg->unix_path[0] = 0;
		if (!cfg->host[0])
			return fail_usage("-u needs a socket path in place of the host");
		if (copy_str(cfg->unix_path, sizeof cfg->unix_path, cfg->host, "socket path"))
			return -1;
		cfg->host[0] = 0;
	} else if (cfg->host[0] && !cfg->unix_path[0]) {
		char h[NBD_HOST_MAX + 1];
		memcpy(h, cfg->host, sizeof h);
		if (set_host(cfg, h, strlen(h)))
			return -1;
	}
	return nbd_config_check(cfg);
}

int nbd_config_check(const struct nbd_config *cfg)
{
	bool needs_server = cfg->mode == MODE_ATTACH || cfg->mode == MODE_PROBE ||
			    cfg->mode == MODE_LIST;
	if (needs_server && !cfg->host[0] && !cfg->unix_path[0])
		return fail_usage("no server given (HOST [PORT], an nbd:// URI, or -u SOCKET)");
	if (cfg->block_size && (cfg->block_size < NBD_KERNEL_BLOCK_MIN ||
				cfg->block_size > NBD_KERNEL_BLOCK_MAX ||
				(cfg->block_size & (cfg->block_size - 1))))
		return fail_usage("block size %u is invalid: use a power of two from %u to %u",
				  cfg->block_size, NBD_KERNEL_BLOCK_MIN, NBD_KERNEL_BLOCK_MAX);
	if (cfg->cacert[0] || cfg->cert[0] || cfg->key[0] || cfg->tlshostname[0] || cfg->tls) {
		if (!NBDBOOT_TLS)
			return fail_usage("this nbdboot was built without TLS (NBDBOOT_TLS=0)");
		return fail_usage("TLS is not supported yet by this version of nbdboot");
	}
	if (cfg->print_env && cfg->mode != MODE_CMDLINE)
		return fail_usage("--print-env goes with --cmdline");
	if (cfg->mode == MODE_CMDLINE)
		return fail_usage("--cmdline is not supported yet by this version of nbdboot");
	return 0;
}

/* ==== Connection ============================================================
 * Resolves and connects (TCP or Unix) within the deadline, sets socket
 * options.  Transient failures are marked so nbd_open() can retry.
 */

int64_t nbd_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static bool transient_errno(int e)
{
	return e == ECONNREFUSED || e == ENETUNREACH || e == EHOSTUNREACH || e == ETIMEDOUT ||
	       e == ENETDOWN || e == EHOSTDOWN || e == ECONNRESET || e == ECONNABORTED ||
	       e == EADDRNOTAVAIL || e == EAGAIN || e == ENOENT || e == EPIPE;
}

/* "host:port", "[v6]:port" or the socket path, for messages. */
static const char *server_name(const struct nbd_config *cfg)
{
	static char buf[NBD_HOST_MAX + NBD_UNIX_MAX + 16];
	if (cfg->unix_path[0])
		snprintf(buf, sizeof buf, "%s", cfg->unix_path);
	else if (strchr(cfg->host, ':'))
		snprintf(buf, sizeof buf, "[%s]:%s", cfg->host, cfg->port);
	else
		snprintf(buf, sizeof buf, "%s:%s", cfg->host, cfg->port);
	return buf;
}

static void tune_tcp(int fd)
{
	int on = 1, idle = 60, intvl = 10, cnt = 6;
	/* Latency over batching: each handshake message is one small write. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
	/* Notice a vanished server within about two minutes of silence. */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

/* Non-blocking connect bounded by deadline; returns fd or -1 with errno. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int64_t deadline)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int e = 0;
	socklen_t elen = sizeof e;
	if (fd < 0)
		return -1;
	if (connect(fd, sa, salen) == 0)
		return fd;
	if (errno != EINPROGRESS)
		goto out;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int64_t left = deadline - nbd_now_ms();
		int r;
		if (left <= 0) {
			errno = ETIMEDOUT;
			goto out;
		}
		r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			break;
		if (r < 0 && errno != EINTR)
			goto out;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) == 0 && e == 0)
		return fd;
	errno = e ? e : EIO;
out:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

static int connect_unix(const struct nbd_config *cfg, int64_t deadline)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;
	memcpy(sun.sun_path, cfg->unix_path, strlen(cfg->unix_path) + 1);
	fd = connect_addr((struct sockaddr *)&sun, sizeof sun, deadline);
	if (fd < 0)
		return (transient_errno(errno) ? fail_retry : fail_server)(
			"unable to connect to %s: %s", server_name(cfg), strerror(errno));
	return fd;
}

static int connect_tcp(const struct nbd_config *cfg, int64_t deadline)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	int fd = -1, e = ECONNREFUSED;
	int r = getaddrinfo(cfg->host, cfg->port, &hints, &res);
	if (r == EAI_AGAIN)
		return fail_retry("unable to resolve %s: %s", cfg->host, gai_strerror(r));
	if (r)
		return fail_server("unable to resolve %s: %s", cfg->host, gai_strerror(r));
	for (ai = res; ai && fd < 0; ai = ai->ai_next) {
		/* Leave time for the other addresses if this one is a black hole. */
		int64_t cap = nbd_now_ms() + (ai->ai_next ? 5000 : INT64_MAX / 2);
		fd = connect_addr(ai->ai_addr, ai->ai_addrlen, cap < deadline ? cap : deadline);
		if (fd < 0)
			e = errno;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return (transient_errno(e) ? fail_retry : fail_server)(
			"unable to connect to %s: %s", server_name(cfg), strerror(e));
	tune_tcp(fd);
	return fd;
}

/* ==== Wire I/O ==============================================================
 * Whole-message reads and writes on the non-blocking socket, each bounded
 * by the connection's deadline.  The static receive buffer lives here.
 */

static uint8_t rbuf[NBD_REPLY_MAX];
static uint8_t sbuf[4 + NBD_OPT_HDR_LEN + 4 + NBD_STRING_MAX + 2 + 2];

static int wait_io(struct nbd_conn *c, short events, const char *what)
{
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = events };
		int64_t left = c->deadline_ms - nbd_now_ms();
		int r;
		if (left <= 0)
			return fail_server("timed out waiting for the server (%s)", what);
		r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return fail_server("poll failed (%s): %s", what, strerror(errno));
	}
}

static int read_full(struct nbd_conn *c, void *buf, size_t len, const char *what)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = recv(c->fd, (uint8_t *)buf + got, len - got, MSG_DONTWAIT);
		if (r > 0) {
			got += (size_t)r;
		} else if (r == 0) {
			return fail_server("server closed the connection (%s)", what);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (wait_io(c, POLLIN, what))
				return -1;
		} else if (errno != EINTR) {
			return (errno == ECONNRESET ? fail_retry : fail_server)(
				"connection failed (%s): %s", what, strerror(errno));
		}
	}
	return 0;
}

static int write_all(struct nbd_conn *c, const void *buf, size_t len, const char *what)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = send(c->fd, (const uint8_t *)buf + done, len - done,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r >= 0) {
			done += (size_t)r;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (wait_io(c, POLLOUT, what))
				return -1;
		} else if (errno != EINTR) {
			return fail_server("connection failed (%s): %s", what, strerror(errno));
		}
	}
	return 0;
}

/* ==== Negotiation ===========================================================
 * The handshake, one function per option exchange in wire order:
 * greeting, STARTTLS, GO/INFO, EXPORT_NAME, LIST, ABORT.  Every length
 * from the server is checked against a named bound before it is used.
 * Reusable for reconnects: it needs only a connected socket and the config.
 */

static const char *opt_name(uint32_t opt)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME: return "EXPORT_NAME";
	case NBD_OPT_ABORT: return "ABORT";
	case NBD_OPT_LIST: return "LIST";
	case NBD_OPT_STARTTLS: return "STARTTLS";
	case NBD_OPT_INFO: return "INFO";
	case NBD_OPT_GO: return "GO";
	}
	return "option";
}

/* Send one option; the client flags ride in the same write when pending,
 * so a plaintext attach costs a single round trip after the greeting. */
static int send_option(struct nbd_conn *c, uint32_t opt, const void *data, uint32_t len)
{
	size_t n = 0;
	if (len > sizeof sbuf - 4 - NBD_OPT_HDR_LEN)
		return fail_usage("internal: option %s too long", opt_name(opt));
	if (c->client_flags_pending) {
		be32_put(sbuf, c->pending_client_flags);
		n = 4;
		c->client_flags_pending = false;
	}
	be64_put(sbuf + n, NBD_IHAVEOPT);
	be32_put(sbuf + n + 8, opt);
	be32_put(sbuf + n + 12, len);
	if (len)
		memmove(sbuf + n + NBD_OPT_HDR_LEN, data, len);
	return write_all(c, sbuf, n + NBD_OPT_HDR_LEN + len, opt_name(opt));
}

struct reply {
	uint32_t type, len;
	const uint8_t *data; /* points into rbuf */
};

static uint32_t reply_bound(uint32_t type)
{
	if (type & NBD_REP_FLAG_ERROR)
		return NBD_ERRMSG_MAX;
	switch (type) {
	case NBD_REP_ACK: return 0;
	case NBD_REP_SERVER: return NBD_SERVER_MAX;
	case NBD_REP_INFO: return NBD_INFO_MAX;
	}
	return NBD_REPLY_MAX;
}

/* Read one option reply: common checks first (magic, echoed option, length
 * bound for its type), then the payload into rbuf. */
static int read_reply(struct nbd_conn *c, uint32_t opt, struct reply *r)
{
	uint8_t h[NBD_REP_HDR_LEN];
	if (read_full(c, h, sizeof h, opt_name(opt)))
		return -1;
	if (be64_get(h) != NBD_REP_MAGIC)
		return fail_server("server sent a bad reply magic 0x%016llx to %s",
				   (unsigned long long)be64_get(h), opt_name(opt));
	if (be32_get(h + 8) != opt)
		return fail_server("server answered option %u while we asked %s",
				   be32_get(h + 8), opt_name(opt));
	r->type = be32_get(h + 12);
	r->len = be32_get(h + 16);
	r->data = rbuf;
	if (r->len > reply_bound(r->type))
		return fail_server("server sent a %u-byte reply (type 0x%x) to %s, more than the %u allowed",
				   r->len, r->type, opt_name(opt), reply_bound(r->type));
	return read_full(c, rbuf, r->len, opt_name(opt));
}

/* The server's own words, bounded and sanitised, as ": server says "..."". */
static const char *server_says(const struct reply *r)
{
	static char buf[NBD_SHOW_MAX + 32];
	char text[NBD_SHOW_MAX + 4];
	if (!r->len)
		return "";
	nbd_sanitise(text, sizeof text, r->data, r->len);
	snprintf(buf, sizeof buf, " (server says: %s)", text);
	return buf;
}

/* One message per NBD_REP_ERR_*: what happened and what to do. */
static int reply_error(const struct reply *r, uint32_t opt, const char *name)
{
	const char *says = server_says(r), *on = opt_name(opt);
	char exp[NBD_SHOW_MAX + 32];
	if (*name)
		snprintf(exp, sizeof exp, "export '%s'", shown_name(name));
	else
		snprintf(exp, sizeof exp, "the default export");
	switch (r->type) {
	case NBD_REP_ERR_UNSUP:
		return fail_server("server does not support %s%s", on, says);
	case NBD_REP_ERR_POLICY:
		return fail_server("server refused %s by policy%s", exp, says);
	case NBD_REP_ERR_INVALID:
		return fail_server("server rejected %s as invalid%s", on, says);
	case NBD_REP_ERR_PLATFORM:
		return fail_server("server cannot do %s on its platform%s", on, says);
	case NBD_REP_ERR_TLS_REQD:
		return fail_server("server requires TLS: add --tls or use nbds://%s", says);
	case NBD_REP_ERR_UNKNOWN:
		if (*name)
			return fail_server("server has no export named '%s'%s", shown_name(name), says);
		return fail_server("server has no default export: name one with -N%s", says);
	case NBD_REP_ERR_SHUTDOWN:
		return fail_retry("server is shutting down%s", says);
	case NBD_REP_ERR_BLOCK_SIZE_REQD:
		return fail_server("server requires block size negotiation for %s%s", exp, says);
	case NBD_REP_ERR_TOO_BIG:
		return fail_server("server says the %s request is too big%s", on, says);
	case NBD_REP_ERR_EXT_HEADER_REQD:
		return fail_server("server requires extended headers, which Linux's nbd driver lacks%s",
				   says);
	}
	if (r->type & NBD_REP_FLAG_ERROR)
		return fail_server("server refused %s with error %u%s", on,
				   r->type & ~NBD_REP_FLAG_ERROR, says);
	return fail_server("server sent unexpected reply type %u to %s", r->type, on);
}

static bool pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static int check_size(uint64_t size)
{
	if (size > NBD_SIZE_MAX)
		return fail_server("server reports an absurd export size (%llu bytes)",
				   (unsigned long long)size);
	return 0;
}

static int check_block_sizes(uint32_t min, uint32_t pref, uint32_t max)
{
	uint32_t floor = min > NBD_BLOCK_PREF_MIN ? min : NBD_BLOCK_PREF_MIN;
	if (!pow2(min) || min > NBD_BLOCK_MIN_MAX || !pow2(pref) || pref < floor ||
	    (max != NBD_BLOCK_MAX_ANY && (max < pref || max % min)))
		return fail_server("server sent invalid block sizes (minimum %u, preferred %u, maximum %u)",
				   min, pref, max);
	return 0;
}

/* Second tier: the exact length per info type; unknown types are skipped. */
static int parse_info(const struct reply *r, struct nbd_export *ex, bool *have_export)
{
	uint16_t type;
	if (r->len < 2)
		return fail_server("server sent a %u-byte INFO reply", r->len);
	type = be16_get(r->data);
	if (type == NBD_INFO_EXPORT) {
		if (r->len != NBD_INFO_EXPORT_LEN)
			return fail_server("server sent INFO_EXPORT of %u bytes (expected %u)",
					   r->len, NBD_INFO_EXPORT_LEN);
		ex->size = be64_get(r->data + 2);
		ex->flags = be16_get(r->data + 10);
		*have_export = true;
		return check_size(ex->size);
	}
	if (type == NBD_INFO_BLOCK_SIZE) {
		if (r->len != NBD_INFO_BLOCK_SIZE_LEN)
			return fail_server("server sent INFO_BLOCK_SIZE of %u bytes (expected %u)",
					   r->len, NBD_INFO_BLOCK_SIZE_LEN);
		ex->min_block = be32_get(r->data + 2);
		ex->pref_block = be32_get(r->data + 6);
		ex->max_block = be32_get(r->data + 10);
		ex->has_block_sizes = true;
		return check_block_sizes(ex->min_block, ex->pref_block, ex->max_block);
	}
	return 0;
}

enum { GO_DONE = 0, GO_FAILED = -1, GO_UNSUPPORTED = 1 };

/* NBD_OPT_GO (or INFO when probing) asking for block sizes. */
static int opt_go(struct nbd_conn *c, uint32_t opt, const char *name, struct nbd_export *ex)
{
	uint8_t req[4 + NBD_STRING_MAX + 4];
	uint32_t nlen = (uint32_t)strlen(name);
	bool have_export = false;
	struct reply r;
	be32_put(req, nlen);
	memcpy(req + 4, name, nlen);
	be16_put(req + 4 + nlen, 1);
	be16_put(req + 6 + nlen, NBD_INFO_BLOCK_SIZE);
	if (send_option(c, opt, req, nlen + 8))
		return GO_FAILED;
	for (int n = 0; n < NBD_REPLIES_MAX; n++) {
		if (read_reply(c, opt, &r))
			return GO_FAILED;
		if (r.type == NBD_REP_ACK) {
			if (!have_export)
				return fail_server("server finished %s without describing the export "
						   "(no INFO_EXPORT)", opt_name(opt));
			ex->how = HS_FIXED_GO;
			return GO_DONE;
		}
		if (r.type == NBD_REP_INFO) {
			if (parse_info(&r, ex, &have_export))
				return GO_FAILED;
			continue;
		}
		if (r.type == NBD_REP_ERR_UNSUP)
			return GO_UNSUPPORTED;
		return reply_error(&r, opt, name);
	}
	return fail_server("server sent more than %d replies to %s", NBD_REPLIES_MAX, opt_name(opt));
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, a refusal is a closed socket. */
static int opt_export_name(struct nbd_conn *c, const char *name, struct nbd_export *ex)
{
	uint8_t rep[NBD_EXPORT_NAME_REPLY_LEN + NBD_ZEROES_LEN];
	size_t len = NBD_EXPORT_NAME_REPLY_LEN + (c->no_zeroes ? 0 : NBD_ZEROES_LEN);
	if (send_option(c, NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name)))
		return -1;
	if (read_full(c, rep, len, "EXPORT_NAME")) {
		if (!strncmp(err.msg, "server closed", 13))
			return fail_server("server closed the connection after EXPORT_NAME: it has no "
					   "%s%s%s or refused it", *name ? "export named '" : "default export",
					   *name ? shown_name(name) : "", *name ? "'" : "");
		return -1;
	}
	ex->size = be64_get(rep);
	ex->flags = be16_get(rep + 8);
	ex->how = c->fixed ? HS_FIXED_EXPORT_NAME : HS_NEWSTYLE;
	return check_size(ex->size);
}

/* Leave option haggling politely; the server may close without a reply. */
static void opt_abort(struct nbd_conn *c)
{
	struct reply r;
	int64_t soon = nbd_now_ms() + 1000;
	char saved[sizeof err];
	memcpy(saved, &err, sizeof err); /* a failed goodbye must not mask the cause */
	if (c->deadline_ms > soon)
		c->deadline_ms = soon;
	if (send_option(c, NBD_OPT_ABORT, NULL, 0) == 0)
		read_reply(c, NBD_OPT_ABORT, &r);
	memcpy(&err, saved, sizeof err);
}

/* In transmission phase, the only polite goodbye is NBD_CMD_DISC. */
static void cmd_disc(struct nbd_conn *c)
{
	uint8_t req[NBD_REQUEST_LEN] = { 0 };
	be32_put(req, NBD_REQUEST_MAGIC);
	be16_put(req + 6, NBD_CMD_DISC);
	char saved[sizeof err];
	memcpy(saved, &err, sizeof err);
	write_all(c, req, sizeof req, "disconnect");
	memcpy(&err, saved, sizeof err);
}

static int tls_handshake(struct nbd_conn *c, const struct nbd_config *cfg)
{
	(void)c;
	(void)cfg;
	return fail_usage("TLS is not supported yet by this version of nbdboot");
}

/* STARTTLS is the first option, after FIXED_NEWSTYLE only; never downgrade. */
static int opt_starttls(struct nbd_conn *c, const struct nbd_config *cfg)
{
	struct reply r;
	if (!c->fixed)
		return fail_server("server does not offer fixed newstyle negotiation, so it cannot do "
				   "TLS: refusing to continue without TLS");
	if (send_option(c, NBD_OPT_STARTTLS, NULL, 0) || read_reply(c, NBD_OPT_STARTTLS, &r))
		return -1;
	if (r.type != NBD_REP_ACK) {
		reply_error(&r, NBD_OPT_STARTTLS, "");
		return fail_server("%s: refusing to continue without TLS", err.msg);
	}
	return tls_handshake(c, cfg);
}

/* Greeting: oldstyle ends the handshake, newstyle leaves c ready for
 * options with the client flags pending. */
static int read_greeting(struct nbd_conn *c, const struct nbd_config *cfg, struct nbd_export *ex,
			 bool *oldstyle)
{
	uint8_t g[16 + NBD_OLDSTYLE_REST];
	if (read_full(c, g, 16, "greeting")) {
		err.transient = err.transient || !strncmp(err.msg, "server closed", 13);
		return -1;
	}
	if (be64_get(g) != NBD_MAGIC)
		return fail_server("%s is not an NBD server (bad greeting magic)", server_name(cfg));
	*oldstyle = be64_get(g + 8) == NBD_OLDSTYLE_MAGIC;
	if (*oldstyle) {
		if (cfg->tls)
			return fail_server("server speaks the oldstyle protocol, which has no TLS: "
					   "refusing to continue without TLS");
		if (cfg->name[0])
			return fail_server("server speaks the oldstyle protocol, which has no export "
					   "names: cannot ask for '%s'", shown_name(cfg->name));
		if (read_full(c, g + 16, NBD_OLDSTYLE_REST, "oldstyle greeting"))
			return -1;
		ex->size = be64_get(g + 16);
		ex->flags = (uint16_t)be32_get(g + 24);
		ex->how = HS_OLDSTYLE;
		if (be32_get(g + 24) >> 16)
			return fail_server("server sent invalid oldstyle flags 0x%x", be32_get(g + 24));
		return check_size(ex->size);
	}
	if (be64_get(g + 8) != NBD_IHAVEOPT)
		return fail_server("server sent an unknown protocol magic 0x%016llx",
				   (unsigned long long)be64_get(g + 8));
	if (read_full(c, g, 2, "handshake flags"))
		return -1;
	c->hs_flags = be16_get(g);
	c->fixed = c->hs_flags & NBD_FLAG_FIXED_NEWSTYLE;
	c->no_zeroes = c->hs_flags & NBD_FLAG_NO_ZEROES;
	c->pending_client_flags = (c->fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) |
				  (c->no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0);
	c->client_flags_pending = true;
	return 0;
}

static int go_or_export_name(struct nbd_conn *c, const struct nbd_config *cfg,
			     struct nbd_export *ex, bool probe)
{
	int r;
	if (!c->fixed || cfg->no_optgo)
		return opt_export_name(c, cfg->name, ex);
	r = opt_go(c, probe ? NBD_OPT_INFO : NBD_OPT_GO, cfg->name, ex);
	if (r != GO_UNSUPPORTED)
		return r;
	return opt_export_name(c, cfg->name, ex);
}

int nbd_negotiate(struct nbd_conn *c, const struct nbd_config *cfg, struct nbd_export *ex,
		  bool probe)
{
	bool oldstyle;
	memset(ex, 0, sizeof *ex);
	if (read_greeting(c, cfg, ex, &oldstyle))
		return -1;
	if (!oldstyle) {
		if (cfg->tls && opt_starttls(c, cfg))
			return -1;
		if (go_or_export_name(c, cfg, ex, probe))
			return -1;
		ex->tls = cfg->tls;
	}
	if (!(ex->flags & NBD_FLAG_HAS_FLAGS))
		ex->flags = 0;
	if (probe) {
		if (ex->how == HS_FIXED_GO)
			opt_abort(c);
		else
			cmd_disc(c);
	}
	return 0;
}

static void list_add(const struct reply *r, void (*fn)(const char *, const char *, void *),
		     void *arg)
{
	static char name[NBD_STRING_MAX + 1], desc[NBD_STRING_MAX + 1];
	uint32_t nlen = be32_get(r->data);
	memcpy(name, r->data + 4, nlen);
	name[nlen] = 0;
	memcpy(desc, r->data + 4 + nlen, r->len - 4 - nlen);
	desc[r->len - 4 - nlen] = 0;
	fn(name, desc, arg);
}

int nbd_list(struct nbd_conn *c, void (*fn)(const char *, const char *, void *), void *arg)
{
	struct nbd_export ex;
	struct reply r;
	bool oldstyle;
	if (read_greeting(c, &(struct nbd_config){ 0 }, &ex, &oldstyle))
		return -1;
	if (oldstyle || !c->fixed)
		return fail_server("server cannot list exports (it does not speak fixed newstyle)");
	if (send_option(c, NBD_OPT_LIST, NULL, 0))
		return -1;
	for (int n = 0; n < NBD_REPLIES_MAX; n++) {
		if (read_reply(c, NBD_OPT_LIST, &r))
			return -1;
		if (r.type == NBD_REP_ACK) {
			opt_abort(c);
			return 0;
		}
		if (r.type != NBD_REP_SERVER) {
			reply_error(&r, NBD_OPT_LIST, "");
			opt_abort(c);
			return -1;
		}
		if (r.len < 4 || be32_get(r.data) > r.len - 4 || be32_get(r.data) > NBD_STRING_MAX ||
		    r.len - 4 - be32_get(r.data) > NBD_STRING_MAX)
			return fail_server("server sent a malformed export list entry (%u bytes)", r.len);
		list_add(&r, fn, arg);
	}
	return fail_server("server sent more than %d export list entries", NBD_REPLIES_MAX);
}

/* Connect and run op within the deadline, retrying transient failures with
 * backoff: at boot the network and the server may not be up yet. */
static int with_retries(const struct nbd_config *cfg, int (*op)(struct nbd_conn *, void *),
			void *arg)
{
	int64_t deadline = nbd_now_ms() + (int64_t)cfg->wait_seconds * 1000;
	int64_t delay = 100;
	for (;;) {
		struct nbd_conn c = { .fd = -1, .deadline_ms = deadline };
		c.fd = cfg->unix_path[0] ? connect_unix(cfg, deadline) : connect_tcp(cfg, deadline);
		if (c.fd >= 0) {
			if (op(&c, arg) == 0)
				return c.fd;
			close(c.fd);
		}
		if (!err.transient)
			return -1;
		int64_t left = deadline - nbd_now_ms();
		if (left <= 0) {
			char last[sizeof err.msg];
			memcpy(last, err.msg, sizeof last);
			return fail_server("%s (gave up after %u s; see --wait)", last, cfg->wait_seconds);
		}
		sleep_ms(delay < left ? delay : left);
		delay = delay * 2 > 2000 ? 2000 : delay * 2;
	}
}

struct open_args {
	const struct nbd_config *cfg;
	struct nbd_export *ex;
	bool probe;
};

static int open_op(struct nbd_conn *c, void *arg)
{
	struct open_args *a = arg;
	return nbd_negotiate(c, a->cfg, a->ex, a->probe);
}

int nbd_open(const struct nbd_config *cfg, struct nbd_export *ex, bool probe)
{
	struct open_args a = { cfg, ex, probe };
	return with_retries(cfg, open_op, &a);
}

/* ==== Output ================================================================
 * What --probe and --list print on stdout.
 */

static void print_flags(uint16_t flags)
{
	static const char *const names[] = {
		"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
		"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE",
		"SEND_FAST_ZERO",
	};
	printf("flags: 0x%x", flags);
	for (unsigned i = 0; i < 16; i++)
		if (flags & (1u << i)) {
			if (i < sizeof names / sizeof names[0])
				printf(" %s", names[i]);
			else
				printf(" BIT%u", i);
		}
	printf("\n");
}

static void print_probe(const struct nbd_config *cfg, const struct nbd_export *ex)
{
	static const char *const how[] = {
		[HS_OLDSTYLE] = "oldstyle", [HS_NEWSTYLE] = "newstyle export-name",
		[HS_FIXED_EXPORT_NAME] = "fixed-newstyle export-name",
		[HS_FIXED_GO] = "fixed-newstyle go",
	};
	printf("export: %s\n", cfg->name[0] ? shown_name(cfg->name) : "(default)");
	printf("size: %llu\n", (unsigned long long)ex->size);
	print_flags(ex->flags);
	printf("read-only: %s\n", ex->flags & NBD_FLAG_READ_ONLY ? "yes" : "no");
	if (ex->has_block_sizes)
		printf("block-size: minimum %u preferred %u maximum %u\n", ex->min_block,
		       ex->pref_block, ex->max_block);
	else
		printf("block-size: not advertised\n");
	printf("handshake: %s\n", how[ex->how]);
	printf("tls: %s\n", ex->tls ? "yes" : "no");
}

static void print_list_entry(const char *name, const char *desc, void *arg)
{
	char n[NBD_SHOW_MAX + 4], d[NBD_SHOW_MAX + 4];
	(void)arg;
	nbd_sanitise(n, sizeof n, (const uint8_t *)name, strlen(name));
	nbd_sanitise(d, sizeof d, (const uint8_t *)desc, strlen(desc));
	printf(*d ? "%s\t%s\n" : "%s\n", n, d);
}

static int list_op(struct nbd_conn *c, void *arg)
{
	(void)arg;
	return nbd_list(c, print_list_entry, NULL);
}

/* ==== Main ================================================================== */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: nbdboot HOST [PORT] [/dev/nbdN] [options]   attach an export\n"
		"       nbdboot nbd://HOST[:PORT]/EXPORT [/dev/nbdN] [options]\n"
		"       nbdboot --probe TARGET [options]   negotiate and print the export, attach nothing\n"
		"       nbdboot -l|--list HOST [PORT]      list the server's exports\n"
		"       nbdboot -c|--check /dev/nbdN       is the device connected?\n"
		"       nbdboot -d|--disconnect /dev/nbdN  disconnect the device\n"
		"TARGET: HOST [PORT] | nbd://HOST[:PORT]/EXPORT | nbds://... |\n"
		"        nbd+unix:///EXPORT?socket=PATH | nbds+unix://... | -u PATH\n"
		"Options (nbd-client's single-dash long forms are accepted too):\n"
		"  -N, --name NAME         export name (default: the server's default export)\n"
		"  -b, --block-size BYTES  block size, power of two 512..4096 (default 512)\n"
		"  -t, --timeout SECONDS   kernel request timeout\n"
		"  -C, --connections N     connections per device (1..64)\n"
		"  -R, --readonly          attach read-only\n"
		"  -p, --persist           reconnect when the connection is lost\n"
		"  -s, --swap              the device is used for swap\n"
		"  -m, --systemd-mark      mark resident processes for systemd ('@')\n"
		"  -n, --nofork            stay in the foreground\n"
		"  -L, --nonetlink         use the ioctl interface instead of netlink\n"
		"  -B, --size BYTES        override the export size\n"
		"  -g, --no-optgo          use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO\n"
		"  -u, --unix              HOST is a Unix socket path\n"
		"  -x, --tls               require TLS\n"
		"  -A, --cacert FILE       CA certificates (PEM)\n"
		"  -F, --cert FILE         client certificate (PEM)\n"
		"  -K, --key FILE          client key (PEM)\n"
		"  -H, --tlshostname NAME  name to check in the server certificate\n"
		"      --wait SECONDS      deadline for connect and negotiation, retrying\n"
		"                          transient failures (default %d)\n"
		"  -h, --help   -V, --version\n"
		"Exit codes: 0 success, 1 network or server failure, 2 usage error,\n"
		"            3 kernel failure.\n",
		NBD_WAIT_DEFAULT);
}

static int run_probe(const struct nbd_config *cfg)
{
	struct nbd_export ex;
	int fd = nbd_open(cfg, &ex, true);
	if (fd < 0)
		return -1;
	close(fd);
	print_probe(cfg, &ex);
	return 0;
}

static int run(const struct nbd_config *cfg)
{
	switch (cfg->mode) {
	case MODE_HELP:
		usage(stdout);
		return 0;
	case MODE_VERSION:
		printf("nbdboot %s%s\n", NBDBOOT_VERSION, NBDBOOT_TLS ? "" : " (no TLS)");
		return 0;
	case MODE_PROBE:
		return run_probe(cfg);
	case MODE_LIST: {
		int fd = with_retries(cfg, list_op, NULL);
		if (fd < 0)
			return -1;
		close(fd);
		return 0;
	}
	default:
		err.cls = EXIT_KERNEL;
		snprintf(err.msg, sizeof err.msg, "kernel attach is not supported yet by this version");
		return -1;
	}
}

#ifndef NBDBOOT_NO_MAIN
int main(int argc, char **argv)
{
	static struct nbd_config cfg;
	if (nbd_parse_args(&cfg, argc - 1, argv + 1)) {
		say("%s", nbd_last_error());
		return EXIT_USAGE;
	}
	if (run(&cfg) == 0)
		return fflush(stdout) ? EXIT_SERVER : 0;
	say("%s", nbd_last_error());
	return nbd_last_error_class();
}
#endif
