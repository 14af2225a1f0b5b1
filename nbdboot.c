/*
 * nbdboot - attach a Network Block Device export as the root of a booting
 * Linux system.  One static binary for the initramfs.
 *
 * The file reads in the order a boot flows through it; each section says
 * what it owns and what it may call, and calls only what comes before it:
 *
 *   Formatting and output   printf, stdout (results), stderr (diagnostics)
 *   Errors                  the sticky first failure, its class and verdict
 *   Configuration           argv, NBD URIs, the kernel command line, --failover,
 *                           and the /init mode's words (ip=, BOOTIF=, init=, ...)
 *   Connection              clock, poll_until(), resolving, connecting, servers
 *   TLS                     BearSSL: certificates, handshake, record I/O, kTLS keys
 *   Wire I/O                whole messages, in plaintext or through TLS
 *   Negotiation             greeting, STARTTLS, GO, EXPORT_NAME, LIST; retries
 *                           with backoff, through the failover servers
 *   Kernel                  netlink (CONNECT, STATUS, RECONFIGURE, LINK_DEAD),
 *                           device queries, request limit, readiness
 *   Resident process        what stays after the boot: DO_IT holder, TLS proxy,
 *                           the reconnect monitor
 *   Attach                  sockets to the kernel: netlink, or the ioctls
 *   /init: early            PID 1: the kernel's filesystems, console, kmsg, and
 *                           the fatal path (nbdboot.panic=, never an exit)
 *   /init: modules          modules.dep/.alias/.softdep, coldplug by modalias
 *   /init: network          link up, carrier, rtnetlink, ip=, the DHCP client
 *   /init: root             mount (or overlay), move mounts, free the
 *                           initramfs, switch_root
 *   Output                  what --probe, --list, --print-env, --help print
 *   Main                    one function per mode (run_init: the /init mode)
 *
 * The mutable state is a few structs, one per section that needs one:
 * output, err, boot_env (what DHCP said), tls, wire, retry, resident, mon
 * (the monitor), init_st, mods, nic.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/if_ether.h>
#include <netpacket/packet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nbdboot.h"

#ifndef NBDBOOT_TLS
#define NBDBOOT_TLS 1
#endif
#if NBDBOOT_TLS
#include <bearssl.h>
#endif
#ifndef NBDBOOT_BUILD_TIME
#define NBDBOOT_BUILD_TIME 1764000000 /* 2025-11-24: make passes the real one */
#endif
#ifndef NBDBOOT_VERSION
#define NBDBOOT_VERSION "0.1"
#endif

_Static_assert(NBD_REPLY_MAX >= NBD_INFO_MAX, "receive buffer holds an INFO");
_Static_assert(NBD_REPLY_MAX >= NBD_ERRMSG_MAX, "receive buffer holds an error");

/* ==== Formatting and output =============================================
 * A small printf for messages and output: libc's brings floating point and
 * wide characters, a sixth of the binary.  Handles what nbdboot uses:
 * %s %c %d %i %u %x with flags '-' and '0', a width, a precision (digits or
 * '*', which for %s bounds the bytes read), and the l, ll and z modifiers.
 * Then the two streams: stdout (the command's result) and stderr (one
 * diagnostic line at a time), and text from outside shown bounded.
 * Owns the output state; calls nothing but libc.
 */

struct fmt_out {
	char *buf;
	size_t len, size;
};

static void fmt_put(struct fmt_out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++, o->len++)
		if (o->len + 1 < o->size)
			o->buf[o->len] = s[i];
}

static void fmt_pad(struct fmt_out *o, char c, size_t n)
{
	while (n--)
		fmt_put(o, &c, 1);
}

static void fmt_num(struct fmt_out *o, unsigned long long v, bool neg, unsigned base, size_t width,
		    bool zero, bool left)
{
	char digits[24];
	size_t n = 0, total;
	do {
		digits[sizeof digits - ++n] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	total = n + neg;
	if (!left && !zero && width > total)
		fmt_pad(o, ' ', width - total);
	if (neg)
		fmt_put(o, "-", 1);
	if (!left && zero && width > total)
		fmt_pad(o, '0', width - total);
	fmt_put(o, digits + sizeof digits - n, n);
	if (left && width > total)
		fmt_pad(o, ' ', width - total);
}

__attribute__((format(printf, 3, 0)))
static int vfmt(char *buf, size_t size, const char *f, va_list ap)
{
	struct fmt_out o = { buf, 0, size };
	for (; *f; f++) {
		bool left = false, zero = false, z = false;
		size_t width = 0;
		int prec = -1, longs = 0;
		if (*f != '%') {
			fmt_put(&o, f, 1);
			continue;
		}
		for (f++; *f == '-' || *f == '0'; f++)
			*f == '-' ? (left = true) : (zero = true);
		for (; *f >= '0' && *f <= '9'; f++)
			width = width * 10 + (size_t)(*f - '0');
		if (*f == '.') {
			if (*++f == '*') {
				prec = va_arg(ap, int);
				f++;
			} else {
				for (prec = 0; *f >= '0' && *f <= '9'; f++)
					prec = prec * 10 + (*f - '0');
			}
		}
		for (; *f == 'l'; f++)
			longs++;
		if (*f == 'z') {
			z = true;
			f++;
		}
		if (*f == 's') {
			const char *s = va_arg(ap, const char *);
			size_t n = prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s);
			if (!left && width > n)
				fmt_pad(&o, ' ', width - n);
			fmt_put(&o, s, n);
			if (left && width > n)
				fmt_pad(&o, ' ', width - n);
		} else if (*f == 'c') {
			char c = (char)va_arg(ap, int);
			fmt_put(&o, &c, 1);
		} else if (*f == 'd' || *f == 'i') {
			long long v = longs > 1 ? va_arg(ap, long long) : longs ? va_arg(ap, long)
						: z ? va_arg(ap, ssize_t) : va_arg(ap, int);
			fmt_num(&o, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v, v < 0, 10,
				width, zero, left);
		} else if (*f == 'u' || *f == 'x') {
			unsigned long long v = longs > 1 ? va_arg(ap, unsigned long long)
					       : longs  ? va_arg(ap, unsigned long)
					       : z      ? va_arg(ap, size_t)
							: va_arg(ap, unsigned);
			fmt_num(&o, v, false, *f == 'x' ? 16 : 10, width, zero, left);
		} else {
			fmt_put(&o, "%", 1);
			if (!*f)
				break;
		}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return (int)o.len;
}

__attribute__((format(printf, 3, 4)))
static int fmt(char *buf, size_t size, const char *f, ...)
{
	va_list ap;
	int n;
	va_start(ap, f);
	n = vfmt(buf, size, f, ap);
	va_end(ap);
	return n;
}

/* Output.  Standard output carries the command's result (--probe, --list,
 * --print-env, -c): if it cannot be written whole, the command fails.
 * Standard error carries diagnostics: at boot it may be a console that is
 * gone, and a failure to write there must never change the outcome. */
static struct output {
	int failed_errno; /* first failure writing stdout, 0 if none */
	bool verbose;     /* -v: trace() prints each step */
	struct timespec t_start;
	int kmsg;          /* /init: /dev/kmsg, where every message is copied; else -1 */
	int console_level; /* /init: the kernel shows kmsg lines below this level itself */
	int level;         /* /init: the level of say()'s lines, 0 for notice (5) */
} output = { .kmsg = -1 };

static int write_whole(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EIO;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Result text on stdout, as it is; the first failure is kept. */
static void out_raw(const char *p, size_t len)
{
	int e = output.failed_errno ? 0 : write_whole(1, p, len);
	if (e)
		output.failed_errno = e;
}

__attribute__((format(printf, 1, 2)))
static void out(const char *f, ...)
{
	char line[4096];
	va_list ap;
	size_t len;
	va_start(ap, f);
	len = (size_t)vfmt(line, sizeof line, f, ap);
	va_end(ap);
	if (len >= sizeof line) { /* callers bound what they print: a cut line is a bug */
		output.failed_errno = output.failed_errno ? output.failed_errno : EMSGSIZE;
		return;
	}
	out_raw(line, len);
}

/* One diagnostic line on stderr; a failure to write it is ignored. */
__attribute__((format(printf, 1, 2)))
static void diag(const char *f, ...)
{
	char line[1024];
	va_list ap;
	size_t len;
	va_start(ap, f);
	len = (size_t)vfmt(line, sizeof line, f, ap);
	va_end(ap);
	(void)write_whole(2, line, len < sizeof line ? len : sizeof line - 1);
}

__attribute__((format(printf, 1, 2)))
static void say(const char *f, ...)
{
	char line[768];
	va_list ap;
	va_start(ap, f);
	vfmt(line, sizeof line, f, ap);
	va_end(ap);
	if (output.kmsg >= 0) { /* /init: the log too, and the console unless the kernel shows it */
		char k[800];
		int level = output.level ? output.level : 5;
		size_t n = (size_t)fmt(k, sizeof k, "<%d>nbdboot: %s\n", level, line);
		if (write_whole(output.kmsg, k, n < sizeof k ? n : sizeof k - 1) == 0 &&
		    level < output.console_level)
			return;
	}
	diag("nbdboot: %s\n", line);
}

/* With -v: where the time of a boot goes, one line per step. */
static void trace(const char *fmt, ...)
{
	char line[256];
	struct timespec now, cpu;
	long long us, cpu_us;
	va_list ap;
	if (!output.verbose)
		return;
	va_start(ap, fmt);
	vfmt(line, sizeof line, fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_MONOTONIC, &now);
	us = (now.tv_sec - output.t_start.tv_sec) * 1000000LL +
	     (now.tv_nsec - output.t_start.tv_nsec) / 1000;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu); /* our own work, not the waiting */
	cpu_us = cpu.tv_sec * 1000000LL + cpu.tv_nsec / 1000;
	diag("nbdboot: +%lld.%03lld ms (cpu %lld.%03lld ms): %s\n", us / 1000, us % 1000,
	       cpu_us / 1000, cpu_us % 1000, line);
}

void nbd_sanitise(char *out, size_t outsz, const uint8_t *in, size_t len)
{
	size_t n = 0, i;
	if (outsz == 0)
		return;
	for (i = 0; i < len && i < NBD_SHOW_MAX && n + 1 < outsz; i++)
		out[n++] = (in[i] >= 0x20 && in[i] < 0x7f) ? (char)in[i] : '?';
	if (i < len && n + 3 < outsz) {
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

/* ==== Errors ============================================================
 * Errors are sticky: the first failure is the cause and is kept with its
 * class (exit code) and whether a retry may help; failures after it (a
 * goodbye that fails too, a cleanup) change nothing.  Callers return -1 and
 * main() prints the cause once.  err_wrap() and err_reword() are the only
 * ways to change the kept error: a caller that knows more says so.  Owns
 * the error; calls only Formatting.
 */

static struct nbd_error {
	char msg[640];
	int cls;        /* EXIT_*; 0 while nothing failed */
	bool transient; /* retrying may help: network, server busy or starting */
	bool eof;       /* the server closed the connection */
	bool deadline;  /* a wait ran out of time */
} err;

/* Whatever went into it (a word of the kernel command line, a path), the
 * message is one line of printable ASCII on the console. */
static void err_printable(void)
{
	for (char *p = err.msg; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
}

static int fail_v(int cls, bool transient, const char *fmt, va_list ap)
{
	int saved = errno;
	if (err.cls)
		return -1;
	vfmt(err.msg, sizeof err.msg, fmt, ap);
	err_printable();
	err.cls = cls;
	err.transient = transient;
	errno = saved;
	return -1;
}

#define DEFINE_FAIL(fn, cls, transient)                 \
	__attribute__((format(printf, 1, 2)))            \
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
DEFINE_FAIL(fail_kernel, EXIT_KERNEL, false)

/* The two ways to change the kept error, for a caller that learnt more
 * about the same failure: put context around its text (class and verdict
 * stay), or reword it with a new class and retry verdict. */
static int err_wrap(const char *before, const char *after)
{
	char old[sizeof err.msg];
	memcpy(old, err.msg, sizeof old);
	fmt(err.msg, sizeof err.msg, "%s%s%s", before, old, after);
	err_printable();
	return -1;
}

__attribute__((format(printf, 3, 4)))
static int err_reword(int cls, bool transient, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vfmt(err.msg, sizeof err.msg, f, ap);
	va_end(ap);
	err_printable();
	err.cls = cls;
	err.transient = transient;
	return -1;
}

void nbd_error_clear(void) { memset(&err, 0, sizeof err); }
const char *nbd_last_error(void) { return err.msg; }
int nbd_last_error_class(void) { return err.cls ? err.cls : EXIT_SERVER; }
bool nbd_last_error_transient(void) { return err.transient; }

/* ==== Configuration =====================================================
 * Fills struct nbd_config from argv (nbd-client compatible, long and
 * single-dash long options, options after positionals), from NBD URIs, and
 * from the kernel command line.  Calls only Errors and Formatting.
 */

enum {
	O_PROBE = 256, O_WAIT, O_CMDLINE, O_PRINT_ENV, O_TLS_PROXY, O_DEAD_TIMEOUT,
	O_FAILOVER, O_NO_PERSIST,
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
	{ 'v', "verbose", false },
	{ O_WAIT, "wait", true },     { O_CMDLINE, "cmdline", false },
	{ O_PRINT_ENV, "print-env", false }, { O_TLS_PROXY, "tls-proxy", false },
	{ O_DEAD_TIMEOUT, "dead-timeout", true }, { O_FAILOVER, "failover", true },
	{ O_NO_PERSIST, "no-persist", false },
};

static const struct opt *find_long(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
		if (strlen(options[i].name) == len && !memcmp(options[i].name, name, len))
			return &options[i];
	return NULL;
}

static const struct opt *find_id(int id)
{
	for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
		if (options[i].id == id)
			return &options[i];
	return NULL;
}

static const struct opt *find_short(char c)
{
	return find_id((unsigned char)c);
}

/* Name the parameter the kept error came from: "prefix: ...". */
static int fail_prefix(const char *prefix)
{
	char before[64];
	fmt(before, sizeof before, "%s: ", prefix);
	return err_wrap(before, "");
}

static int copy_str(char *dst, size_t dstsz, const char *src, const char *what)
{
	size_t len = strlen(src);
	if (len >= dstsz)
		return fail_usage("%s is too long (%zu bytes, at most %zu)", what, len, dstsz - 1);
	memcpy(dst, src, len + 1);
	return 0;
}

#define DIGITS "0123456789"

/* The decimal number at s: how many digits it has (0 when none, or when
 * it does not fit 64 bits) and its value. */
static size_t scan_decimal(const char *s, uint64_t *v)
{
	size_t n = strspn(s, DIGITS);
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (*v > (UINT64_MAX - 9) / 10)
			return 0;
		*v = *v * 10 + (uint64_t)(s[i] - '0');
	}
	return n;
}

/* Unsigned decimal in [lo, hi]; no sign, no junk. */
static int parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out, const char *what)
{
	uint64_t v;
	size_t n = scan_decimal(s, &v);
	if (!*s)
		return fail_usage("%s is empty", what);
	if (!n || s[n])
		return fail_usage("%s '%s' is not a number", what, shown_name(s));
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
	fmt(cfg->port, sizeof cfg->port, "%u", (unsigned)v);
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

static bool all_digits(const char *s)
{
	return *s && !s[strspn(s, DIGITS)];
}

/* A device or partition number as the kernel writes it: no leading zero. */
static bool is_index(const char *s, size_t len)
{
	uint64_t v;
	return len && (len == 1 || s[0] != '0') && scan_decimal(s, &v) == len &&
	       v <= NBD_INDEX_MAX;
}

static bool is_device_arg(const char *s)
{
	return !strncmp(s, "/dev/", 5) || (!strncmp(s, "nbd", 3) && all_digits(s + 3));
}

static int set_device(struct nbd_config *cfg, const char *s)
{
	char buf[NBD_DEVICE_MAX + 1];
	const char *base = strncmp(s, "/dev/", 5) ? s : s + 5;
	if (!is_device_arg(s) || strncmp(base, "nbd", 3) || !is_index(base + 3, strlen(base + 3)))
		return fail_usage("'%s' is not an nbd device (expected /dev/nbdN)", shown_name(s));
	if (strlen(base) + 5 > NBD_DEVICE_MAX)
		return fail_usage("device name '%s' is too long", shown_name(s));
	fmt(buf, sizeof buf, "/dev/%s", base);
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
		} else if (len > 0) {
			return fail_usage("URI query parameter '%.*s' is not supported (TLS files go "
					  "in --cacert, --cert, --key)", (int)(len > 40 ? 40 : len), q);
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

/* --failover HOST[:PORT] ([IPv6][:PORT]; a bare IPv6 address has no port):
 * one more server with the same export, tried in the order given. */
static int add_failover(struct nbd_config *cfg, const char *v)
{
	struct nbd_config tmp;
	const char *rb = v[0] == '[' ? strchr(v, ']') : NULL;
	const char *colon = rb ? (rb[1] == ':' ? rb + 1 : NULL) : strchr(v, ':');
	size_t hlen;
	if (colon && !rb && strchr(colon + 1, ':'))
		colon = NULL; /* an IPv6 address without brackets */
	if (rb && rb[1] && rb[1] != ':')
		return fail_usage("failover server '%s': use HOST[:PORT] or [IPv6][:PORT]", shown_name(v));
	if (cfg->nfailover == NBD_FAILOVER_MAX)
		return fail_usage("at most %d failover servers", NBD_FAILOVER_MAX);
	hlen = colon ? (size_t)(colon - v) : strlen(v);
	tmp.port[0] = 0;
	if (set_host(&tmp, v, hlen) || (colon && set_port(&tmp, colon + 1)))
		return fail_prefix("failover server");
	memcpy(cfg->failover[cfg->nfailover].host, tmp.host, sizeof tmp.host);
	memcpy(cfg->failover[cfg->nfailover++].port, tmp.port, sizeof tmp.port);
	return 0;
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
	case 'C': return parse_u32(v, 1, NBD_CONNS_MAX, &cfg->conns, "connections");
	case 'R': cfg->readonly = true; return 0;
	case 'p': cfg->persist = cfg->persist_given = true; return 0;
	case O_NO_PERSIST: cfg->persist = false; cfg->persist_given = true; return 0;
	case O_FAILOVER: return add_failover(cfg, v);
	case 's': /* resident processes are always locked in memory */
	case 'm': /* ... and always marked '@' for systemd */
	case 'P': /* nbd-client's preinit: nbdboot always negotiates itself */
		return 0;
	case 'S': return fail_usage("SDP is not supported (and was removed from Linux)");
	case 'n': cfg->nofork = true; return 0;
	case 'L': cfg->use_ioctl = true; return 0;
	case 'B': return parse_uint(v, 1, NBD_SIZE_MAX, &cfg->size_override, "size");
	case 'g': cfg->no_optgo = true; return 0;
	case 'u': cfg->host_is_socket = true; return 0;
	case 'x': cfg->tls = true; return 0;
	case 'A': cfg->tls = true; return copy_str(cfg->cacert, sizeof cfg->cacert, v, "CA file");
	case 'F': return copy_str(cfg->cert, sizeof cfg->cert, v, "certificate file");
	case 'K': return copy_str(cfg->key, sizeof cfg->key, v, "key file");
	case 'H': return copy_str(cfg->tlshostname, sizeof cfg->tlshostname, v, "TLS host name");
	case 'l': return set_mode(cfg, MODE_LIST);
	case 'c': return set_mode(cfg, MODE_CHECK) || set_device(cfg, v);
	case 'd': return set_mode(cfg, MODE_DISCONNECT) || set_device(cfg, v);
	case 'h': return set_mode(cfg, MODE_HELP);
	case 'V': return set_mode(cfg, MODE_VERSION);
	case 'v': cfg->verbose = true; return 0;
	case O_PROBE: return set_mode(cfg, MODE_PROBE);
	case O_CMDLINE: return set_mode(cfg, MODE_CMDLINE);
	case O_PRINT_ENV: cfg->print_env = true; return 0;
	case O_TLS_PROXY: cfg->tls_proxy = true; return 0;
	case O_DEAD_TIMEOUT: return parse_u32(v, 1, NBD_WAIT_MAX, &cfg->dead_timeout, "dead timeout");
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

/* TLS at boot needs no further words: when TLS is asked for and the
 * command line names no CA (or no client certificate and key), the files
 * the initramfs hooks install are used, if present (NBD_TLS_DIR). */
static void tls_default_files(struct nbd_config *cfg)
{
	if (!cfg->tls)
		return;
	if (!cfg->cacert[0] && access(NBD_TLS_CA, R_OK) == 0)
		memcpy(cfg->cacert, NBD_TLS_CA, sizeof NBD_TLS_CA);
	if (!cfg->cert[0] && !cfg->key[0] && access(NBD_TLS_CERT, R_OK) == 0 &&
	    access(NBD_TLS_KEY, R_OK) == 0) {
		memcpy(cfg->cert, NBD_TLS_CERT, sizeof NBD_TLS_CERT);
		memcpy(cfg->key, NBD_TLS_KEY, sizeof NBD_TLS_KEY);
	}
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
	if (cfg->host_is_socket) {
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
	tls_default_files(cfg);
	return nbd_config_check(cfg);
}

int nbd_config_check(const struct nbd_config *cfg)
{
	bool needs_server = cfg->mode == MODE_ATTACH || cfg->mode == MODE_PROBE ||
			    cfg->mode == MODE_LIST || (cfg->mode == MODE_CMDLINE && cfg->host[0]);
	if (needs_server && !cfg->host[0] && !cfg->unix_path[0])
		return fail_usage("no server given (HOST [PORT], an nbd:// URI, or -u SOCKET)");
	if (cfg->block_size && (cfg->block_size < NBD_KERNEL_BLOCK_MIN ||
				cfg->block_size > NBD_KERNEL_BLOCK_MAX ||
				(cfg->block_size & (cfg->block_size - 1))))
		return fail_usage("block size %u is invalid: use a power of two from %u to %u",
				  cfg->block_size, NBD_KERNEL_BLOCK_MIN, NBD_KERNEL_BLOCK_MAX);
	if ((cfg->cacert[0] || cfg->cert[0] || cfg->key[0] || cfg->tlshostname[0] || cfg->tls ||
	     cfg->tls_proxy) && !NBDBOOT_TLS)
		return fail_usage("this nbdboot was built without TLS (NBDBOOT_TLS=0)");
	if ((cfg->cert[0] || cfg->key[0] || cfg->tlshostname[0] || cfg->tls_proxy) && !cfg->tls)
		return fail_usage("TLS options given without --tls (or an nbds:// URI)");
	if (cfg->tls && !cfg->cacert[0] && needs_server)
		return fail_usage("TLS needs the CA certificates to check the server: --cacert FILE"
				  " (or " NBD_TLS_CA ")");
	if (cfg->print_env && cfg->mode != MODE_CMDLINE)
		return fail_usage("--print-env goes with --cmdline");
	if ((cfg->mode == MODE_CHECK || cfg->mode == MODE_DISCONNECT) && !cfg->device[0])
		return fail_usage("-c and -d need a device (/dev/nbdN)");
	if (cfg->nfailover && cfg->unix_path[0])
		return fail_usage("--failover servers go with a TCP server, not a Unix socket");
	return 0;
}

/* ---- Kernel command line ----------------------------------------------------
 * Grammars: dracut root=nbd:SRV:PORT_OR_NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]]
 * (also netroot=), Debian nbdroot= with nbddev= / root=/dev/nbdN[pM], NBD
 * URIs in root=, and nbdboot.KEY[=VALUE] (the same words in NBDOPTS).
 */

/* nbdboot's own boot options, one word each: KEY or KEY=VALUE. */
int nbd_cmdline_option(struct nbd_config *cfg, const char *word)
{
	static const struct { const char *key; int id; } keys[] = {
		{ "wait", O_WAIT },      { "timeout", 't' },   { "conns", 'C' },
		{ "connections", 'C' },  { "readonly", 'R' },  { "ioctl", 'L' },
		{ "nonetlink", 'L' },    { "blocksize", 'b' }, { "bs", 'b' },
		{ "persist", 'p' },      { "swap", 's' },      { "systemd-mark", 'm' },
		{ "no-optgo", 'g' },     { "tls", 'x' },       { "cacert", 'A' },
		{ "cert", 'F' },         { "key", 'K' },       { "tlshostname", 'H' },
		{ "name", 'N' },         { "device", 'D' },     { "tls-proxy", O_TLS_PROXY },
		{ "dead-timeout", O_DEAD_TIMEOUT }, { "failover", O_FAILOVER },
		{ "nopersist", O_NO_PERSIST },  { "no-persist", O_NO_PERSIST },
		{ "verbose", 'v' },      { "overlay", 'D' },   { "panic", 'D' },
	};
	const char *eq = strchr(word, '=');
	size_t klen = eq ? (size_t)(eq - word) : strlen(word);
	while (*word == '-' && klen > 1) {
		word++;
		klen--;
	}
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		if (strlen(keys[i].key) != klen || strncmp(keys[i].key, word, klen))
			continue;
		const struct opt *o = keys[i].id == 'D' ? NULL : find_id(keys[i].id);
		bool wants = keys[i].id == 'D' || (o && o->arg);
		if (wants != (eq != NULL))
			return fail_usage("nbdboot option '%s' %s", shown_name(word),
					  wants ? "needs =VALUE" : "takes no value");
		if (keys[i].id == 'D' && keys[i].key[0] != 'd')
			return 0; /* the /init mode's: nbd_parse_boot() reads it */
		if (keys[i].id == 'D')
			return set_device(cfg, eq + 1);
		return apply_option(cfg, keys[i].id, eq ? eq + 1 : NULL);
	}
	return fail_usage("unknown nbdboot option '%.*s'", (int)(klen > 40 ? 40 : klen), word);
}

/* Comma-separated NBDOPTS of dracut's grammar: nbdboot's words, with or
 * without their "nbdboot." prefix. */
static int cmdline_opts(struct nbd_config *cfg, char *list, const char *param)
{
	for (char *w = strtok(list, ","); w; w = strtok(NULL, ","))
		if (nbd_cmdline_option(cfg, strncmp(w, "nbdboot.", 8) ? w : w + 8))
			return fail_prefix(param);
	return 0;
}

/* Split off the next ':' field, keeping [IPv6] literals whole. */
static char *next_field(char **s)
{
	char *f = *s, *p = f;
	if (!f)
		return NULL;
	if (*p == '[')
		p = strchr(p, ']') ? strchr(p, ']') : p;
	p = strchr(p, ':');
	if (p)
		*p++ = 0;
	*s = p;
	return f;
}

/* dracut: nbd:SRV:PORT_OR_NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]] */
static int cmdline_dracut(struct nbd_config *cfg, char *v, const char *param)
{
	char *rest = v + 4, *srv = next_field(&rest), *second = next_field(&rest);
	char *fstype = next_field(&rest), *flags = next_field(&rest), *opts = rest;
	if (!srv || set_host(cfg, srv, strlen(srv)))
		return err_reword(EXIT_USAGE, false, "%s: bad server in '%s' (nbd:SRV:PORT_OR_NAME[:FSTYPE"
				  "[:ROOTFLAGS[:NBDOPTS]]])", param, shown_name(v));
	if (second && all_digits(second)) {
		if (set_port(cfg, second))
			return fail_prefix(param);
	} else if (second && copy_str(cfg->name, sizeof cfg->name, second, "export name")) {
		return fail_prefix(param);
	}
	if ((fstype && copy_str(cfg->fstype, sizeof cfg->fstype, fstype, "fstype")) ||
	    (flags && copy_str(cfg->rootflags, sizeof cfg->rootflags, flags, "rootflags")))
		return fail_prefix(param);
	return opts && *opts ? cmdline_opts(cfg, opts, param) : 0;
}

/* What DHCP said: the /init mode's own client, else the environment an
 * initramfs's DHCP client left (ROOTPATH, ROOTSERVER). */
static struct boot_env {
	char rootpath[NBD_ROOTPATH_MAX + 1];
	char rootserver[16];
	bool missed; /* a grammar wanted a value DHCP had not given (yet) */
	bool ipv4_only; /* /init configured IPv4 alone: names as A records */
} boot_env;

static const char *dhcp_env(const char *name)
{
	const char *own = !strcmp(name, "ROOTPATH") ? boot_env.rootpath : boot_env.rootserver;
	const char *v = own[0] ? own : getenv(name);
	boot_env.missed = boot_env.missed || !v || !*v;
	return v;
}

/* Debian: SRV,NAME[,nbdN] | [V6]:[PORT]/NAME | HOST:[PORT]/NAME | /NAME | dhcp */
static int cmdline_debian(struct nbd_config *cfg, char *v)
{
	char *comma = strchr(v, ','), *slash, *colon;
	const char *env_path, *env_srv;
	if (!*v || !strcmp(v, "dhcp")) {
		static char dhcp[NBD_ROOTPATH_MAX + 1];
		if (!(env_path = dhcp_env("ROOTPATH")) || !*env_path)
			return fail_usage("nbdroot=%s needs the DHCP root-path (ROOTPATH), which is not set", v);
		if (copy_str(dhcp, sizeof dhcp, env_path, "the DHCP root-path (ROOTPATH)"))
			return fail_prefix("nbdroot");
		v = dhcp;
		if (strstr(v, "://")) /* a root-path in another grammar, as root=dhcp takes it */
			return nbd_parse_uri(cfg, v) ? fail_prefix("nbdroot") : 0;
		if (!strncmp(v, "nbd:", 4))
			return cmdline_dracut(cfg, v, "nbdroot");
		comma = strchr(v, ',');
	}
	if (comma) {
		char *name = comma + 1, *dev = strchr(name, ',');
		*comma = 0;
		if (dev)
			*dev++ = 0;
		if (set_host(cfg, v, strlen(v)) ||
		    (all_digits(name) ? set_port(cfg, name)
				      : copy_str(cfg->name, sizeof cfg->name, name, "export name")) ||
		    (dev && *dev && set_device(cfg, dev)))
			return fail_prefix("nbdroot");
		return 0;
	}
	slash = strchr(v[0] == '[' && strchr(v, ']') ? strchr(v, ']') : v, '/');
	if (!slash)
		return fail_usage("nbdroot: '%s' is not SRV,NAME[,nbdN] or [HOST[:PORT]]/NAME",
				  shown_name(v));
	if (copy_str(cfg->name, sizeof cfg->name, slash + 1, "export name"))
		return fail_prefix("nbdroot");
	*slash = 0;
	if (!*v) {
		if (!(env_srv = dhcp_env("ROOTSERVER")) || !*env_srv)
			return fail_usage("nbdroot=/NAME needs the DHCP server (ROOTSERVER), which is not set");
		return set_host(cfg, env_srv, strlen(env_srv)) ? fail_prefix("nbdroot") : 0;
	}
	colon = v[0] == '[' ? strchr(v, ']') : v;
	colon = colon ? strchr(colon, ':') : NULL;
	if (colon)
		*colon = 0;
	if (set_host(cfg, v, strlen(v)) || (colon && colon[1] && set_port(cfg, colon + 1)))
		return fail_prefix("nbdroot");
	return 0;
}

/* root=/dev/nbdN[pM] chooses the device and what to mount. */
static int cmdline_rootdev(struct nbd_config *cfg, const char *v)
{
	char dev[NBD_DEVICE_MAX + 1];
	size_t n = 8 + strspn(v + 8, DIGITS); /* after "/dev/nbd" */
	if (!is_index(v + 8, n - 8) || n >= sizeof dev ||
	    (v[n] && (v[n] != 'p' || !is_index(v + n + 1, strlen(v + n + 1)) || v[n + 1] == '0')))
		return fail_usage("root=%s is not /dev/nbdN or /dev/nbdNpM", shown_name(v));
	memcpy(dev, v, n);
	dev[n] = 0;
	if (!cfg->device[0] && set_device(cfg, dev)) /* nbddev= wins; checked at the end */
		return -1;
	return copy_str(cfg->root, sizeof cfg->root, v, "root");
}

/* root=dhcp, netroot=dhcp (dracut): the DHCP root-path in any of the
 * grammars, nbd:SRV:..., an NBD URI, or Debian's SRV,NAME / HOST:PORT/NAME. */
static int cmdline_dhcp_root(struct nbd_config *cfg, const char *param)
{
	static char path[NBD_ROOTPATH_MAX + 1];
	const char *env = dhcp_env("ROOTPATH");
	if (!env || !*env)
		return fail_usage("%s=dhcp needs the DHCP root-path (option 17, ROOTPATH), which "
				  "the DHCP server did not send", param);
	if (copy_str(path, sizeof path, env, "the DHCP root-path (ROOTPATH)"))
		return fail_prefix(param);
	if (!strncmp(path, "nbd:", 4) && strncmp(path, "nbd://", 6))
		return cmdline_dracut(cfg, path, param);
	if (strstr(path, "://"))
		return nbd_parse_uri(cfg, path) ? fail_prefix(param) : 0;
	return cmdline_debian(cfg, path);
}

/* Next word of the command line, honouring double quotes. */
static char *cmdline_word(char **s)
{
	char *p = *s, *out, *w;
	while (*p == ' ' || *p == '\t' || *p == '\n')
		p++;
	if (!*p)
		return NULL;
	w = out = p;
	for (bool q = false; *p && (q || (*p != ' ' && *p != '\t' && *p != '\n')); p++) {
		if (*p == '"')
			q = !q;
		else
			*out++ = *p;
	}
	*s = *p ? p + 1 : p;
	*out = 0;
	return w;
}

static int cmdline_param(struct nbd_config *cfg, char *w, int *found)
{
	char *v = strchr(w, '=') ? strchr(w, '=') + 1 : NULL;
	if (!strncmp(w, "nbdboot.", 8))
		return nbd_cmdline_option(cfg, w + 8);
	if (!v)
		return 0;
	if ((!strncmp(w, "root=nbd:", 9) || !strncmp(w, "netroot=nbd:", 12)) && strncmp(v, "nbd://", 6)) {
		if ((*found)++)
			return fail_usage("%.*s: the command line names more than one NBD root", (int)(v - w - 1), w);
		return cmdline_dracut(cfg, v, w[0] == 'r' ? "root" : "netroot");
	}
	if (!strncmp(w, "root=nbd", 8) && strstr(v, "://")) {
		if ((*found)++)
			return fail_usage("root: the command line names more than one NBD root");
		return nbd_parse_uri(cfg, v) ? fail_prefix("root") : 0;
	}
	if (!strcmp(w, "root=dhcp") || !strcmp(w, "netroot=dhcp")) {
		if ((*found)++)
			return fail_usage("%.*s: the command line names more than one NBD root", (int)(v - w - 1), w);
		return cmdline_dhcp_root(cfg, w[0] == 'r' ? "root" : "netroot");
	}
	if (!strncmp(w, "nbdroot=", 8)) {
		if ((*found)++)
			return fail_usage("nbdroot: the command line names more than one NBD root");
		return cmdline_debian(cfg, v);
	}
	if (!strncmp(w, "nbddev=", 7))
		return set_device(cfg, v) ? fail_prefix("nbddev") : 0;
	if (!strncmp(w, "root=/dev/nbd", 13))
		return cmdline_rootdev(cfg, v);
	if (!strncmp(w, "rootfstype=", 11) && !cfg->fstype[0])
		return copy_str(cfg->fstype, sizeof cfg->fstype, v, "rootfstype");
	if (!strncmp(w, "rootflags=", 10) && !cfg->rootflags[0])
		return copy_str(cfg->rootflags, sizeof cfg->rootflags, v, "rootflags");
	return 0;
}

/* root is dev itself or one of its partitions (devpM): names match whole. */
static bool root_on_device(const char *root, const char *dev)
{
	size_t n = strlen(dev);
	if (strncmp(root, dev, n))
		return false;
	return !root[n] || (root[n] == 'p' && root[n + 1] != '0' &&
			    is_index(root + n + 1, strlen(root + n + 1)));
}

int nbd_parse_cmdline(struct nbd_config *cfg, const char *text)
{
	static char copy[8192];
	char *s = copy, *w;
	int found = 0;
	if (strlen(text) >= sizeof copy)
		return fail_usage("kernel command line is longer than %zu bytes", sizeof copy - 1);
	strcpy(copy, text);
	while ((w = cmdline_word(&s)))
		if (cmdline_param(cfg, w, &found))
			return -1;
	if (!found)
		return fail_usage("the kernel command line asks for no NBD root (root=nbd:..., "
				  "netroot=nbd:..., nbdroot=... or root=nbd://...)");
	if (!cfg->device[0])
		memcpy(cfg->device, "/dev/nbd0", sizeof "/dev/nbd0");
	if (!cfg->root[0])
		memcpy(cfg->root, cfg->device, sizeof cfg->device);
	else if (!root_on_device(cfg->root, cfg->device))
		return fail_usage("root=%s is not on the NBD device %s", cfg->root, cfg->device);
	return 0;
}

/* ---- The /init mode's words -------------------------------------------------
 * ip= in the kernel's grammar (Documentation/admin-guide/nfs/nfsroot.rst),
 * BOOTIF= as PXE writes it, init=, ro/rw, nbdboot.overlay=, nbdboot.panic=.
 */

/* An IPv4 literal of field `what`, or empty (0). */
static int ip_field(const char *s, uint32_t *out, const char *what)
{
	struct in_addr a;
	if (!*s)
		return 0;
	if (inet_pton(AF_INET, s, &a) != 1)
		return fail_usage("ip: %s '%s' is not an IPv4 address", what, shown_name(s));
	*out = a.s_addr;
	return 0;
}

/* AUTOCONF: 1 for DHCP, 0 for none, -1 unknown. */
static int ip_autoconf(const char *s)
{
	static const char *const dhcp[] = { "on", "any", "dhcp", "bootp", "both", "" };
	if (!strcmp(s, "off") || !strcmp(s, "none"))
		return 0;
	for (size_t i = 0; i < sizeof dhcp / sizeof dhcp[0]; i++)
		if (!strcmp(s, dhcp[i]))
			return 1;
	return -1;
}

static int ip_hostname(struct nbd_ipconf *ip, const char *s)
{
	size_t n = strlen(s);
	if (n > NBD_HOSTNAME_MAX || strspn(s, DIGITS "abcdefghijklmnopqrstuvwxyz"
				     "ABCDEFGHIJKLMNOPQRSTUVWXYZ-.") != n)
		return fail_usage("ip: host name '%s' is not a host name (letters, digits, '-' "
				  "and '.', at most %d)", shown_name(s), NBD_HOSTNAME_MAX);
	memcpy(ip->hostname, s, n + 1);
	return 0;
}

static int ip_device(struct nbd_ipconf *ip, const char *s)
{
	size_t n = strlen(s);
	if (n >= sizeof ip->device || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, ".."))
		return fail_usage("ip: '%s' is not an interface name", shown_name(s));
	memcpy(ip->device, s, n + 1);
	return 0;
}

int nbd_parse_ip(struct nbd_ipconf *ip, const char *value)
{
	char copy[512], *f[10] = { 0 }, *p = copy;
	unsigned n = 0;
	int auto_;
	bool has_mac = ip->has_mac;
	uint8_t mac[6];
	memcpy(mac, ip->mac, sizeof mac);
	memset(ip, 0, sizeof *ip); /* the last ip= wins, as in the kernel */
	ip->given = true;
	ip->has_mac = has_mac;
	memcpy(ip->mac, mac, sizeof mac);
	if (strlen(value) >= sizeof copy)
		return fail_usage("ip: the value is too long");
	strcpy(copy, value);
	for (; n < 10 && p; n++) {
		f[n] = p;
		p = strchr(p, ':');
		if (p)
			*p++ = 0;
	}
	if (p)
		return fail_usage("ip: '%s' has more than 10 fields", shown_name(value));
	/* The kernel's ip=CLIENT and ip=CLIENT:SERVER are the full form cut short */
	struct in_addr a;
	bool short_form = n <= 2 && inet_pton(AF_INET, f[0], &a) == 1 &&
			  (n == 1 || !*f[1] || ip_autoconf(f[1]) < 0);
	if (n == 1 && !short_form) { /* ip=dhcp, ip=off, ... */
		if ((auto_ = ip_autoconf(f[0])) < 0 || !*f[0])
			return fail_usage("ip=%s is not off, none, on, any, dhcp, bootp or both, nor "
					  "CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF", shown_name(value));
		ip->off = !auto_;
		ip->dhcp = auto_ == 1;
		return 0;
	}
	if (n == 2 && !short_form) { /* ip=DEVICE:dhcp */
		if (ip_device(ip, f[0]))
			return -1;
		if ((auto_ = ip_autoconf(f[1])) < 0 || !*f[1])
			return fail_usage("ip: autoconf '%s' is not off, none, on, any, dhcp, bootp or both",
					  shown_name(f[1]));
		ip->off = !auto_;
		ip->dhcp = auto_ == 1;
		return 0;
	}
	if (ip_field(f[0], &ip->addr, "client address") ||
	    (n > 1 && ip_field(f[1], &ip->server, "server address")) ||
	    (n > 2 && ip_field(f[2], &ip->gateway, "gateway")) ||
	    (n > 3 && ip_field(f[3], &ip->netmask, "netmask")) ||
	    (n > 4 && *f[4] && ip_hostname(ip, f[4])) || (n > 5 && *f[5] && ip_device(ip, f[5])) ||
	    (n > 7 && ip_field(f[7], &ip->dns[0], "first DNS server")) ||
	    (n > 8 && ip_field(f[8], &ip->dns[1], "second DNS server")))
		return -1;
	auto_ = ip_autoconf(n > 6 ? f[6] : "");
	if (auto_ < 0)
		return fail_usage("ip: autoconf '%s' is not off, none, on, any, dhcp, bootp or both",
				  shown_name(f[6]));
	if (ip->netmask) {
		uint32_t m = ntohl(ip->netmask);
		if (m & (~m >> 1)) /* a one after a zero */
			return fail_usage("ip: netmask %s is not contiguous", f[3]);
	}
	/* As the kernel: a client address given means no autoconfiguration
	 * unless AUTOCONF asks for it explicitly. */
	ip->dhcp = ip->addr ? (n > 6 && *f[6] && auto_ == 1) : auto_ == 1;
	ip->off = !ip->addr && !auto_;
	return 0;
}

int nbd_parse_bootif(struct nbd_ipconf *ip, const char *value)
{
	const char *p = value;
	size_t len = strlen(value);
	if (len == 20 && !strncmp(p, "01-", 3)) /* hardware type 1, Ethernet */
		p += 3;
	else if (len != 17)
		return fail_usage("BOOTIF=%s is not 01-aa-bb-cc-dd-ee-ff", shown_name(value));
	for (int i = 0; i < 6; i++, p += 3) {
		int hi = hexval(p[0]), lo = hi < 0 ? -1 : hexval(p[1]);
		if (lo < 0 || (i < 5 && p[2] != '-' && p[2] != ':'))
			return fail_usage("BOOTIF=%s is not 01-aa-bb-cc-dd-ee-ff", shown_name(value));
		ip->mac[i] = (uint8_t)(hi << 4 | lo);
	}
	ip->has_mac = true;
	return 0;
}

/* nbdboot.overlay=tmpfs or a tmpfs size (digits with k, m, g or %). */
static int set_overlay(struct nbd_boot *b, const char *v)
{
	size_t n = strspn(v, DIGITS);
	b->overlay = true;
	b->overlay_size[0] = 0; /* the last one given wins */
	if (!strcmp(v, "tmpfs"))
		return 0;
	if (!n || n >= sizeof b->overlay_size - 1 || (v[n] && (v[n + 1] || !strchr("kKmMgG%", v[n]))))
		return fail_usage("nbdboot.overlay=%s is not tmpfs or a size (512m, 2g, 50%%)",
				  shown_name(v));
	memcpy(b->overlay_size, v, strlen(v) + 1);
	return 0;
}

static int boot_word(struct nbd_boot *b, const char *w)
{
	const char *v = strchr(w, '=') ? strchr(w, '=') + 1 : NULL;
	uint32_t secs;
	if (!strcmp(w, "rw") || !strcmp(w, "ro"))
		b->rw = w[1] == 'w';
	else if (!strncmp(w, "ip=", 3))
		return nbd_parse_ip(&b->ip, v);
	else if (!strncmp(w, "BOOTIF=", 7))
		return nbd_parse_bootif(&b->ip, v);
	else if (!strncmp(w, "init=", 5)) {
		if (v[0] != '/')
			return fail_usage("init=%s is not an absolute path", shown_name(v));
		return copy_str(b->init, sizeof b->init, v, "init");
	} else if (!strncmp(w, "nbdboot.overlay=", 16))
		return set_overlay(b, v);
	else if (!strncmp(w, "nbdboot.wait=", 13))
		return parse_u32(v, 0, NBD_WAIT_MAX, &b->wait_s, "nbdboot.wait");
	else if (!strncmp(w, "nbdboot.panic=", 14)) {
		if (parse_u32(v, 0, NBD_WAIT_MAX, &secs, "nbdboot.panic"))
			return -1;
		b->panic_s = (int)secs;
	}
	return 0;
}

int nbd_parse_boot(struct nbd_boot *b, const char *text)
{
	static char copy[8192];
	char *s = copy, *w;
	memset(b, 0, sizeof *b);
	b->panic_s = NBD_PANIC_UNSET;
	b->wait_s = NBD_WAIT_DEFAULT;
	if (strlen(text) >= sizeof copy)
		return fail_usage("kernel command line is longer than %zu bytes", sizeof copy - 1);
	strcpy(copy, text);
	while ((w = cmdline_word(&s))) {
		if (!strcmp(w, "--"))
			break; /* the rest is init's */
		if (boot_word(b, w))
			return -1;
	}
	return 0;
}

/* ==== Connection ========================================================
 * Resolves and connects (TCP or Unix) under the deadline of the boot step
 * and sets socket options; transient failures are marked so the retry loop
 * (end of Negotiation) tries again.  Owns poll_until(), the one wait on a
 * file descriptor that every other wait uses, and the clock.
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

static int64_t deadline_after(unsigned seconds)
{
	return nbd_now_ms() + (int64_t)seconds * 1000;
}

/* Wait until fd has one of events or the deadline passes: 0 when ready,
 * else -1 with errno (ETIMEDOUT at the deadline). */
static int poll_until(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int64_t left = deadline - nbd_now_ms();
		int r;
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int wait_io(struct nbd_conn *c, short events, const char *what)
{
	if (poll_until(c->fd, events, c->deadline_ms) == 0)
		return 0;
	if (errno != ETIMEDOUT)
		return fail_server("poll failed (%s): %s", what, strerror(errno));
	fail_server("timed out waiting for the server (%s)", what);
	err.deadline = true;
	return -1;
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
		fmt(buf, sizeof buf, "%s", cfg->unix_path);
	else if (strchr(cfg->host, ':'))
		fmt(buf, sizeof buf, "[%s]:%s", cfg->host, cfg->port);
	else
		fmt(buf, sizeof buf, "%s:%s", cfg->host, cfg->port);
	return buf;
}

/* Server i (0: the first, then --failover's in order) as a configuration
 * of its own: the same export, TLS and options, another host and port. */
static const struct nbd_config *server_config(const struct nbd_config *cfg, unsigned i)
{
	static struct nbd_config one;
	const struct nbd_server *s;
	if (i == 0 || i > cfg->nfailover)
		return cfg;
	s = &cfg->failover[i - 1];
	one = *cfg;
	memcpy(one.host, s->host, sizeof one.host);
	if (s->port[0])
		memcpy(one.port, s->port, sizeof one.port);
	return &one;
}

static void tune_tcp(int fd)
{
	int on = 1, idle = NBD_KEEPALIVE_IDLE_S, intvl = NBD_KEEPALIVE_INTVL_S, cnt = NBD_KEEPALIVE_PROBES;
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
	if (errno != EINPROGRESS || poll_until(fd, POLLOUT, deadline))
		goto out;
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

/* -- name resolution under the deadline -------------------------------------
 * musl's getaddrinfo takes no deadline (its resolver waits as resolv.conf
 * says), so a name, as opposed to an address literal, is resolved by a
 * child that sends the addresses back through a pipe. */

struct resolved {
	int gai; /* getaddrinfo's result, EAI_AGAIN when the deadline passed */
	unsigned n;
	struct { socklen_t len; struct sockaddr_storage sa; } addr[NBD_ADDRS_MAX];
};

static void resolve_now(const struct nbd_config *cfg, int flags, int family, struct resolved *rs)
{
	struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | flags };
	struct addrinfo *res, *ai;
	rs->n = 0;
	rs->gai = getaddrinfo(cfg->host, cfg->port, &hints, &res);
	if (rs->gai)
		return;
	for (ai = res; ai && rs->n < NBD_ADDRS_MAX; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof rs->addr[0].sa)
			continue;
		rs->addr[rs->n].len = ai->ai_addrlen;
		memcpy(&rs->addr[rs->n++].sa, ai->ai_addr, ai->ai_addrlen);
	}
	freeaddrinfo(res);
}

static void resolve_child(const struct nbd_config *cfg, int64_t deadline, struct resolved *rs)
{
	int pfd[2];
	pid_t pid;
	size_t got = 0;
	rs->gai = EAI_AGAIN;
	rs->n = 0;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		/* musl fails the whole lookup when the AAAA question is refused
		 * or unanswered (a name server with IPv4 records only may do
		 * that): then the A records alone.  An IPv4-only /init asks
		 * for those alone from the start. */
		resolve_now(cfg, 0, boot_env.ipv4_only ? AF_INET : AF_UNSPEC, rs);
		if ((rs->gai == EAI_AGAIN || rs->gai == EAI_FAIL) && !boot_env.ipv4_only)
			resolve_now(cfg, 0, AF_INET, rs);
		_exit(write_whole(pfd[1], (const char *)rs, sizeof *rs) ? 1 : 0);
	}
	close(pfd[1]);
	while (pid > 0 && got < sizeof *rs && poll_until(pfd[0], POLLIN, deadline) == 0) {
		ssize_t r = read(pfd[0], (char *)rs + got, sizeof *rs - got);
		if (r <= 0 && !(r < 0 && errno == EINTR))
			break;
		got += r > 0 ? (size_t)r : 0;
	}
	close(pfd[0]);
	if (pid > 0) {
		kill(pid, SIGKILL); /* done or out of time: either way it must go */
		waitpid(pid, NULL, 0);
	}
	if (got != sizeof *rs || rs->n > NBD_ADDRS_MAX) {
		rs->gai = EAI_AGAIN;
		rs->n = 0;
		err.deadline = nbd_now_ms() >= deadline;
	}
}

static int connect_tcp(const struct nbd_config *cfg, int64_t deadline)
{
	static struct resolved rs;
	int fd = -1, e = ECONNREFUSED;
	resolve_now(cfg, AI_NUMERICHOST, AF_UNSPEC, &rs);
	if (rs.gai == EAI_NONAME)
		resolve_child(cfg, deadline, &rs);
	if (rs.gai == EAI_AGAIN)
		return fail_retry("unable to resolve %s: %s", cfg->host,
				  err.deadline ? "no answer before the deadline" : gai_strerror(rs.gai));
	if (rs.gai || rs.n == 0)
		return fail_server("unable to resolve %s: %s", cfg->host,
				   rs.gai ? gai_strerror(rs.gai) : "no address");
	for (unsigned i = 0; i < rs.n && fd < 0; i++) {
		/* Leave time for the other addresses if this one is a black hole. */
		int64_t cap = nbd_now_ms() + (i + 1 < rs.n ? NBD_ADDR_TRY_MS : INT64_MAX / 2);
		fd = connect_addr((struct sockaddr *)&rs.addr[i].sa, rs.addr[i].len,
				  cap < deadline ? cap : deadline);
		if (fd < 0)
			e = errno;
	}
	if (fd < 0)
		return (transient_errno(e) ? fail_retry : fail_server)(
			"unable to connect to %s: %s", server_name(cfg), strerror(e));
	tune_tcp(fd);
	return fd;
}

/* ==== TLS ===============================================================
 * BearSSL client for STARTTLS: trust anchors and client credentials loaded
 * from PEM files into static pools, TLS 1.2 with ECDHE and AEAD suites only
 * (all of which the kernel can take over), the engine driven over the
 * connection's non-blocking socket within its deadline.  Record-layer
 * vtables are wrapped to learn the keys the kernel needs for kTLS.  No heap:
 * everything lives in one static state.  Calls Connection; Wire I/O calls
 * its record I/O, Negotiation its handshake, Attach its kTLS hand-over.
 */

#if NBDBOOT_TLS

struct ktls_dir {
	int cipher; /* TLS_CIPHER_*, 0 when unknown */
	uint8_t key[32], iv[12];
	size_t key_len;
};

static struct {
	br_ssl_client_context sc;
	br_x509_minimal_context xc;
	br_x509_trust_anchor anchors[NBD_TLS_ANCHORS_MAX];
	size_t nanchors;
	uint8_t pool[NBD_TLS_POOL];
	size_t pool_used;
	br_x509_certificate chain[NBD_TLS_CHAIN_MAX];
	size_t nchain;
	br_skey_decoder_context skey;
	uint8_t der[NBD_TLS_DER_MAX];
	size_t der_len;
	bool der_overflow;
	struct ktls_dir rx, tx;
	bool loaded;
	uint8_t iobuf[BR_SSL_BUFSIZE_BIDI];
	/* the X.509 engine BearSSL is given: wraps tls.xc to check addresses */
	struct {
		const br_x509_class *vtable;
		uint8_t ip[16];
		size_t iplen; /* 0: not an address, BearSSL checks the name */
		unsigned cert_index;
	} xw;
	/* record-layer classes, each BearSSL's own with init() wrapped */
	br_sslrec_in_gcm_class gcm_in;
	br_sslrec_out_gcm_class gcm_out;
	br_sslrec_in_chapol_class chapol_in;
	br_sslrec_out_chapol_class chapol_out;
	/* the client-certificate class, start_name_list() wrapped */
	br_ssl_client_certificate_class cert_class;
	void (*cert_base_start)(const br_ssl_client_certificate_class **);
	bool cert_requested; /* the server asked for a client certificate */
	bool handshake_done;
	const struct nbd_config *cfg; /* for messages */
} tls;

static const uint16_t tls_suites[] = {
	BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
};

/* -- record-layer wrappers: see the keys as BearSSL installs them ---------- */

static void capture(struct ktls_dir *d, int cipher, const void *key, size_t klen, const void *iv,
		    size_t ivlen)
{
	d->cipher = cipher;
	d->key_len = klen;
	memcpy(d->key, key, klen);
	memcpy(d->iv, iv, ivlen);
}

static void gcm_in_init(const br_sslrec_in_gcm_class **ctx, const br_block_ctr_class *bc,
			const void *key, size_t klen, br_ghash gh, const void *iv)
{
	capture(&tls.rx, klen == 16 ? TLS_CIPHER_AES_GCM_128 : TLS_CIPHER_AES_GCM_256, key, klen, iv, 4);
	br_sslrec_in_gcm_vtable.init(ctx, bc, key, klen, gh, iv);
}

static void gcm_out_init(const br_sslrec_out_gcm_class **ctx, const br_block_ctr_class *bc,
			 const void *key, size_t klen, br_ghash gh, const void *iv)
{
	capture(&tls.tx, klen == 16 ? TLS_CIPHER_AES_GCM_128 : TLS_CIPHER_AES_GCM_256, key, klen, iv, 4);
	br_sslrec_out_gcm_vtable.init(ctx, bc, key, klen, gh, iv);
}

static void chapol_in_init(const br_sslrec_in_chapol_class **ctx, br_chacha20_run ic,
			   br_poly1305_run ip, const void *key, const void *iv)
{
	capture(&tls.rx, TLS_CIPHER_CHACHA20_POLY1305, key, 32, iv, 12);
	br_sslrec_in_chapol_vtable.init(ctx, ic, ip, key, iv);
}

static void chapol_out_init(const br_sslrec_out_chapol_class **ctx, br_chacha20_run ic,
			    br_poly1305_run ip, const void *key, const void *iv)
{
	capture(&tls.tx, TLS_CIPHER_CHACHA20_POLY1305, key, 32, iv, 12);
	br_sslrec_out_chapol_vtable.init(ctx, ic, ip, key, iv);
}

/* -- PEM files into trust anchors, a chain, a key ------------------------- */

static void der_append(void *ctx, const void *data, size_t len)
{
	(void)ctx;
	if (tls.der_len + len > sizeof tls.der) {
		tls.der_overflow = true;
		return;
	}
	memcpy(tls.der + tls.der_len, data, len);
	tls.der_len += len;
}

static void *pool_copy(const void *p, size_t len)
{
	uint8_t *dst;
	if (tls.pool_used + len > sizeof tls.pool)
		return NULL;
	dst = tls.pool + tls.pool_used;
	memcpy(dst, p, len);
	tls.pool_used += len;
	return dst;
}

static void dn_append(void *ctx, const void *data, size_t len)
{
	br_x500_name *dn = ctx;
	if (dn->data && tls.pool_used + len <= sizeof tls.pool) {
		memcpy(tls.pool + tls.pool_used, data, len);
		tls.pool_used += len;
		dn->len += len;
	} else {
		dn->data = NULL;
	}
}

/* A CERTIFICATE from the CA file becomes a trust anchor (CA or pinned). */
static int add_anchor(const char *file)
{
	static br_x509_decoder_context dc;
	br_x509_trust_anchor *ta = &tls.anchors[tls.nanchors];
	const br_x509_pkey *pk;
	if (tls.nanchors == NBD_TLS_ANCHORS_MAX)
		return fail_usage("%s has more than %d certificates", file, NBD_TLS_ANCHORS_MAX);
	ta->dn.data = tls.pool + tls.pool_used;
	ta->dn.len = 0;
	br_x509_decoder_init(&dc, dn_append, &ta->dn);
	br_x509_decoder_push(&dc, tls.der, tls.der_len);
	pk = br_x509_decoder_get_pkey(&dc);
	if (!pk || !ta->dn.data)
		return fail_usage("%s: a certificate cannot be decoded (BearSSL error %d)", file,
				  br_x509_decoder_last_error(&dc));
	ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
	ta->pkey.key_type = pk->key_type;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		ta->pkey.key.rsa.n = pool_copy(pk->key.rsa.n, pk->key.rsa.nlen);
		ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
		ta->pkey.key.rsa.e = pool_copy(pk->key.rsa.e, pk->key.rsa.elen);
		ta->pkey.key.rsa.elen = pk->key.rsa.elen;
		if (!ta->pkey.key.rsa.n || !ta->pkey.key.rsa.e)
			return fail_usage("%s: too many or too large certificates", file);
	} else {
		ta->pkey.key.ec.curve = pk->key.ec.curve;
		ta->pkey.key.ec.q = pool_copy(pk->key.ec.q, pk->key.ec.qlen);
		ta->pkey.key.ec.qlen = pk->key.ec.qlen;
		if (!ta->pkey.key.ec.q)
			return fail_usage("%s: too many or too large certificates", file);
	}
	tls.nanchors++;
	return 0;
}

static int add_chain_cert(const char *file)
{
	uint8_t *p;
	if (tls.nchain == NBD_TLS_CHAIN_MAX)
		return fail_usage("%s has more than %d certificates", file, NBD_TLS_CHAIN_MAX);
	p = pool_copy(tls.der, tls.der_len);
	if (!p)
		return fail_usage("%s: certificates too large", file);
	tls.chain[tls.nchain].data = p;
	tls.chain[tls.nchain++].data_len = tls.der_len;
	return 0;
}

static int add_key(const char *file)
{
	br_skey_decoder_init(&tls.skey);
	br_skey_decoder_push(&tls.skey, tls.der, tls.der_len);
	if (br_skey_decoder_last_error(&tls.skey))
		return fail_usage("%s: the private key cannot be decoded (BearSSL error %d)", file,
				  br_skey_decoder_last_error(&tls.skey));
	return 0;
}

enum pem_kind { PEM_ANCHORS, PEM_CHAIN, PEM_KEY };

static int pem_object(const char *file, const char *name, enum pem_kind kind, int *count)
{
	bool cert = !strcmp(name, "CERTIFICATE") || !strcmp(name, "X509 CERTIFICATE");
	bool key = !strcmp(name, "RSA PRIVATE KEY") || !strcmp(name, "EC PRIVATE KEY") ||
		   !strcmp(name, "PRIVATE KEY");
	if (tls.der_overflow)
		return fail_usage("%s: a PEM object is larger than %d bytes", file, NBD_TLS_DER_MAX);
	if (kind == PEM_KEY ? !key : !cert)
		return 0; /* other objects in the file are not ours to use */
	++*count;
	if (kind == PEM_ANCHORS)
		return add_anchor(file);
	return kind == PEM_CHAIN ? add_chain_cert(file) : add_key(file);
}

/* Stream a PEM file through the decoder: no whole-file buffer. */
static int load_pem(const char *file, enum pem_kind kind)
{
	static br_pem_decoder_context pc;
	uint8_t buf[4096];
	int fd = open(file, O_RDONLY | O_CLOEXEC), count = 0, r = 0;
	ssize_t n;
	if (fd < 0)
		return fail_usage("unable to open %s: %s", file, strerror(errno));
	br_pem_decoder_init(&pc);
	for (bool eof = false; r == 0 && !eof;) {
		n = read(fd, buf, sizeof buf);
		if (n <= 0) { /* a last newline ends an unterminated END line */
			eof = true;
			buf[0] = '\n';
			n = 1;
		}
		for (size_t off = 0; r == 0 && off < (size_t)n;) {
			off += br_pem_decoder_push(&pc, buf + off, (size_t)n - off);
			switch (br_pem_decoder_event(&pc)) {
			case BR_PEM_BEGIN_OBJ:
				tls.der_len = 0;
				tls.der_overflow = false;
				br_pem_decoder_setdest(&pc, der_append, NULL);
				break;
			case BR_PEM_END_OBJ:
				r = pem_object(file, br_pem_decoder_name(&pc), kind, &count);
				break;
			case BR_PEM_ERROR:
				r = fail_usage("%s is not a valid PEM file", file);
				break;
			}
		}
	}
	close(fd);
	if (r == 0 && count == 0)
		r = fail_usage("%s has no %s", file, kind == PEM_KEY ? "private key" : "certificate");
	return r;
}

/* -- IP-address hosts: BearSSL matches DNS names only, so for an address
 * literal no name goes to BearSSL (and no SNI, as RFC 6066 wants) and the
 * end-entity certificate must list the address in subjectAltName. ------- */


/* One DER element at *p: tag, value and length, all inside end. */
static bool der_next(const uint8_t **p, const uint8_t *end, uint8_t *tag, const uint8_t **val,
		     size_t *len)
{
	const uint8_t *q = *p;
	uint8_t t;
	size_t n;
	if (end - q < 2)
		return false;
	t = *q++;
	n = *q++;
	if (n & 0x80) {
		unsigned k = n & 0x7f;
		if (k == 0 || k > 3 || (size_t)(end - q) < k)
			return false;
		for (n = 0; k--; q++)
			n = n << 8 | *q;
	}
	if ((size_t)(end - q) < n)
		return false;
	*tag = t; /* outputs change only for a whole element */
	*val = q;
	*len = n;
	*p = q + n;
	return true;
}

#define DER_SEQUENCE   0x30
#define DER_OID        0x06
#define DER_OCTETS     0x04
#define DER_EXTENSIONS 0xa3 /* tbsCertificate [3] EXPLICIT */
#define DER_SAN_IP     0x87 /* GeneralName iPAddress [7] IMPLICIT */

/* Enter the element at *p if it is tagged want: [*p, *end) becomes its value. */
static bool der_enter(const uint8_t **p, const uint8_t **end, uint8_t want)
{
	const uint8_t *v;
	uint8_t tag;
	size_t len;
	if (!der_next(p, *end, &tag, &v, &len) || tag != want)
		return false;
	*p = v;
	*end = v + len;
	return true;
}

/* The value of the first element in [p, end) tagged want. */
static bool der_find(const uint8_t *p, const uint8_t *end, uint8_t want, const uint8_t **val,
		     size_t *len)
{
	uint8_t tag;
	while (der_next(&p, end, &tag, val, len))
		if (tag == want)
			return true;
	return false;
}

/* The GeneralNames of a subjectAltName Extension (OID, [critical], OCTETS). */
static bool der_san(const uint8_t *p, const uint8_t *end, const uint8_t **names,
		    const uint8_t **names_end)
{
	static const uint8_t san_oid[] = { 0x55, 0x1d, 0x11 };
	const uint8_t *oid, *v;
	size_t olen, len;
	uint8_t tag;
	if (!der_next(&p, end, &tag, &oid, &olen) || tag != DER_OID || olen != sizeof san_oid ||
	    memcmp(oid, san_oid, sizeof san_oid) || !der_find(p, end, DER_OCTETS, &v, &len))
		return false;
	*names = v;
	*names_end = v + len;
	return der_enter(names, names_end, DER_SEQUENCE);
}

/* Does the certificate in der list ip among its iPAddress SANs? */
bool nbd_cert_has_ip(const uint8_t *der, size_t dlen, const uint8_t *ip, size_t iplen)
{
	const uint8_t *p = der, *end = der + dlen, *v, *names, *names_end;
	uint8_t tag;
	size_t len;
	if (!der_enter(&p, &end, DER_SEQUENCE) || !der_enter(&p, &end, DER_SEQUENCE) ||
	    !der_find(p, end, DER_EXTENSIONS, &v, &len))
		return false;
	p = v;
	end = v + len;
	if (!der_enter(&p, &end, DER_SEQUENCE))
		return false;
	while (der_next(&p, end, &tag, &v, &len)) {
		if (tag != DER_SEQUENCE || !der_san(v, v + len, &names, &names_end))
			continue;
		while (der_next(&names, names_end, &tag, &v, &len))
			if (tag == DER_SAN_IP && len == iplen && !memcmp(v, ip, iplen))
				return true;
		return false;
	}
	return false;
}

static void xw_start_chain(const br_x509_class **ctx, const char *name)
{
	(void)ctx;
	tls.xw.cert_index = 0;
	tls.xc.vtable->start_chain(&tls.xc.vtable, name);
}

static void xw_start_cert(const br_x509_class **ctx, uint32_t length)
{
	(void)ctx;
	if (tls.xw.cert_index == 0) {
		tls.der_len = 0;
		tls.der_overflow = false;
	}
	tls.xc.vtable->start_cert(&tls.xc.vtable, length);
}

static void xw_append(const br_x509_class **ctx, const unsigned char *buf, size_t len)
{
	(void)ctx;
	if (tls.xw.cert_index == 0)
		der_append(NULL, buf, len);
	tls.xc.vtable->append(&tls.xc.vtable, buf, len);
}

static void xw_end_cert(const br_x509_class **ctx)
{
	(void)ctx;
	tls.xw.cert_index++;
	tls.xc.vtable->end_cert(&tls.xc.vtable);
}

static unsigned xw_end_chain(const br_x509_class **ctx)
{
	unsigned r = tls.xc.vtable->end_chain(&tls.xc.vtable);
	(void)ctx;
	if (r == 0 && tls.xw.iplen &&
	    (tls.der_overflow || !nbd_cert_has_ip(tls.der, tls.der_len, tls.xw.ip, tls.xw.iplen)))
		return BR_ERR_X509_BAD_SERVER_NAME;
	return r;
}

static const br_x509_pkey *xw_get_pkey(const br_x509_class *const *ctx, unsigned *usages)
{
	(void)ctx;
	return tls.xc.vtable->get_pkey(&tls.xc.vtable, usages);
}

static const br_x509_class xw_vtable = {
	sizeof tls.xw, xw_start_chain, xw_start_cert, xw_append, xw_end_cert, xw_end_chain, xw_get_pkey,
};

/* -- a client-certificate "chooser" for when we have none: it only notes
 * that the server asked, so a refusal can say what is missing. ---------- */

static void nc_start_list(const br_ssl_client_certificate_class **p)
{
	(void)p;
	tls.cert_requested = true;
}

static void nc_start_name(const br_ssl_client_certificate_class **p, size_t len)
{
	(void)p;
	(void)len;
}
static void nc_append(const br_ssl_client_certificate_class **p, const unsigned char *d, size_t len)
{
	(void)p;
	(void)d;
	(void)len;
}

static void nc_end(const br_ssl_client_certificate_class **p) { (void)p; }
static void nc_choose(const br_ssl_client_certificate_class **p, const br_ssl_client_context *cc,
		      uint32_t auth_types, br_ssl_client_certificate *choices)
{
	(void)p;
	(void)cc;
	(void)auth_types;
	memset(choices, 0, sizeof *choices);
}

static const br_ssl_client_certificate_class nocert_vtable = {
	sizeof(const br_ssl_client_certificate_class *), nc_start_list, nc_start_name, nc_append,
	nc_end, nc_end, nc_choose, NULL, NULL,
};

static const br_ssl_client_certificate_class *nocert = &nocert_vtable;

/* -- configuration of the engine -------------------------------------------- */

static void tls_engine_setup(void)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	static const br_hash_class *const hashes[] = {
		&br_sha1_vtable, &br_sha224_vtable, &br_sha256_vtable, &br_sha384_vtable,
		&br_sha512_vtable,
	};
	br_ssl_client_zero(&tls.sc);
	br_ssl_engine_set_versions(e, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(e, tls_suites, sizeof tls_suites / sizeof tls_suites[0]);
	br_x509_minimal_init(&tls.xc, &br_sha256_vtable, tls.anchors, tls.nanchors);
	for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
		int id = (int)((hashes[i]->desc >> BR_HASHDESC_ID_OFF) & BR_HASHDESC_ID_MASK);
		br_ssl_engine_set_hash(e, id, hashes[i]);
		br_x509_minimal_set_hash(&tls.xc, id, hashes[i]);
	}
	br_x509_minimal_set_rsa(&tls.xc, &br_rsa_i31_pkcs1_vrfy);
	br_x509_minimal_set_ecdsa(&tls.xc, br_ec_get_default(), br_ecdsa_vrfy_asn1_get_default());
	tls.xw.vtable = &xw_vtable;
	br_ssl_engine_set_x509(e, &tls.xw.vtable);
	br_ssl_engine_set_prf_sha256(e, br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(e, br_tls12_sha384_prf);
	br_ssl_engine_set_default_ec(e);
	br_ssl_engine_set_rsavrfy(e, &br_rsa_i31_pkcs1_vrfy);
	br_ssl_engine_set_default_ecdsa(e);
	br_ssl_engine_set_default_aes_gcm(e);
	br_ssl_engine_set_default_chapol(e);
	tls.gcm_in = br_sslrec_in_gcm_vtable;
	tls.gcm_in.init = gcm_in_init;
	tls.gcm_out = br_sslrec_out_gcm_vtable;
	tls.gcm_out.init = gcm_out_init;
	tls.chapol_in = br_sslrec_in_chapol_vtable;
	tls.chapol_in.init = chapol_in_init;
	tls.chapol_out = br_sslrec_out_chapol_vtable;
	tls.chapol_out.init = chapol_out_init;
	br_ssl_engine_set_gcm(e, &tls.gcm_in, &tls.gcm_out);
	br_ssl_engine_set_chapol(e, &tls.chapol_in, &tls.chapol_out);
	br_ssl_engine_set_buffer(e, tls.iobuf, sizeof tls.iobuf, 1);
}

static void cert_asked(const br_ssl_client_certificate_class **p)
{
	tls.cert_requested = true;
	tls.cert_base_start(p);
}

static int tls_client_auth(const struct nbd_config *cfg)
{
	tls.cert_requested = false;
	if (!cfg->cert[0] && !cfg->key[0]) {
		br_ssl_client_set_client_certificate(&tls.sc, &nocert);
		return 0;
	}
	if (!cfg->cert[0] || !cfg->key[0])
		return fail_usage("a client certificate needs both --cert and --key");
	/* loaded once: every connection of a device presents the same chain */
	if (!tls.nchain && (load_pem(cfg->cert, PEM_CHAIN) || load_pem(cfg->key, PEM_KEY)))
		return -1;
	if (br_skey_decoder_key_type(&tls.skey) == BR_KEYTYPE_RSA)
		br_ssl_client_set_single_rsa(&tls.sc, tls.chain, tls.nchain,
					     br_skey_decoder_get_rsa(&tls.skey),
					     &br_rsa_i31_pkcs1_sign);
	else
		br_ssl_client_set_single_ec(&tls.sc, tls.chain, tls.nchain,
					    br_skey_decoder_get_ec(&tls.skey), BR_KEYTYPE_SIGN,
					    BR_KEYTYPE_EC, br_ec_get_default(),
					    br_ecdsa_sign_asn1_get_default());
	/* the same class, noting that the server asked for our certificate */
	tls.cert_class = *tls.sc.client_auth.vtable;
	tls.cert_base_start = tls.cert_class.start_name_list;
	tls.cert_class.start_name_list = cert_asked;
	tls.sc.client_auth.vtable = &tls.cert_class;
	return 0;
}

/* Certificates are checked against the clock, unless the clock is
 * obviously wrong (before this binary was built): then the build time. */
#define SECONDS_PER_DAY 86400
#define DAYS_TO_1970    719528 /* BearSSL counts days from 1 January, year 0 */

static void tls_set_time(void)
{
	static bool said;
	time_t now = time(NULL);
	if (now < (time_t)NBDBOOT_BUILD_TIME) {
		if (!said)
			say("the system clock is before this build; checking certificates "
			    "against the build time instead");
		said = true;
		now = (time_t)NBDBOOT_BUILD_TIME;
	}
	br_x509_minimal_set_time(&tls.xc, (uint32_t)(now / SECONDS_PER_DAY + DAYS_TO_1970),
				 (uint32_t)(now % SECONDS_PER_DAY));
}

/* Seed from getrandom: wait for the pool at most 10 s, then take what the
 * kernel has rather than hang the boot forever. */
static int tls_seed(int64_t deadline)
{
	uint8_t seed[32];
	long r = -1;
	int64_t until = nbd_now_ms() + NBD_TLS_SEED_WAIT_MS;
	if (until > deadline)
		until = deadline;
	for (;;) {
		r = syscall(SYS_getrandom, seed, sizeof seed, GRND_NONBLOCK);
		if (r == (long)sizeof seed || (r < 0 && errno != EAGAIN && errno != EINTR) ||
		    nbd_now_ms() >= until)
			break;
		sleep_ms(NBD_TLS_SEED_STEP_MS);
	}
	if (r != (long)sizeof seed) {
		r = syscall(SYS_getrandom, seed, sizeof seed, GRND_INSECURE);
		if (r == (long)sizeof seed)
			say("the kernel's random pool is not ready; seeding TLS anyway");
	}
	if (r != (long)sizeof seed)
		return fail_server("unable to get random bytes for TLS: %s", strerror(errno));
	br_ssl_engine_inject_entropy(&tls.sc.eng, seed, sizeof seed);
	return 0;
}

static int tls_prepare(const struct nbd_config *cfg, int64_t deadline)
{
	if (!tls.loaded) {
		if (!cfg->cacert[0])
			return fail_usage("TLS needs the CA certificates to check the server: --cacert FILE"
				  " (or " NBD_TLS_CA ")");
		if (load_pem(cfg->cacert, PEM_ANCHORS))
			return -1;
		tls.loaded = true;
	}
	tls_engine_setup();
	if (tls_client_auth(cfg))
		return -1;
	tls_set_time();
	if (tls_seed(deadline))
		return -1;
	memset(&tls.rx, 0, sizeof tls.rx);
	memset(&tls.tx, 0, sizeof tls.tx);
	const char *name = cfg->tlshostname[0] ? cfg->tlshostname
			   : cfg->host[0]      ? cfg->host
					       : "localhost";
	tls.xw.iplen = inet_pton(AF_INET, name, tls.xw.ip) == 1    ? 4
		   : inet_pton(AF_INET6, name, tls.xw.ip) == 1 ? 16
							   : 0;
	if (!br_ssl_client_reset(&tls.sc, tls.xw.iplen ? NULL : name, 0))
		return fail_server("TLS engine failed to start (BearSSL error %d)",
				   br_ssl_engine_last_error(&tls.sc.eng));
	return 0;
}

/* -- errors --------------------------------------------------------------------- */

static int tls_error(const struct nbd_config *cfg, int e)
{
	const char *name = cfg->tlshostname[0] ? cfg->tlshostname : cfg->host;
	int alert = e & 0xff;
	switch (e) {
	case BR_ERR_X509_NOT_TRUSTED:
		return fail_server("TLS: the server's certificate is not trusted: it is not signed by "
				   "a CA in %s", cfg->cacert);
	case BR_ERR_X509_BAD_SERVER_NAME:
		return fail_server("TLS: the server's certificate does not match %s '%s' "
				   "(use --tlshostname NAME)", tls.xw.iplen ? "the address" : "the name",
				   name);
	case BR_ERR_X509_EXPIRED:
		return fail_server("TLS: the server's certificate has expired or is not yet valid");
	case BR_ERR_IO:
		return fail_server("TLS: the server closed the connection during the handshake");
	case BR_ERR_UNSUPPORTED_VERSION:
	case BR_ERR_BAD_VERSION:
	case BR_ERR_BAD_LENGTH:
	case BR_ERR_TOO_LARGE:
		return fail_server("TLS: the server did not answer with TLS 1.2 records (BearSSL "
				   "error %d)", e);
	}
	if (e >= BR_ERR_RECV_FATAL_ALERT && e < BR_ERR_SEND_FATAL_ALERT) {
		if (alert == BR_ALERT_HANDSHAKE_FAILURE || alert == BR_ALERT_BAD_CERTIFICATE ||
		    alert == TLS_ALERT_CERTIFICATE_REQUIRED || alert == BR_ALERT_ACCESS_DENIED ||
		    alert == BR_ALERT_CERTIFICATE_UNKNOWN || alert == BR_ALERT_UNKNOWN_CA)
			return fail_server("TLS: the server refused the handshake (alert %d)%s", alert,
					   cfg->cert[0] ? ": it does not accept our client certificate"
							: ": it may require a client certificate (--cert, --key)");
		return fail_server("TLS: the server sent fatal alert %d", alert);
	}
	if (e >= BR_ERR_SEND_FATAL_ALERT)
		return fail_server("TLS: we refused the server's handshake (alert %d)", alert);
	if (e >= BR_ERR_X509_OK && e <= BR_ERR_X509_NOT_TRUSTED)
		return fail_server("TLS: the server's certificate is invalid (BearSSL X.509 error %d)", e);
	return fail_server("TLS: handshake failed (BearSSL error %d)", e);
}

/* -- driving the engine over the connection ------------------------------------- */

/* The server hung up: say what most likely made it do so. */
static int tls_lost(const char *what, const char *how)
{
	if (tls.cert_requested && tls.cfg->cert[0])
		return fail_server("TLS: the server asked for our client certificate, then ended the "
				   "handshake: it does not accept %s (%s: %s)", tls.cfg->cert, what, how);
	if (tls.cert_requested)
		return fail_server("TLS: the server requires a client certificate: give --cert and "
				   "--key (%s: %s)", what, how);
	/* A hang-up inside the handshake is the server refusing our TLS (versions,
	 * suites, our certificate): not worth retrying.  After it, the server
	 * turns us away like any other: retried, inside TLS again. */
	if (!tls.handshake_done)
		return fail_server("TLS: the server ended the handshake (%s); it may not speak TLS 1.2 "
				   "with ECDHE and AES-GCM or ChaCha20-Poly1305", how);
	return fail_retry("TLS connection lost (%s): %s", what, how);
}

/* Move records until the engine offers one of the states in want. */
static int tls_run(struct nbd_conn *c, unsigned want, const char *what)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	for (;;) {
		unsigned st = br_ssl_engine_current_state(e);
		size_t len;
		uint8_t *buf;
		ssize_t r;
		if (st & BR_SSL_CLOSED) {
			int le = br_ssl_engine_last_error(e);
			if (le != BR_ERR_OK)
				return tls_error(tls.cfg, le);
			return tls_lost(what, "closed the TLS session");
		}
		if (st & BR_SSL_SENDREC) {
			buf = br_ssl_engine_sendrec_buf(e, &len);
			r = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (r > 0)
				br_ssl_engine_sendrec_ack(e, (size_t)r);
			else if (errno != EAGAIN && errno != EINTR)
				return tls_lost(what, strerror(errno));
			else if (!(st & want) && wait_io(c, POLLOUT, what))
				return -1;
			if (r > 0 || !(st & want))
				continue;
		}
		if (st & want)
			return 0;
		if (!(st & BR_SSL_RECVREC))
			return fail_server("TLS engine stalled (%s)", what);
		buf = br_ssl_engine_recvrec_buf(e, &len);
		r = recv(c->fd, buf, len, MSG_DONTWAIT);
		if (r > 0)
			br_ssl_engine_recvrec_ack(e, (size_t)r);
		else if (r == 0 || (errno != EAGAIN && errno != EINTR))
			return tls_lost(what, r == 0 ? "closed the connection" : strerror(errno));
		else if (wait_io(c, POLLIN, what))
			return -1;
	}
}

static int tls_read(struct nbd_conn *c, void *buf, size_t len, const char *what)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	while (len) {
		size_t n;
		uint8_t *app;
		if (tls_run(c, BR_SSL_RECVAPP, what))
			return -1;
		app = br_ssl_engine_recvapp_buf(e, &n);
		n = n < len ? n : len;
		memcpy(buf, app, n);
		br_ssl_engine_recvapp_ack(e, n);
		buf = (uint8_t *)buf + n;
		len -= n;
	}
	return 0;
}

static int tls_write(struct nbd_conn *c, const void *buf, size_t len, const char *what)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	while (len) {
		size_t n;
		uint8_t *app;
		if (tls_run(c, BR_SSL_SENDAPP, what))
			return -1;
		app = br_ssl_engine_sendapp_buf(e, &n);
		n = n < len ? n : len;
		memcpy(app, buf, n);
		br_ssl_engine_sendapp_ack(e, n);
		buf = (const uint8_t *)buf + n;
		len -= n;
	}
	br_ssl_engine_flush(e, 0);
	/* every record on the wire before we wait for an answer */
	while (br_ssl_engine_current_state(e) & BR_SSL_SENDREC)
		if (tls_run(c, BR_SSL_SENDAPP | BR_SSL_RECVAPP, what))
			return -1;
	return 0;
}

static const char *tls_suite_name(void)
{
	br_ssl_session_parameters sp;
	br_ssl_engine_get_session_parameters(&tls.sc.eng, &sp);
	switch (sp.cipher_suite) {
	case BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: return "ECDHE-ECDSA-AES128-GCM-SHA256";
	case BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: return "ECDHE-RSA-AES128-GCM-SHA256";
	case BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: return "ECDHE-ECDSA-AES256-GCM-SHA384";
	case BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: return "ECDHE-RSA-AES256-GCM-SHA384";
	case BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-ECDSA-CHACHA20-POLY1305";
	case BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-RSA-CHACHA20-POLY1305";
	}
	return "unknown";
}

static int tls_handshake(struct nbd_conn *c, const struct nbd_config *cfg)
{
	tls.cfg = cfg;
	if (tls_prepare(cfg, c->deadline_ms))
		return -1;
	c->tls_active = true;
	tls.handshake_done = false;
	if (tls_run(c, BR_SSL_SENDAPP, "TLS handshake"))
		return -1;
	tls.handshake_done = true;
	trace("TLS handshake done (%s)", tls_suite_name());
	if (!tls.rx.cipher || !tls.tx.cipher)
		return fail_server("TLS: negotiated a cipher suite nbdboot did not offer");
	return 0;
}

/* Say goodbye inside TLS (after NBD_CMD_DISC): close_notify, best effort. */
static void tls_close(struct nbd_conn *c)
{
	br_ssl_engine_close(&tls.sc.eng);
	for (int i = 0; i < NBD_TLS_CLOSE_SENDS &&
			(br_ssl_engine_current_state(&tls.sc.eng) & BR_SSL_SENDREC); i++) {
		size_t len;
		uint8_t *buf = br_ssl_engine_sendrec_buf(&tls.sc.eng, &len);
		ssize_t r = send(c->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r <= 0)
			break;
		br_ssl_engine_sendrec_ack(&tls.sc.eng, (size_t)r);
	}
	c->tls_active = false;
}

/* -- handing the session to the kernel (kTLS) -------------------------------- */

static size_t ktls_fill(struct ktls_info *ki, const struct ktls_dir *d, uint64_t seq)
{
	uint8_t *p = ki->rest;
	memset(ki, 0, sizeof *ki);
	ki->version = TLS_1_2_VERSION_NUM;
	ki->cipher = (uint16_t)d->cipher;
	if (d->cipher == TLS_CIPHER_CHACHA20_POLY1305) {
		memcpy(p, d->iv, 12);
		memcpy(p + 12, d->key, 32);
		be64_put(p + 44, seq);
		return 4 + 12 + 32 + 8;
	}
	be64_put(p, seq); /* explicit nonce: BearSSL uses the sequence number */
	memcpy(p + 8, d->key, d->key_len);
	memcpy(p + 8 + d->key_len, d->iv, 4);
	be64_put(p + 8 + d->key_len + 4, seq);
	return 4 + 8 + d->key_len + 4 + 8;
}

/* 0 when the kernel now does the records on fd; 1 when it cannot (no tls
 * module, cipher unsupported) and nothing was changed that a proxy minds. */
static int ktls_install(int fd)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	struct ktls_info ki;
	size_t len;
	bool chapol = tls.tx.cipher == TLS_CIPHER_CHACHA20_POLY1305;
	uint64_t txseq = chapol ? e->out.chapol.seq : e->out.gcm.seq;
	uint64_t rxseq = chapol ? e->in.chapol.seq : e->in.gcm.seq;
	if (br_ssl_engine_current_state(e) & (BR_SSL_RECVAPP | BR_SSL_SENDREC))
		return fail_server("TLS: data left inside the TLS engine at hand-over");
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3) < 0)
		return 1;
	len = ktls_fill(&ki, &tls.tx, txseq);
	if (setsockopt(fd, SOL_TLS, TLS_TX, &ki, (socklen_t)len) < 0)
		return 1; /* the ULP alone leaves the socket a plain TCP socket */
	len = ktls_fill(&ki, &tls.rx, rxseq);
	if (setsockopt(fd, SOL_TLS, TLS_RX, &ki, (socklen_t)len) < 0)
		return fail_kernel("kTLS accepted the send keys but not the receive keys: %s",
				   strerror(errno));
	return 0;
}

#else /* !NBDBOOT_TLS */

static int tls_handshake(struct nbd_conn *c, const struct nbd_config *cfg)
{
	(void)c;
	(void)cfg;
	return fail_usage("this nbdboot was built without TLS (NBDBOOT_TLS=0)");
}

#endif

/* ==== Wire I/O ==========================================================
 * Whole-message reads and writes on the non-blocking socket, through the
 * TLS engine once STARTTLS succeeded, each bounded by the connection's
 * deadline.  Owns the send and receive buffers.
 */

static struct wire {
	uint8_t rbuf[NBD_REPLY_MAX];                                      /* one reply */
	uint8_t sbuf[4 + NBD_OPT_HDR_LEN + 4 + NBD_STRING_MAX + 2 + 2]; /* flags + one option */
} wire;

static int read_full(struct nbd_conn *c, void *buf, size_t len, const char *what)
{
	size_t got = 0;
#if NBDBOOT_TLS
	if (c->tls_active)
		return tls_read(c, buf, len, what);
#endif
	while (got < len) {
		ssize_t r = recv(c->fd, (uint8_t *)buf + got, len - got, MSG_DONTWAIT);
		if (r > 0) {
			got += (size_t)r;
		} else if (r == 0) { /* a server starting, or turning us away */
			fail_retry("server closed the connection (%s)", what);
			err.eof = true;
			return -1;
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
#if NBDBOOT_TLS
	if (c->tls_active)
		return tls_write(c, buf, len, what);
#endif
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

/* ==== Negotiation =======================================================
 * The handshake, one function per option exchange in wire order:
 * greeting, STARTTLS, GO, EXPORT_NAME, LIST, ABORT.  Every length from the
 * server is checked against a named bound before it is used.  Then the
 * retry loop that runs connect and negotiation under one deadline.  Calls
 * Connection, Wire I/O and TLS.
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
	if (len > sizeof wire.sbuf - 4 - NBD_OPT_HDR_LEN)
		return fail_usage("internal: option %s too long", opt_name(opt));
	if (c->client_flags_pending) {
		be32_put(wire.sbuf, c->pending_client_flags);
		n = 4;
		c->client_flags_pending = false;
	}
	be64_put(wire.sbuf + n, NBD_IHAVEOPT);
	be32_put(wire.sbuf + n + 8, opt);
	be32_put(wire.sbuf + n + 12, len);
	if (len)
		memmove(wire.sbuf + n + NBD_OPT_HDR_LEN, data, len);
	return write_all(c, wire.sbuf, n + NBD_OPT_HDR_LEN + len, opt_name(opt));
}

struct reply {
	uint32_t type, len;
	const uint8_t *data; /* points into wire.rbuf */
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
 * bound for its type), then the payload into wire.rbuf. */
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
	r->data = wire.rbuf;
	if (r->len > reply_bound(r->type))
		return fail_server("server sent a %u-byte reply (type 0x%x) to %s, more than the %u allowed",
				   r->len, r->type, opt_name(opt), reply_bound(r->type));
	return read_full(c, wire.rbuf, r->len, opt_name(opt));
}

/* The server's own words, bounded and sanitised, as ": server says "..."". */
static const char *server_says(const struct reply *r)
{
	static char buf[NBD_SHOW_MAX + 32];
	char text[NBD_SHOW_MAX + 4];
	if (!r->len)
		return "";
	nbd_sanitise(text, sizeof text, r->data, r->len);
	fmt(buf, sizeof buf, " (server says: %s)", text);
	return buf;
}

/* One message per NBD_REP_ERR_*: what happened and what to do.  A server
 * busy with a booting fleet answers GO with POLICY (nbd-server's
 * maxconnections), UNKNOWN (nbdkit's limit filter) or SHUTDOWN: those are
 * retried, and the message says only what the server said. */
static int reply_error(const struct reply *r, uint32_t opt, const char *name)
{
	const char *says = server_says(r), *on = opt_name(opt);
	bool go = opt == NBD_OPT_GO || opt == NBD_OPT_INFO;
	char exp[NBD_SHOW_MAX + 32];
	if (!go)
		fmt(exp, sizeof exp, "%s", on);
	else if (*name)
		fmt(exp, sizeof exp, "export '%s'", shown_name(name));
	else
		fmt(exp, sizeof exp, "the default export");
	switch (r->type) {
	case NBD_REP_ERR_UNSUP:
		return fail_server("server does not support %s%s", on, says);
	case NBD_REP_ERR_POLICY:
		return (go ? fail_retry : fail_server)("server refused %s by policy%s", exp, says);
	case NBD_REP_ERR_INVALID:
		return fail_server("server rejected %s as invalid%s", on, says);
	case NBD_REP_ERR_PLATFORM:
		return fail_server("server cannot do %s on its platform%s", on, says);
	case NBD_REP_ERR_TLS_REQD:
		return fail_server("server requires TLS: add --tls or use nbds://%s", says);
	case NBD_REP_ERR_UNKNOWN:
		return (go ? fail_retry : fail_server)("server refused %s as unknown or unavailable%s",
							 exp, says);
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

/* Leave option haggling politely; the server may close without a reply. */
static void opt_abort(struct nbd_conn *c)
{
	struct reply r;
	int64_t soon = nbd_now_ms() + NBD_ABORT_WAIT_MS;
	if (c->deadline_ms > soon)
		c->deadline_ms = soon;
	if (send_option(c, NBD_OPT_ABORT, NULL, 0) == 0)
		read_reply(c, NBD_OPT_ABORT, &r);
}

/* In transmission phase, the only polite goodbye is NBD_CMD_DISC. */
static void cmd_disc(struct nbd_conn *c)
{
	uint8_t req[NBD_REQUEST_LEN] = { 0 };
	be32_put(req, NBD_REQUEST_MAGIC);
	be16_put(req + 6, NBD_CMD_DISC);
	write_all(c, req, sizeof req, "disconnect");
}

/* NBD_OPT_LIST: each entry to fn, until the ACK.  0, or -1. */
static int opt_list(struct nbd_conn *c, void (*fn)(const char *, const char *, void *), void *arg)
{
	static char name[NBD_STRING_MAX + 1], desc[NBD_STRING_MAX + 1];
	struct reply r;
	if (send_option(c, NBD_OPT_LIST, NULL, 0))
		return -1;
	for (int n = 0; n < NBD_REPLIES_MAX; n++) {
		uint32_t nlen;
		if (read_reply(c, NBD_OPT_LIST, &r))
			return -1;
		if (r.type == NBD_REP_ACK)
			return 0;
		if (r.type != NBD_REP_SERVER)
			return reply_error(&r, NBD_OPT_LIST, "");
		nlen = r.len < 4 ? 0 : be32_get(r.data);
		if (r.len < 4 || nlen > r.len - 4 || nlen > NBD_STRING_MAX ||
		    r.len - 4 - nlen > NBD_STRING_MAX)
			return fail_server("server sent a malformed export list entry (%u bytes)", r.len);
		memcpy(name, r.data + 4, nlen);
		name[nlen] = 0;
		memcpy(desc, r.data + 4 + nlen, r.len - 4 - nlen);
		desc[r.len - 4 - nlen] = 0;
		fn(name, desc, arg);
	}
	return fail_server("server sent more than %d export list entries", NBD_REPLIES_MAX);
}

struct listed {
	const char *want;
	bool found;
	char names[NBD_SHOW_MAX + 4]; /* the first few, for the message */
	size_t n;
};

static void listed_add(const char *name, const char *desc, void *arg)
{
	struct listed *l = arg;
	(void)desc;
	l->found = l->found || !strcmp(name, l->want);
	if (l->n + 8 < sizeof l->names)
		l->n += (size_t)fmt(l->names + l->n, sizeof l->names - l->n, "%s'%s'", l->n ? ", " : "",
				    shown_name(name));
	if (l->n >= sizeof l->names)
		l->n = sizeof l->names - 1;
}

/* GO was refused as UNKNOWN, which a busy server says too: only if the
 * server's own list lacks the name is the name wrong (and not worth
 * retrying).  A server that will not list keeps the refusal as it was. */
static void refusal_or_unknown(struct nbd_conn *c, const char *name)
{
	static struct listed l;
	memset(&l, 0, sizeof l);
	l.want = name;
	if (opt_list(c, listed_add, &l) == 0 && !l.found)
		err_reword(EXIT_SERVER, false, "server has no export named '%s' (it lists %s)", shown_name(name),
			   l.n ? l.names : "none");
}

enum { GO_DONE = 0, GO_FAILED = -1, GO_UNSUPPORTED = 1 };

/* NBD_OPT_GO asking for block sizes; a refusal ends with ABORT. */
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
			ex->how = HS_FIXED_GO;
			if (have_export)
				return GO_DONE;
			fail_server("server finished %s without describing the export (no INFO_EXPORT)",
				    opt_name(opt));
			cmd_disc(c); /* the ACK began transmission: no ABORT any more */
			return GO_FAILED;
		}
		if (r.type == NBD_REP_INFO) {
			if (parse_info(&r, ex, &have_export)) {
				opt_abort(c);
				return GO_FAILED;
			}
			continue;
		}
		if (r.type == NBD_REP_ERR_UNSUP)
			return GO_UNSUPPORTED;
		reply_error(&r, opt, name);
		if (r.type == NBD_REP_ERR_UNKNOWN && *name)
			refusal_or_unknown(c, name);
		opt_abort(c);
		return GO_FAILED;
	}
	fail_server("server sent more than %d replies to %s", NBD_REPLIES_MAX, opt_name(opt));
	opt_abort(c);
	return GO_FAILED;
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, a refusal is a closed socket. */
static int opt_export_name(struct nbd_conn *c, const char *name, struct nbd_export *ex)
{
	uint8_t rep[NBD_EXPORT_NAME_REPLY_LEN + NBD_ZEROES_LEN];
	size_t len = NBD_EXPORT_NAME_REPLY_LEN + (c->no_zeroes ? 0 : NBD_ZEROES_LEN);
	if (send_option(c, NBD_OPT_EXPORT_NAME, name, (uint32_t)strlen(name)))
		return -1;
	if (read_full(c, rep, len, "EXPORT_NAME")) {
		if (err.eof) /* EXPORT_NAME has no error reply: a refusal is a close */
			err_reword(EXIT_SERVER, true, "server refused %s%s%s: it closed the connection after "
				   "EXPORT_NAME, which gives no reason", *name ? "export '" : "the default export",
				   *name ? shown_name(name) : "", *name ? "'" : "");
		return -1;
	}
	ex->size = be64_get(rep);
	ex->flags = be16_get(rep + 8);
	ex->how = c->fixed ? HS_FIXED_EXPORT_NAME : HS_NEWSTYLE;
	return check_size(ex->size);
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
		err.transient = false; /* whatever the reason: never go on in plaintext */
		return err_wrap("", ": refusing to continue without TLS");
	}
	return tls_handshake(c, cfg);
}

/* Greeting: oldstyle ends the handshake, newstyle leaves c ready for
 * options with the client flags pending. */
static int read_greeting(struct nbd_conn *c, const struct nbd_config *cfg, struct nbd_export *ex,
			 bool *oldstyle)
{
	uint8_t g[16 + NBD_OLDSTYLE_REST];
	int64_t deadline = c->deadline_ms;
	int r;
	/* A server sends its greeting at once.  One that does not may never
	 * have seen us (a full listen queue whose kernel forgot the connection
	 * it answered with a SYN cookie): a new connection is worth more than
	 * waiting out the whole deadline on this one. */
	if (c->greeting_by && c->greeting_by < deadline)
		c->deadline_ms = c->greeting_by;
	r = read_full(c, g, 16, "greeting");
	c->deadline_ms = deadline;
	if (r && err.deadline && nbd_now_ms() < deadline) {
		c->greeting_late = true;
		err.deadline = false; /* this connection's limit, not the step's */
		return err_reword(EXIT_SERVER, true, "no greeting from %s within %lld ms",
				  server_name(cfg), (long long)(c->greeting_by - c->started));
	}
	if (r) {
		err.transient = err.transient || err.eof; /* a server still starting up */
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
			     struct nbd_export *ex)
{
	int r;
	if (!c->fixed || cfg->no_optgo)
		return opt_export_name(c, cfg->name, ex);
	/* A probe uses GO too: some servers (nbd-server) only size the export
	 * for GO, and the probe must see exactly what an attach would. */
	r = opt_go(c, NBD_OPT_GO, cfg->name, ex);
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
		if (go_or_export_name(c, cfg, ex))
			return -1;
		ex->tls = cfg->tls;
	}
	if (!(ex->flags & NBD_FLAG_HAS_FLAGS))
		ex->flags = 0;
	if (probe) {
		cmd_disc(c); /* transmission has begun: the polite goodbye */
#if NBDBOOT_TLS
		if (c->tls_active)
			tls_close(c);
#endif
	}
	return 0;
}

int nbd_list(struct nbd_conn *c, const struct nbd_config *cfg,
	     void (*fn)(const char *, const char *, void *), void *arg)
{
	struct nbd_export ex;
	bool oldstyle;
	if (read_greeting(c, cfg, &ex, &oldstyle))
		return -1;
	if (oldstyle || !c->fixed)
		return fail_server("server cannot list exports (it does not speak fixed newstyle)");
	if ((cfg->tls && opt_starttls(c, cfg)) || opt_list(c, fn, arg))
		return -1;
	opt_abort(c);
	return 0;
}

/* -- retrying ------------------------------------------------------------------
 * At boot the network and the server may not be up yet, and a server facing
 * a whole fleet turns clients away (busy, by policy, shutting down, or just
 * closing).  Such failures are retried until the step's deadline, with
 * exponential backoff and random jitter so that a fleet does not retry in
 * lockstep.  The first failure of each kind (reaching the server, a
 * server that never greets, the server's answer) is shown once, so a
 * refusal is still told after a lost connection; the final error names the
 * last one. */

enum retry_kind { RETRY_NETWORK, RETRY_NO_GREETING, RETRY_ANSWER };

static struct retry_state {
	uint64_t rng;
	char last[sizeof err.msg]; /* the last failure that was not the deadline itself */
	bool said[3];              /* by enum retry_kind */
	unsigned server;           /* with --failover: where to start, then who answered */
	unsigned said_next;        /* servers whose failure was told (bits) */
	bool reconnecting;         /* the monitor's retries, not the boot's --wait */
	int64_t max_ms;            /* the longest pause; 0: NBD_RETRY_MAX_MS */
} retry;

/* xorshift64*, seeded from the kernel (never blocking) and the clock:
 * machines booted from one image must not draw the same numbers. */
static uint64_t jitter_random(void)
{
	if (!retry.rng) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (syscall(SYS_getrandom, &retry.rng, sizeof retry.rng, GRND_INSECURE) < 0 &&
		    syscall(SYS_getrandom, &retry.rng, sizeof retry.rng, GRND_NONBLOCK) < 0)
			retry.rng = 0;
		retry.rng ^= (uint64_t)ts.tv_nsec << 20 ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 40;
		retry.rng |= 1;
	}
	retry.rng ^= retry.rng >> 12;
	retry.rng ^= retry.rng << 25;
	retry.rng ^= retry.rng >> 27;
	return retry.rng * 0x2545f4914f6cdd1dULL;
}

/* The pause before attempt n+1: half the exponential step, plus up to as much. */
static int64_t backoff_ms(unsigned n)
{
	int64_t step = NBD_RETRY_FIRST_MS << (n < 16 ? n : 16);
	int64_t max = retry.max_ms ? retry.max_ms : NBD_RETRY_MAX_MS;
	if (step > max)
		step = max;
	return step / 2 + (int64_t)(jitter_random() % (uint64_t)(step / 2 + 1));
}

/* After a transient failure: remember it and say it, once per kind. */
static void retry_note(const struct nbd_config *cfg, enum retry_kind kind)
{
	if (!err.deadline)
		memcpy(retry.last, err.msg, sizeof retry.last);
	if (retry.said[kind] || err.deadline)
		return;
	retry.said[kind] = true;
	if (retry.reconnecting)
		say("%s; retrying", err.msg);
	else
		say("%s; retrying until %u s have passed (--wait)", err.msg, cfg->wait_seconds);
}

/* With --failover: server s failed; the next one is tried at once. */
static void failover_note(const struct nbd_config *cfg, unsigned s, unsigned next)
{
	if (err.deadline || (retry.said_next & (1u << s)))
		return;
	retry.said_next |= 1u << s;
	say("%s; trying %s", err.msg, server_name(server_config(cfg, next)));
}

/* Connect and run op until it succeeds or the deadline passes.  With
 * --failover each failure moves to the next server, and the pause comes
 * after a round of them; a refusal ends it only when every server of the
 * round refused. */
static int with_retries(const struct nbd_config *cfg, int64_t deadline,
			int (*op)(struct nbd_conn *, const struct nbd_config *, void *), void *arg)
{
	int64_t greeting_ms = NBD_GREETING_FIRST_MS;
	unsigned servers = 1 + cfg->nfailover, s = retry.server % servers, first = s;
	bool refused_round = true;
	for (unsigned n = 0;; n++) {
		const struct nbd_config *sc = server_config(cfg, s);
		struct nbd_conn c = { .fd = -1, .deadline_ms = deadline };
		nbd_error_clear();
		trace("connecting to %s", server_name(sc));
		c.fd = sc->unix_path[0] ? connect_unix(sc, deadline) : connect_tcp(sc, deadline);
		if (c.fd >= 0) {
			trace("connected");
			c.started = nbd_now_ms();
			c.greeting_by = c.started + greeting_ms;
			if (op(&c, sc, arg) == 0) {
				trace("negotiated");
				retry.server = s;
				return c.fd;
			}
			close(c.fd);
			if (c.greeting_late && greeting_ms < NBD_GREETING_MAX_MS)
				greeting_ms *= 2; /* or a slow server: give the next one longer */
		}
		/* a deadline that cut off a retry: the failure before it is the news */
		bool refused = !err.transient && !(err.deadline && retry.last[0]);
		if (refused && servers == 1)
			return -1;
		refused_round = refused_round && refused;
		if (servers > 1 && (s + 1) % servers != first && nbd_now_ms() < deadline) {
			failover_note(cfg, s, (s + 1) % servers);
			s = (s + 1) % servers;
			continue;
		}
		if (refused_round)
			return -1; /* every server refused for good */
		retry_note(sc, c.fd < 0 ? RETRY_NETWORK
				: c.greeting_late ? RETRY_NO_GREETING : RETRY_ANSWER);
		s = first;
		refused_round = true;
		int64_t left = deadline - nbd_now_ms(), pause = backoff_ms(n);
		if (left > 0)
			sleep_ms(pause < left ? pause : left);
		if (nbd_now_ms() >= deadline) {
			char last[sizeof err.msg];
			memcpy(last, retry.last[0] ? retry.last : err.msg, sizeof last);
			nbd_error_clear();
			return fail_server("%s (gave up after %u s; see --wait)", last, cfg->wait_seconds);
		}
	}
}

struct open_args {
	struct nbd_export *ex;
	bool probe;
};

static int open_op(struct nbd_conn *c, const struct nbd_config *cfg, void *arg)
{
	struct open_args *a = arg;
	return nbd_negotiate(c, cfg, a->ex, a->probe);
}

int nbd_open(const struct nbd_config *cfg, int64_t deadline, struct nbd_export *ex, bool probe)
{
	struct open_args a = { ex, probe };
	return with_retries(cfg, deadline, open_op, &a);
}

/* ==== Kernel ============================================================
 * The kernel's nbd interfaces as tools: generic netlink messages and
 * replies, the family lookup, device queries, the request size limit,
 * disconnecting, and waiting for a device to be ready.  Every kernel error
 * gets its own message.  Calls Connection (poll_until) and Errors.
 */

/* -- generic netlink ----------------------------------------------------------
 * Messages are built through helpers that know the buffer's end (an append
 * that does not fit marks the message, which is then never sent) and
 * replies are walked with every length checked against what remains. */

struct nlmsg {
	uint8_t buf[NL_MSG_MAX];
	size_t len;
	size_t nest[NL_NEST_MAX];
	int depth;
	bool overflow;
};

static void nl_start(struct nlmsg *m, uint16_t type, uint8_t cmd)
{
	struct nl_hdr h = { .type = type, .flags = NLM_F_REQUEST_FLAG | NLM_F_ACK_FLAG, .seq = 1 };
	struct genl_hdr g = { .cmd = cmd, .version = NBD_GENL_VERSION };
	memset(m, 0, sizeof *m);
	memcpy(m->buf, &h, sizeof h);
	memcpy(m->buf + sizeof h, &g, sizeof g);
	m->len = sizeof h + sizeof g;
}

static void nl_put(struct nlmsg *m, uint16_t type, const void *data, size_t len)
{
	struct nl_attr at = { .len = (uint16_t)(sizeof at + len), .type = type };
	if (m->overflow || len > NL_ATTR_DATA_MAX || m->len + NL_ALIGN(sizeof at + len) > sizeof m->buf) {
		m->overflow = true;
		return;
	}
	memcpy(m->buf + m->len, &at, sizeof at);
	if (len)
		memcpy(m->buf + m->len + sizeof at, data, len);
	m->len += NL_ALIGN(sizeof at + len);
}

static void nl_u32(struct nlmsg *m, uint16_t type, uint32_t v) { nl_put(m, type, &v, 4); }
static void nl_u64(struct nlmsg *m, uint16_t type, uint64_t v) { nl_put(m, type, &v, 8); }

static void nl_nest(struct nlmsg *m, uint16_t type)
{
	if (m->depth == NL_NEST_MAX) {
		m->overflow = true;
		return;
	}
	m->nest[m->depth++] = m->len;
	nl_put(m, type | NLA_F_NESTED_FLAG, NULL, 0);
}

static void nl_end(struct nlmsg *m)
{
	size_t at;
	uint16_t len;
	if (m->overflow || m->depth == 0) {
		m->overflow = true;
		return;
	}
	at = m->nest[--m->depth];
	len = (uint16_t)(m->len - at);
	memcpy(m->buf + at, &len, sizeof len);
}

static int nl_send(int fd, struct nlmsg *m)
{
	struct nl_hdr *h = (struct nl_hdr *)m->buf;
	if (m->overflow || m->depth)
		return -EMSGSIZE;
	h->len = (uint32_t)m->len;
	return send(fd, m->buf, m->len, 0) < 0 ? -errno : 0;
}

/* The first attribute of type `type` among the n bytes of attributes at p:
 * 1 with its payload in *val and *len, 0 when there is none, -EBADMSG when
 * any length runs past the end. */
static int nl_find(const uint8_t *p, size_t n, uint16_t type, const uint8_t **val, size_t *len)
{
	int found = 0;
	for (size_t a = 0; a + sizeof(struct nl_attr) <= n;) {
		struct nl_attr at;
		memcpy(&at, p + a, sizeof at);
		if (at.len < sizeof at || at.len > n - a)
			return -EBADMSG;
		if (!found && (at.type & NLA_TYPE_MASK) == type) {
			*val = p + a + sizeof at;
			*len = at.len - sizeof at;
			found = 1;
		}
		a += NL_ALIGN(at.len);
	}
	return found;
}

/* What nl_walk() hands each message: its generic netlink command and
 * attributes; a negative errno fails the datagram. */
typedef int nl_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg);

/* One datagram of messages, each given to fn.  0 at the ACK, a negative
 * errno for an error or a malformed reply, 1 when the ACK is still to come. */
static int nl_walk(const uint8_t *rx, size_t n, nl_visit *fn, void *arg)
{
	const size_t head = sizeof(struct nl_hdr) + sizeof(struct genl_hdr);
	for (size_t off = 0; off + sizeof(struct nl_hdr) <= n;) {
		struct nl_hdr r;
		memcpy(&r, rx + off, sizeof r);
		if (r.len < sizeof r || r.len > n - off)
			return -EBADMSG;
		if (r.type == NLMSG_ERROR_TYPE) {
			int32_t e;
			if (r.len < sizeof r + sizeof e)
				return -EBADMSG;
			memcpy(&e, rx + off + sizeof r, sizeof e);
			return e > 0 ? -EBADMSG : e;
		}
		if (r.len >= head) {
			int e = fn(rx[off + sizeof r], rx + off + head, r.len - head, arg);
			if (e < 0)
				return e;
		}
		off += NL_ALIGN(r.len);
	}
	return 1;
}

struct nl_want {
	uint16_t type;
	uint32_t *out;
};

static int want_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg)
{
	struct nl_want *w = arg;
	const uint8_t *v;
	size_t vlen;
	int r = nl_find(attrs, len, w->type, &v, &vlen);
	(void)cmd;
	if (r == 1 && w->out && vlen >= 2) {
		uint32_t x = 0;
		memcpy(&x, v, vlen >= 4 ? 4 : 2);
		*w->out = x;
		w->out = NULL; /* the first one */
	}
	return r < 0 ? r : 0;
}

/* Replies until the ACK or the deadline, each message to fn.  0 or a
 * negative errno. */
static int nl_recv_with(int fd, int64_t deadline, nl_visit *fn, void *arg)
{
	static uint8_t rx[8192];
	for (;;) {
		ssize_t n;
		int r;
		if (poll_until(fd, POLLIN, deadline))
			return -errno;
		n = recv(fd, rx, sizeof rx, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		r = nl_walk(rx, (size_t)n, fn, arg);
		if (r <= 0)
			return r;
	}
}

static int nl_recv(int fd, int64_t deadline, uint16_t want, uint32_t *out)
{
	struct nl_want w = { want, out };
	return nl_recv_with(fd, deadline, want_visit, &w);
}

static int nl_talk(int fd, struct nlmsg *m, int64_t deadline, uint16_t want, uint32_t *out)
{
	int r = nl_send(fd, m);
	return r < 0 ? r : nl_recv(fd, deadline, want, out);
}

/* Ask for the "nbd" family's id; the answer is read by nl_family().  Split
 * so the kernel can answer while the server is being reached. */
static int nl_ask_family(void)
{
	struct nlmsg m;
	int r, fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0)
		return -1;
	nl_start(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
	nl_put(&m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof NBD_GENL_FAMILY_NAME);
	r = nl_send(fd, &m);
	if (r < 0) {
		close(fd);
		errno = -r;
		return -1;
	}
	return fd;
}

/* The family id for a socket from nl_ask_family(); on failure the socket is
 * closed and errno is ENOENT when the kernel has no such family. */
static int nl_family(int fd, int64_t deadline, uint16_t *family)
{
	uint32_t id = 0;
	int r = nl_recv(fd, deadline, CTRL_ATTR_FAMILY_ID, &id);
	if (r < 0 || !id) {
		close(fd);
		errno = r < 0 ? -r : ENOENT;
		return -1;
	}
	*family = (uint16_t)id;
	return fd;
}

static int nl_open(int64_t deadline, uint16_t *family)
{
	int fd = nl_ask_family();
	return fd < 0 ? -1 : nl_family(fd, deadline, family);
}

/* -- what the reconnect monitor asks ----------------------------------------- */

struct nl_group {
	uint16_t family;
	uint32_t group;
};

/* GETFAMILY's answer: the family id, and the id of nbd's multicast group
 * among the numbered nests of CTRL_ATTR_MCAST_GROUPS. */
static int group_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg)
{
	struct nl_group *g = arg;
	const uint8_t *v, *groups, *one, *name;
	size_t vlen, glen, olen, nlen;
	int r = nl_find(attrs, len, CTRL_ATTR_FAMILY_ID, &v, &vlen);
	(void)cmd;
	if (r == 1 && vlen >= 2)
		memcpy(&g->family, v, 2);
	if (r < 0 || (r = nl_find(attrs, len, CTRL_ATTR_MCAST_GROUPS, &groups, &glen)) != 1)
		return r < 0 ? r : 0;
	for (uint16_t i = 1; nl_find(groups, glen, i, &one, &olen) == 1; i++)
		if (nl_find(one, olen, CTRL_ATTR_MCAST_GRP_NAME, &name, &nlen) == 1 &&
		    nlen >= sizeof NBD_GENL_MCAST_GROUP &&
		    !memcmp(name, NBD_GENL_MCAST_GROUP, sizeof NBD_GENL_MCAST_GROUP) &&
		    nl_find(one, olen, CTRL_ATTR_MCAST_GRP_ID, &v, &vlen) == 1 && vlen >= 4)
			memcpy(&g->group, v, 4);
	return 0;
}

/* A netlink socket in nbd's multicast group (LINK_DEAD), and the family's
 * id in *family, from one GETFAMILY; a negative errno. */
static int nl_join(int64_t deadline, uint16_t *family)
{
	struct nl_group g = { 0, 0 };
	int r, fd = nl_ask_family();
	if (fd < 0)
		return -errno;
	r = nl_recv_with(fd, deadline, group_visit, &g);
	if (r == 0 && (!g.family || !g.group))
		r = -ENOENT;
	if (r == 0 && setsockopt(fd, SOL_NETLINK_LEVEL, NETLINK_ADD_MEMBERSHIP_OPT, &g.group,
				 sizeof g.group) < 0)
		r = -errno;
	if (r < 0)
		close(fd);
	else
		*family = g.family;
	return r < 0 ? r : fd;
}

struct nl_status {
	uint32_t index;
	int connected; /* -1 until the answer came */
};

/* STATUS's answer: DEVICE_LIST > DEVICE_ITEM > INDEX, CONNECTED.  An empty
 * list: there is no such device. */
static int status_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg)
{
	struct nl_status *st = arg;
	const uint8_t *list, *item, *v;
	size_t llen, ilen, vlen;
	int r = nl_find(attrs, len, NBD_ATTR_DEVICE_LIST, &list, &llen);
	(void)cmd;
	if (r != 1)
		return r;
	st->connected = 0;
	if ((r = nl_find(list, llen, NBD_DEVICE_ITEM, &item, &ilen)) != 1)
		return r;
	if (nl_find(item, ilen, NBD_DEVICE_INDEX, &v, &vlen) != 1 || vlen < 4 ||
	    memcmp(v, &st->index, 4))
		return -EBADMSG;
	if (nl_find(item, ilen, NBD_DEVICE_CONNECTED, &v, &vlen) == 1 && vlen >= 1)
		st->connected = v[0] != 0;
	return 0;
}

/* Is nbdN still connected?  1 or 0, or a negative errno. */
static int nl_connected(int fd, uint16_t family, int index, int64_t deadline)
{
	struct nlmsg m;
	struct nl_status st = { (uint32_t)index, -1 };
	int r;
	nl_start(&m, family, NBD_CMD_STATUS);
	nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
	r = nl_send(fd, &m);
	if (r == 0)
		r = nl_recv_with(fd, deadline, status_visit, &st);
	return r < 0 ? r : st.connected < 0 ? -EBADMSG : st.connected;
}

/* SOCKETS: one SOCK_ITEM > SOCK_FD per socket. */
static void nl_sockets(struct nlmsg *m, const int *fds, unsigned n)
{
	nl_nest(m, NBD_ATTR_SOCKETS);
	for (unsigned i = 0; i < n; i++) {
		nl_nest(m, NBD_SOCK_ITEM);
		nl_u32(m, NBD_SOCK_FD, (uint32_t)fds[i]);
		nl_end(m);
	}
	nl_end(m);
}

/* RECONFIGURE: the kernel puts sock where a dead connection of nbdN was
 * (-ENOSPC when none is dead).  The backend identifier must be CONNECT's. */
static int nl_reconfigure(int fd, uint16_t family, int index, const char *ident, int sock,
			  int64_t deadline)
{
	static struct nlmsg m;
	nl_start(&m, family, NBD_CMD_RECONFIGURE);
	nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
	nl_sockets(&m, &sock, 1);
	nl_put(&m, NBD_ATTR_BACKEND_IDENTIFIER, ident, strlen(ident) + 1);
	return nl_talk(fd, &m, deadline, 0, NULL);
}

static int kernel_error(int e, const char *dev, const char *what)
{
	switch (e) {
	case EBUSY:
		return fail_kernel("%s is busy (already connected, or held open by udev or a mount): "
				   "disconnect it with 'nbdboot -d %s' or choose another device", dev, dev);
	case EPERM:
	case EACCES:
		return fail_kernel("not allowed to %s %s: run as root (CAP_SYS_ADMIN)", what, dev);
	case ENOENT:
	case ENODEV:
	case ENXIO:
		return fail_kernel("no nbd driver for %s: load the nbd module (modprobe nbd)", dev);
	case EINVAL:
		return fail_kernel("the kernel rejected %s of %s as invalid (size, block size or "
				   "flags): %s", what, dev, strerror(e));
	}
	return fail_kernel("unable to %s %s: %s", what, dev, strerror(e));
}

/* N of a /dev/nbdN that set_device() accepted. */
static int device_index(const char *dev)
{
	uint64_t v;
	scan_decimal(dev + strlen("/dev/nbd"), &v);
	return (int)v;
}

/* The kernel's backend identifier: CONNECT sets it, RECONFIGURE repeats it. */
static void backend_ident(const struct nbd_config *cfg, char *buf, size_t size)
{
	fmt(buf, size, "nbdboot:%s", server_name(cfg));
}

/* The netlink timeouts: given ones, else what reconnecting needs (persist). */
static uint32_t request_timeout(const struct nbd_config *cfg)
{
	return cfg->timeout ? cfg->timeout : cfg->persist ? NBD_PERSIST_TIMEOUT : 0;
}

static uint32_t dead_timeout(const struct nbd_config *cfg)
{
	return cfg->dead_timeout ? cfg->dead_timeout : cfg->persist ? NBD_PERSIST_DEAD_TIMEOUT : 0;
}

/* -- readiness -------------------------------------------------------------- */

static uint64_t device_size(const char *dev)
{
	uint64_t size = 0;
	int fd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0;
	if (ioctl(fd, BLKGETSIZE64, &size) < 0)
		size = 0;
	close(fd);
	return size;
}

/* Connected already, through either interface: the kernel shows a pid, or
 * the device has a size. */
static bool device_in_use(const char *dev)
{
	char path[96];
	fmt(path, sizeof path, "/sys/block/%s/pid", dev + 5);
	return access(path, F_OK) == 0 || device_size(dev) > 0;
}

static int detach_netlink(int index)
{
	int64_t deadline = nbd_now_ms() + NBD_KERNEL_WAIT_MS;
	uint16_t family;
	struct nlmsg m;
	int r, fd = nl_open(deadline, &family);
	if (fd < 0)
		return -errno;
	nl_start(&m, family, NBD_CMD_DISCONNECT);
	nl_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
	r = nl_talk(fd, &m, deadline, 0, NULL);
	close(fd);
	return r;
}

static int detach_ioctl(const char *dev)
{
	int nbd = open(dev, O_RDWR | O_CLOEXEC);
	if (nbd < 0)
		return kernel_error(errno, dev, "open");
	if (ioctl(nbd, NBD_DISCONNECT) < 0) {
		int e = errno;
		close(nbd);
		return kernel_error(e, dev, "disconnect");
	}
	ioctl(nbd, NBD_CLEAR_SOCK);
	close(nbd);
	return 0;
}

static int detach(const char *dev)
{
	return detach_netlink(device_index(dev)) == 0 ? 0 : detach_ioctl(dev);
}

/* The server's maximum payload, which binds every request once
 * NBD_INFO_BLOCK_SIZE was asked for, in the KiB of the queue's
 * max_sectors_kb; 0 when the server sets no maximum. */
static uint32_t request_limit_kb(const struct nbd_export *ex)
{
	if (!ex->has_block_sizes || ex->max_block == NBD_BLOCK_MAX_ANY)
		return 0;
	return ex->max_block / 1024;
}

/* The kernel refuses a max_sectors_kb below one page. */
static uint32_t queue_min_kb(void)
{
	long page = sysconf(_SC_PAGESIZE);
	return page > 1024 ? (uint32_t)(page / 1024) : 1;
}

/* Keep the kernel's requests within the server's maximum: lower the queue's
 * max_sectors_kb (the kernel's default allows 128 KiB, and up to 32 MiB
 * when raised).  0 when done or not needed, 1 when the queue does not
 * exist yet (netlink creates devices), -1 on failure. */
static int limit_requests(const struct nbd_export *ex, const char *dev)
{
	char path[96], cur[24] = "";
	uint32_t kb = request_limit_kb(ex);
	uint64_t now = 0;
	int fd, e;
	ssize_t n;
	if (!kb)
		return 0;
	fmt(path, sizeof path, "/sys/block/%s/queue/max_sectors_kb", dev + 5);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && access("/sys/block", F_OK) == 0)
		return 1;
	if (fd < 0)
		return fail_kernel("unable to keep %s's requests within the server's maximum of %u "
				   "bytes: %s: %s", dev, ex->max_block, path, strerror(errno));
	n = read(fd, cur, sizeof cur - 1);
	cur[n > 0 ? n : 0] = 0;
	if (scan_decimal(cur, &now) && now <= kb) {
		close(fd);
		return 0;
	}
	fmt(cur, sizeof cur, "%u", kb);
	e = write_whole(fd, cur, strlen(cur));
	close(fd);
	if (e)
		return fail_kernel("unable to keep %s's requests within the server's maximum of %u "
				   "bytes: writing %s to %s: %s", dev, ex->max_block, cur, path,
				   strerror(e));
	trace("requests limited to %u KiB", kb);
	return 0;
}

/* Until the device has its size and, when root is a partition, until that
 * partition's node exists; opening the device runs the partition scan. */
static int wait_ready(const char *dev, const char *root, pid_t holder)
{
	int64_t deadline = nbd_now_ms() + NBD_READY_WAIT_MS, sized_at = 0;
	bool rescanned = false;
	for (;;) {
		if (holder > 0 && waitpid(holder, NULL, WNOHANG) == holder)
			return fail_kernel("the process holding %s exited before the device was ready "
					   "(see dmesg)", dev);
		/* Opening a sized device runs the kernel's pending partition scan. */
		if (!sized_at && device_size(dev) > 0)
			sized_at = nbd_now_ms();
		if (sized_at && (!strcmp(root, dev) || access(root, F_OK) == 0))
			return 0;
		if (sized_at && !rescanned && nbd_now_ms() - sized_at > NBD_RESCAN_AFTER_MS) {
			int fd = open(dev, O_RDONLY | O_CLOEXEC); /* kernels that scan only when asked */
			if (fd >= 0) {
				ioctl(fd, BLKRRPART);
				close(fd);
			}
			rescanned = true;
		}
		if (nbd_now_ms() > deadline) {
			if (sized_at)
				return fail_kernel("%s has no partition %s after %d s: check the image's "
						   "partition table", dev, root, NBD_READY_WAIT_MS / 1000);
			return fail_kernel("%s did not come up within %d s", dev, NBD_READY_WAIT_MS / 1000);
		}
		sleep_ms(NBD_READY_POLL_MS); /* the holder starts within milliseconds */
	}
}

static int run_check(const struct nbd_config *cfg)
{
	char path[96], pid[32] = "";
	int fd;
	ssize_t n;
	fmt(path, sizeof path, "/sys/block/%s/pid", cfg->device + 5);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && access("/sys/block", F_OK))
		return fail_kernel("cannot check %s: /sys is not mounted", cfg->device);
	if (fd < 0 || device_size(cfg->device) == 0) {
		if (fd >= 0)
			close(fd);
		return fail_server("%s is not connected", cfg->device);
	}
	n = read(fd, pid, sizeof pid - 1);
	close(fd);
	pid[n > 0 ? n : 0] = 0;
	out("%s", pid);
	return 0;
}

/* ==== Resident process ==================================================
 * What stays behind after the boot (the NBD_DO_IT holder in ioctl mode,
 * the TLS proxy) must survive switch_root and systemd's killing spree: '@'
 * in argv[0], every catchable signal blocked, memory locked, the OOM killer
 * told to look elsewhere, and no file of the initramfs held open.  No
 * process in NBD_DO_IT survives systemd-shutdown's SIGSTOP, which cannot be
 * blocked: only netlink mode has no such process.  Calls TLS (the proxy),
 * Negotiation and Kernel (the monitor).
 */

static struct resident {
	char **argv; /* main's, for the '@' mark */
} resident;

static void become_resident(const int *keep, unsigned nkeep, bool daemon)
{
	sigset_t all;
	int fd;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL); /* any signal would end NBD_DO_IT */
	if (resident.argv && resident.argv[0] && resident.argv[0][0])
		resident.argv[0][0] = '@';
	/* lock what is touched, not every mapped page: resident size stays small */
	mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT);
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, NBD_OOM_SCORE_ADJ, strlen(NBD_OOM_SCORE_ADJ)) < 0) {
			/* not fatal: a less protected holder still works */
		}
		close(fd);
	}
	if (!daemon)
		return;
	if (chdir("/") < 0) {
		/* "/" always exists */
	}
	setsid();
	for (fd = 0; fd < NBD_FDS_CLOSED; fd++) {
		bool kept = false;
		for (unsigned i = 0; i < nkeep; i++)
			kept = kept || keep[i] == fd;
		if (!kept)
			close(fd);
	}
}

/* The ioctl-mode holder: the kernel serves the device while this task is
 * inside NBD_DO_IT, which returns when the device is disconnected (or, the
 * driver's choice, when any signal reaches the task, SIGSTOP included). */
__attribute__((noreturn))
static void hold_device(int nbd, bool daemon)
{
	become_resident(&nbd, 1, daemon);
	ioctl(nbd, NBD_DO_IT);
	ioctl(nbd, NBD_CLEAR_QUE);
	ioctl(nbd, NBD_CLEAR_SOCK);
	_exit(0);
}

#if NBDBOOT_TLS

/* One transfer per pass (BearSSL's tools/sslio.c): poll events come from
 * the engine's state, flush after application data, and a hang-up or error
 * counts only on a side we wait to read from, so nothing is acted on twice.
 * While both sides are open the wait has no timeout: the kernel's request
 * timeout ends a dead local side, and TCP itself (keepalive when idle,
 * retransmission when not) ends a dead network.  Once the kernel lets go
 * (EOF or hang-up), what it sent last still goes out, then close_notify,
 * and the proxy waits at most NBD_PROXY_LINGER_MS for the server. */
struct proxy {
	int net, local;   /* local: -1 once the kernel let go */
	bool hup;         /* the kernel hung up: nobody to deliver to */
	int64_t linger;   /* 0, or when to give up on the server */
};

/* The one transfer poll allowed; false when the proxy is done. */
static bool proxy_move(struct proxy *x, const struct pollfd *p)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	size_t len;
	uint8_t *buf;
	ssize_t r;
	if (p[0].revents & POLLOUT) {
		buf = br_ssl_engine_sendrec_buf(e, &len);
		if ((r = send(x->net, buf, len, MSG_NOSIGNAL)) > 0)
			br_ssl_engine_sendrec_ack(e, (size_t)r);
		else if (errno != EAGAIN && errno != EINTR)
			return false;
	} else if (p[1].revents & POLLOUT) {
		buf = br_ssl_engine_recvapp_buf(e, &len);
		if ((r = send(x->local, buf, len, MSG_NOSIGNAL)) > 0)
			br_ssl_engine_recvapp_ack(e, (size_t)r);
		else if (errno != EAGAIN && errno != EINTR)
			x->hup = true;
	} else if ((p[0].events & POLLIN) && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
		buf = br_ssl_engine_recvrec_buf(e, &len);
		if ((r = recv(x->net, buf, len, 0)) > 0)
			br_ssl_engine_recvrec_ack(e, (size_t)r);
		else if (r == 0 || (errno != EAGAIN && errno != EINTR))
			return false; /* the server is gone: the kernel sees the pair close */
	} else if ((p[1].events & POLLIN) && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
		buf = br_ssl_engine_sendapp_buf(e, &len);
		if ((r = recv(x->local, buf, len, 0)) > 0) {
			br_ssl_engine_sendapp_ack(e, (size_t)r);
			br_ssl_engine_flush(e, 0);
		} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
			x->local = -1; /* the kernel let go: close_notify, then leave */
			br_ssl_engine_close(e);
			x->linger = nbd_now_ms() + NBD_PROXY_LINGER_MS;
		}
	} else if (p[1].revents & (POLLHUP | POLLERR)) {
		x->hup = true; /* what it sent is read once the engine takes data */
	}
	if (x->hup && !x->linger)
		x->linger = nbd_now_ms() + NBD_PROXY_LINGER_MS;
	return true;
}

static void tls_proxy_loop(int net, int local)
{
	br_ssl_engine_context *e = &tls.sc.eng;
	struct proxy x = { .net = net, .local = local };
	fcntl(net, F_SETFL, fcntl(net, F_GETFL) | O_NONBLOCK);
	fcntl(local, F_SETFL, fcntl(local, F_GETFL) | O_NONBLOCK);
	for (;;) {
		unsigned st = br_ssl_engine_current_state(e);
		struct pollfd p[2] = {
			{ .fd = net, .events = (short)((st & BR_SSL_SENDREC ? POLLOUT : 0) |
						       (st & BR_SSL_RECVREC ? POLLIN : 0)) },
			{ .fd = x.local, .events = (short)((st & BR_SSL_RECVAPP && !x.hup ? POLLOUT : 0) |
							   (st & BR_SSL_SENDAPP ? POLLIN : 0)) },
		};
		int64_t left = x.linger ? x.linger - nbd_now_ms() : -1;
		size_t len;
		int r;
		if ((st & BR_SSL_RECVAPP) && (x.hup || x.local < 0)) {
			br_ssl_engine_recvapp_buf(e, &len);
			br_ssl_engine_recvapp_ack(e, len);
			continue;
		}
		if (x.local < 0 || !p[1].events)
			p[1] = (struct pollfd){ .fd = -1 }; /* a hang-up must not wake us for nothing */
		if ((st & BR_SSL_CLOSED) || (x.linger && left <= 0) || !(p[0].events | p[1].events))
			return;
		r = poll(p, 2, left < 0 ? -1 : left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR)
			return;
		if (r > 0 && !proxy_move(&x, p))
			return;
	}
}

/* Fork the resident proxy for this connection; returns the kernel's end. */
static int tls_proxy_start(int net)
{
	int sv[2];
	pid_t pid;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return fail_kernel("unable to create the TLS proxy's socket pair: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return fail_kernel("unable to fork the TLS proxy: %s", strerror(errno));
	}
	if (pid == 0) {
		close(sv[0]);
		/* what the handshake needed is dead weight in a resident process */
		madvise(tls.pool, sizeof tls.pool, MADV_DONTNEED);
		madvise(tls.der, sizeof tls.der, MADV_DONTNEED);
		become_resident((int[]){ net, sv[1] }, 2, true);
		tls_proxy_loop(net, sv[1]);
		_exit(0);
	}
	close(sv[1]);
	return sv[0];
}

/* After negotiation: the kernel takes the records (kTLS), or a proxy does.
 * Returns the fd to give the kernel; closes net when a proxy owns it. */
static int tls_handover(int net, const struct nbd_config *cfg, bool *proxied)
{
	int r = cfg->tls_proxy ? 1 : ktls_install(net);
	int local;
	*proxied = false;
	if (r <= 0)
		return r < 0 ? -1 : net;
	local = tls_proxy_start(net);
	if (local < 0)
		return -1;
	close(net);
	*proxied = true;
	return local;
}

#endif

/* -- the reconnect monitor ------------------------------------------------------
 * With persist (the default at boot) a netlink device gets a resident
 * monitor that keeps its connections alive.  It learns that one died from
 * the kernel's LINK_DEAD multicast and from its own copy of each socket the
 * kernel has: the kernel shuts a dead socket down, which poll() sees even
 * when a multicast was lost.  It connects again with jittered backoff
 * (moving to the next --failover server when one does not answer),
 * negotiates (TLS too: a new kTLS session, or a new proxy), refuses a
 * server whose export is not the same size and flags, and hands the new
 * socket to the kernel with NBD_CMD_RECONFIGURE; the kernel resends what
 * was in flight.  A socket shut down without LINK_DEAD may be a disconnect:
 * it looks again after a grace period.  STATUS every few seconds tells it
 * when the device was disconnected, and it ends.  After the dead-connection
 * timeout the kernel fails the I/O; the monitor says so and keeps trying,
 * more slowly, until the device is disconnected.  Messages go to /dev/kmsg.
 */

static struct monitor {
	const struct nbd_config *cfg;
	struct nbd_export ex;     /* every new connection must match it */
	char dev[NBD_DEVICE_MAX + 1];
	int index;
	char ident[NBD_IDENT_MAX + 1];
	int socks[NBD_CONNS_MAX]; /* our copy of each socket the kernel has */
	unsigned nsocks;
	int mc, nl;               /* netlink: nbd's multicast group; requests */
	uint16_t family;
	int proc;                 /* /proc: names resolve in PID 1's root */
	bool kmsg;                /* messages go to /dev/kmsg, with a level */
	bool link_dead;           /* LINK_DEAD came for this device */
	/* Told once per outage: /dev/kmsg rate-limits each writer (10 lines in
	 * 5 s), and a message repeated each attempt would suppress the next */
	unsigned refused_told;    /* servers refused for another export (bits) */
	bool kernel_told;         /* a RECONFIGURE the kernel refused */
} mon = { .mc = -1, .nl = -1, .proc = -1 };

/* One message: on /dev/kmsg at a syslog level (3 error, 4 warning, 5 notice). */
__attribute__((format(printf, 2, 3)))
static void mlog(int level, const char *f, ...)
{
	char line[768];
	va_list ap;
	va_start(ap, f);
	vfmt(line, sizeof line, f, ap);
	va_end(ap);
	if (mon.kmsg)
		diag("<%d>nbdboot: %s\n", level, line);
	else
		say("%s", line);
}

static int linkdead_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg)
{
	const uint8_t *v;
	size_t vlen;
	uint32_t index;
	(void)arg;
	if (cmd == NBD_CMD_LINK_DEAD && nl_find(attrs, len, NBD_ATTR_INDEX, &v, &vlen) == 1 &&
	    vlen >= 4) {
		memcpy(&index, v, 4);
		if (index == (uint32_t)mon.index)
			mon.link_dead = true;
	}
	return 0;
}

static void monitor_read_group(void)
{
	static uint8_t rx[4096];
	ssize_t n;
	while ((n = recv(mon.mc, rx, sizeof rx, MSG_DONTWAIT)) > 0)
		nl_walk(rx, (size_t)n, linkdead_visit, NULL);
}

/* Which of our sockets the kernel has shut down (dead), as bits in *dead;
 * true when one only saw the server hang up (the kernel is about to). */
static bool monitor_look(uint64_t *dead, int timeout_ms)
{
	struct pollfd p[1 + NBD_CONNS_MAX];
	bool closing = false;
	p[0] = (struct pollfd){ .fd = mon.mc, .events = POLLIN };
	for (unsigned i = 0; i < mon.nsocks; i++)
		p[1 + i] = (struct pollfd){ .fd = mon.socks[i], .events = POLLRDHUP };
	if (poll(p, 1 + mon.nsocks, timeout_ms) < 0 && errno != EINTR)
		sleep_ms(NBD_RETRY_FIRST_MS);
	if (p[0].revents & POLLIN)
		monitor_read_group();
	*dead = 0;
	for (unsigned i = 0; i < mon.nsocks; i++) {
		if (p[1 + i].revents & (POLLHUP | POLLERR | POLLNVAL))
			*dead |= 1ull << i;
		else if (p[1 + i].revents & POLLRDHUP)
			closing = true;
	}
	while (waitpid(-1, NULL, WNOHANG) > 0) {
		/* a proxy this monitor started, ended with its connection */
	}
	return closing;
}

/* LINK_DEAD follows the shutdown a moment later: wait for it a little. */
static bool monitor_wait_link_dead(void)
{
	int64_t until = nbd_now_ms() + NBD_MONITOR_GRACE_MS, left;
	while (!mon.link_dead && (left = until - nbd_now_ms()) > 0) {
		struct pollfd p = { .fd = mon.mc, .events = POLLIN };
		if (poll(&p, 1, (int)left) > 0)
			monitor_read_group();
	}
	return mon.link_dead;
}

/* Still connected?  A netlink failure counts as yes: only the kernel's
 * word ends the monitor. */
static bool monitor_device_there(void)
{
	int r = nl_connected(mon.nl, mon.family, mon.index, nbd_now_ms() + NBD_KERNEL_WAIT_MS);
	if (r == 0)
		mlog(5, "%s was disconnected; its monitor ends", mon.dev);
	return r != 0;
}

/* After switch_root our own root is the emptied initramfs: names are
 * resolved (with /etc/resolv.conf) in PID 1's root. */
static void monitor_follow_root(void)
{
	int fd = mon.proc < 0 ? -1 : openat(mon.proc, "1/root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fchdir(fd) == 0 && chroot(".") == 0 && chdir("/") == 0) {
		/* in PID 1's root now */
	}
	close(fd);
}

/* A new connection to the same export, ready for the kernel; -1 when no
 * server gave one before deadline. */
static int monitor_connect(int64_t deadline)
{
	const struct nbd_config *cfg = mon.cfg;
	struct nbd_export ex;
	int fd;
	monitor_follow_root();
	fd = nbd_open(cfg, deadline, &ex, false);
	if (fd < 0)
		return -1;
	if (ex.size != mon.ex.size || ex.flags != mon.ex.flags) {
		if (!(mon.refused_told & (1u << retry.server)))
			mlog(4, "refusing %s for %s: it serves another export now (%llu bytes, flags "
			     "0x%x; was %llu bytes, flags 0x%x)",
			     server_name(server_config(cfg, retry.server)), mon.dev,
			     (unsigned long long)ex.size, ex.flags, (unsigned long long)mon.ex.size,
			     mon.ex.flags);
		mon.refused_told |= 1u << retry.server;
		close(fd);
		retry.server = (retry.server + 1) % (1 + cfg->nfailover);
		return -1;
	}
#if NBDBOOT_TLS
	if (cfg->tls) {
		bool proxied;
		int kfd = tls_handover(fd, cfg, &proxied);
		if (kfd < 0) {
			mlog(4, "%s", nbd_last_error());
			close(fd);
			return -1;
		}
		fd = kfd;
	}
#endif
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* Replace the dead connections in *dead; false when the device is gone. */
static bool monitor_recover(uint64_t dead)
{
	const struct nbd_config *cfg = mon.cfg;
	int64_t since = nbd_now_ms(), late = since + (int64_t)dead_timeout(cfg) * 1000;
	bool told_late = false;
	memset(&retry.said, 0, sizeof retry.said);
	retry.said_next = 0;
	mon.refused_told = 0;
	mon.kernel_told = false;
	retry.last[0] = 0;
	mlog(4, "lost a connection of %s to %s; reconnecting (I/O waits up to %u s)", mon.dev,
	     server_name(server_config(cfg, retry.server)), dead_timeout(cfg));
	for (unsigned n = 0; dead; n++) {
		unsigned slot = (unsigned)__builtin_ctzll(dead);
		int64_t now = nbd_now_ms();
		int fd, r;
		if (!monitor_device_there())
			return false;
		if (now - since >= NBD_MONITOR_FAST_MS && !told_late)
			retry.max_ms = NBD_RETRY_MAX_MS; /* a long outage: a fleet's retries add up */
		if (now >= late && !told_late) {
			mlog(3, "no server for %s within %u s (--dead-timeout): its I/O fails now; "
			     "still trying until it is disconnected", mon.dev, dead_timeout(cfg));
			told_late = true;
			retry.max_ms = NBD_MONITOR_LATE_RETRY_MS;
		}
		fd = monitor_connect(told_late || late - now > NBD_MONITOR_TRY_MS ? now + NBD_MONITOR_TRY_MS
							       : late);
		if (fd >= 0) {
			r = nl_reconfigure(mon.nl, mon.family, mon.index, mon.ident, fd,
					   nbd_now_ms() + NBD_KERNEL_WAIT_MS);
			if (r == 0) {
				int64_t ms = nbd_now_ms() - since;
				close(mon.socks[slot]);
				mon.socks[slot] = fd;
				dead &= ~(1ull << slot);
				mlog(5, "%s reconnected to %s after %lld.%lld s", mon.dev,
				     server_name(server_config(cfg, retry.server)), (long long)(ms / 1000),
				     (long long)(ms % 1000 / 100));
				n = 0;
				continue;
			}
			close(fd);
			if (r != -ENOSPC && !mon.kernel_told)
				mlog(4, "the kernel refused the new connection for %s: %s", mon.dev,
				     strerror(-r));
			mon.kernel_told = mon.kernel_told || r != -ENOSPC;
		}
		sleep_ms(backoff_ms(n));
		monitor_look(&dead, 0);
	}
	mon.link_dead = false;
	retry.max_ms = NBD_MONITOR_RETRY_MS;
	return true;
}

static void monitor_loop(void)
{
	int64_t next = nbd_now_ms() + NBD_MONITOR_STATUS_MS;
	for (;;) {
		uint64_t dead;
		int64_t left = next - nbd_now_ms();
		bool closing = monitor_look(&dead, left < 0 ? 0 : (int)left);
		if (nbd_now_ms() >= next) {
			if (!monitor_device_there())
				return;
			next = nbd_now_ms() + NBD_MONITOR_STATUS_MS;
		}
		if (dead && !monitor_wait_link_dead()) {
			/* a disconnect shuts the sockets down without LINK_DEAD */
			if (!monitor_device_there())
				return;
			monitor_look(&dead, 0);
		}
		if (dead && !monitor_recover(dead))
			return;
		if (!dead && closing)
			sleep_ms(NBD_RETRY_FIRST_MS / 4); /* the kernel sees the hang-up next */
	}
}

/* Does any server have a name rather than an address? */
static bool names_to_resolve(const struct nbd_config *cfg)
{
	uint8_t ip[16];
	for (unsigned i = 0; i <= cfg->nfailover; i++) {
		const char *h = server_config(cfg, i)->host;
		if (h[0] && inet_pton(AF_INET, h, ip) != 1 && inet_pton(AF_INET6, h, ip) != 1)
			return true;
	}
	return false;
}

/* Start the monitor of a netlink device whose sockets are fds (the kernel
 * has them); its pid, or -1 (said why: the device works, without it). */
static pid_t monitor_start(const struct nbd_config *cfg, const struct nbd_export *ex,
			   const char *dev, const int *fds, unsigned nfds)
{
	int64_t deadline = nbd_now_ms() + NBD_KERNEL_WAIT_MS;
	int keep[NBD_CONNS_MAX + 4], nkeep = 0, k;
	pid_t pid;
	mon.cfg = cfg;
	mon.ex = *ex;
	fmt(mon.dev, sizeof mon.dev, "%s", dev);
	mon.index = device_index(dev);
	backend_ident(cfg, mon.ident, sizeof mon.ident);
	mon.mc = nl_join(deadline, &mon.family);
	if (mon.mc >= 0) /* requests go on a socket of their own: no multicast between */
		mon.nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (mon.mc < 0 || mon.nl < 0) {
		say("warning: %s will not reconnect: no netlink for its monitor: %s", dev,
		    strerror(mon.mc < 0 ? -mon.mc : errno));
		if (mon.mc >= 0)
			close(mon.mc);
		return -1;
	}
	pid = fork();
	if (pid != 0) {
		if (pid < 0)
			say("warning: %s will not reconnect: unable to fork its monitor: %s", dev,
			    strerror(errno));
		close(mon.mc);
		close(mon.nl);
		return pid;
	}
	for (unsigned i = 0; i < nfds; i++)
		mon.socks[mon.nsocks++] = keep[nkeep++] = fds[i];
	if (names_to_resolve(cfg)) /* only then: it keeps /proc from being unmounted */
		mon.proc = keep[nkeep++] = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
	keep[nkeep++] = mon.mc;
	keep[nkeep++] = mon.nl;
	k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (k >= 0 && dup2(k, 2) == 2)
		mon.kmsg = true;
	if (k > 2)
		close(k);
	keep[nkeep++] = 2;
	become_resident(keep, (unsigned)nkeep, true);
	retry.reconnecting = true;
	retry.max_ms = NBD_MONITOR_RETRY_MS;
	monitor_loop();
	_exit(0);
}

/* ==== Attach ============================================================
 * Hands negotiated sockets to the kernel's nbd driver: generic netlink
 * first (no process stays behind), the ioctls with a resident NBD_DO_IT
 * holder where netlink is missing or asked against.  Then waits, bounded,
 * for the size and the partition scan, and never leaves a half-attached
 * device.  Calls everything above.
 */

struct attach {
	const struct nbd_config *cfg;
	struct nbd_export ex;
	int fds[NBD_CONNS_MAX];
	unsigned nfds;
	uint32_t block_size;
	uint64_t size;
	int index; /* nbdN, or -1 to let the kernel choose (netlink) */
	bool proxied; /* TLS through the userspace proxy rather than kTLS */
	bool ioctl;   /* attached with the ioctls (and a holder), not netlink */
};

/* Default 512 (partition tables of 512-byte-sector images), raised to the
 * server's minimum; an explicit -b must satisfy the server. */
static int choose_block_size(struct attach *a)
{
	const struct nbd_export *ex = &a->ex;
	uint32_t bs = a->cfg->block_size ? a->cfg->block_size : NBD_DEFAULT_BLOCK;
	if (ex->has_block_sizes && ex->min_block > NBD_KERNEL_BLOCK_MAX)
		return fail_server("server's minimum block size %u is more than the kernel's %u",
				   ex->min_block, NBD_KERNEL_BLOCK_MAX);
	if (ex->has_block_sizes && bs < ex->min_block) {
		if (a->cfg->block_size)
			return fail_usage("block size %u is below the server's minimum %u: use -b %u",
					  bs, ex->min_block, ex->min_block);
		bs = ex->min_block;
	}
	if (ex->has_block_sizes && ex->max_block != NBD_BLOCK_MAX_ANY && bs > ex->max_block)
		return fail_usage("block size %u is above the server's maximum %u", bs, ex->max_block);
	if (request_limit_kb(ex) && request_limit_kb(ex) < queue_min_kb())
		return fail_server("the server takes requests of at most %u bytes, and Linux's nbd "
				   "driver cannot keep its requests below %u KiB", ex->max_block,
				   queue_min_kb());
	a->block_size = bs;
	a->size = a->cfg->size_override ? a->cfg->size_override : ex->size;
	if (a->size < bs)
		return fail_server("export is empty or smaller than one block (%llu bytes)",
				   (unsigned long long)a->size);
	return 0;
}

/* NBD_CMD_CONNECT for a, into m. */
static void nl_connect_msg(struct nlmsg *m, const struct attach *a, uint16_t family)
{
	const struct nbd_config *cfg = a->cfg;
	char ident[NBD_IDENT_MAX + 1];
	nl_start(m, family, NBD_CMD_CONNECT);
	if (a->index >= 0)
		nl_u32(m, NBD_ATTR_INDEX, (uint32_t)a->index);
	nl_u64(m, NBD_ATTR_SIZE_BYTES, a->size);
	nl_u64(m, NBD_ATTR_BLOCK_SIZE_BYTES, a->block_size);
	nl_u64(m, NBD_ATTR_SERVER_FLAGS, a->ex.flags | (cfg->readonly ? NBD_FLAG_READ_ONLY : 0));
	if (request_timeout(cfg))
		nl_u64(m, NBD_ATTR_TIMEOUT, request_timeout(cfg));
	if (dead_timeout(cfg))
		nl_u64(m, NBD_ATTR_DEAD_CONN_TIMEOUT, dead_timeout(cfg));
	nl_sockets(m, a->fds, a->nfds);
	backend_ident(cfg, ident, sizeof ident);
	nl_put(m, NBD_ATTR_BACKEND_IDENTIFIER, ident, strlen(ident) + 1);
}

/* NBD_CMD_CONNECT; 1 when the family is missing (try ioctls), 0, or -1. */
static int attach_netlink(struct attach *a, int asked, int64_t deadline, char *dev, size_t devsz)
{
	static struct nlmsg m;
	uint16_t family;
	uint32_t index = 0;
	int r, fd = asked < 0 ? (errno = ENOENT, -1) : nl_family(asked, deadline, &family);
	if (fd < 0)
		return errno == ENOENT ? 1 : kernel_error(errno, "nbd", "reach netlink for");
	nl_connect_msg(&m, a, family);
	trace("netlink CONNECT");
	r = nl_talk(fd, &m, deadline, NBD_ATTR_INDEX, &index);
	close(fd);
	trace("the kernel has the device");
	if (r < 0)
		return kernel_error(-r, a->index >= 0 ? dev : "an nbd device", "connect");
	if (a->index < 0)
		fmt(dev, devsz, "/dev/nbd%u", index);
	return 0;
}

/* Configure the device and fork the NBD_DO_IT holder; returns its pid. */
static pid_t attach_ioctl(struct attach *a, const char *dev)
{
	const struct nbd_config *cfg = a->cfg;
	unsigned long flags = a->ex.flags | (cfg->readonly ? NBD_FLAG_READ_ONLY : 0);
	int one = 1, nbd;
	unsigned set = 0;
	pid_t pid;
	/* The size and flag ioctls would reconfigure a live device before
	 * SET_SOCK refused: look first, touch nothing that is in use. */
	if (device_in_use(dev))
		return kernel_error(EBUSY, dev, "connect");
	nbd = open(dev, O_RDWR | O_CLOEXEC);
	if (nbd < 0)
		return kernel_error(errno, dev, "open");
	if (ioctl(nbd, NBD_SET_BLKSIZE, (unsigned long)a->block_size) < 0 ||
	    ioctl(nbd, NBD_SET_SIZE_BLOCKS, (unsigned long)(a->size / a->block_size)) < 0 ||
	    (cfg->timeout && ioctl(nbd, NBD_SET_TIMEOUT, (unsigned long)cfg->timeout) < 0) ||
	    ioctl(nbd, NBD_SET_FLAGS, flags) < 0)
		goto fail;
	for (; set < a->nfds; set++)
		if (ioctl(nbd, NBD_SET_SOCK, (unsigned long)a->fds[set]) < 0)
			goto fail;
	if ((flags & NBD_FLAG_READ_ONLY) && ioctl(nbd, BLKROSET, &one) < 0)
		goto fail;
	trace("ioctl SET_SOCK done, starting the NBD_DO_IT holder");
	pid = fork();
	if (pid < 0)
		goto fail;
	if ((pid == 0) != cfg->nofork) /* -n: the parent holds, the child goes on */
		hold_device(nbd, !cfg->nofork);
	close(nbd);
	return pid ? pid : getppid();
fail:
	kernel_error(errno, dev, "configure");
	if (set) /* only sockets we gave it: CLEAR_SOCK would cut anyone's */
		ioctl(nbd, NBD_CLEAR_SOCK);
	close(nbd);
	return -1;
}



/* Every connection of the device under one --wait deadline. */
static int connect_all(struct attach *a)
{
	int64_t deadline = deadline_after(a->cfg->wait_seconds);
	struct nbd_export other;
	for (unsigned i = 0; i < a->cfg->conns; i++) {
		int fd = nbd_open(a->cfg, deadline, i ? &other : &a->ex, false);
		if (fd < 0)
			return -1;
		if (i == 0 && a->cfg->conns > 1 && !(a->ex.flags & NBD_FLAG_CAN_MULTI_CONN)) {
			close(fd);
			return fail_usage("the server does not allow several connections to this export "
					  "(it does not advertise NBD_FLAG_CAN_MULTI_CONN): use -C 1");
		}
#if NBDBOOT_TLS
		if (a->cfg->tls) {
			bool proxied;
			int kfd = tls_handover(fd, a->cfg, &proxied);
			if (kfd < 0) {
				close(fd);
				return -1;
			}
			fd = kfd;
			a->proxied = proxied;
		}
#endif
		a->fds[a->nfds++] = fd;
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		if (i && (other.size != a->ex.size || other.flags != a->ex.flags))
			return fail_server("connection %u saw a different export (size or flags)", i + 1);
	}
	return 0;
}

/* Into the kernel: netlink unless the ioctls were asked for or netlink is
 * missing.  The device's requests are limited before it is used where it
 * exists, else right after.  The holder's pid (ioctl mode), 0, or -1. */
static pid_t attach_kernel(struct attach *a, int asked, char *dev, size_t devsz)
{
	const struct nbd_config *cfg = a->cfg;
	int limited = dev[0] ? limit_requests(&a->ex, dev) : 1;
	int r = limited < 0 ? -1 : 0;
	pid_t holder = 0;
	if (r == 0 && !cfg->use_ioctl)
		r = attach_netlink(a, asked, nbd_now_ms() + NBD_KERNEL_WAIT_MS, dev, devsz);
	else if (asked >= 0)
		close(asked);
	if (r == 1 || (r == 0 && cfg->use_ioctl)) {
		a->ioctl = true;
		if (!dev[0])
			fmt(dev, devsz, "/dev/nbd0");
		if (limited == 1 && (limited = limit_requests(&a->ex, dev)) < 0)
			return -1;
		r = (holder = attach_ioctl(a, dev)) < 0 ? -1 : 0;
	}
	if (r == 0 && limited == 1 && limit_requests(&a->ex, dev) != 0) {
		fail_kernel("%s has no request queue in /sys/block to limit", dev);
		detach(dev);
		return -1;
	}
	return r < 0 ? -1 : holder;
}

static int run_attach(const struct nbd_config *cfg)
{
	static struct attach a;
	char dev[NBD_DEVICE_MAX + 1];
	pid_t holder, monitor = 0;
	memset(&a, 0, sizeof a);
	a.cfg = cfg;
	a.index = cfg->device[0] ? device_index(cfg->device) : -1;
	fmt(dev, sizeof dev, "%s", cfg->device);
	int asked = cfg->use_ioctl ? -1 : nl_ask_family();
	if (connect_all(&a) || choose_block_size(&a)) {
		holder = -1;
		if (asked >= 0)
			close(asked);
	} else {
		holder = attach_kernel(&a, asked, dev, sizeof dev); /* it owns asked */
	}
	if (holder >= 0 && wait_ready(dev, cfg->root[0] ? cfg->root : dev, cfg->nofork ? 0 : holder)) {
		detach(dev); /* never leave a half-attached device behind */
		holder = -1;
	}
	if (holder >= 0 && cfg->persist && !a.ioctl)
		monitor = monitor_start(cfg, &a.ex, dev, a.fds, a.nfds);
	for (unsigned i = 0; i < a.nfds; i++)
		close(a.fds[i]);
	if (holder < 0)
		return -1;
	trace("device ready");
	if (a.ioctl)
		say("warning: %s is attached with the ioctls: its NBD_DO_IT holder cannot survive "
		    "systemd's shutdown (its SIGSTOP ends NBD_DO_IT); netlink mode (Linux 4.12+) has "
		    "no such process", dev);
	if (a.ioctl && cfg->persist && cfg->persist_given)
		say("warning: %s cannot reconnect with the ioctls: if its connection is lost (server "
		    "restart, network) the device fails with I/O errors; netlink mode reconnects", dev);
	char persist[128] = "";
	if (monitor > 0)
		fmt(persist, sizeof persist, "; it reconnects by itself (monitor %d, request timeout "
		    "%u s, I/O waits up to %u s)", (int)monitor, request_timeout(cfg), dead_timeout(cfg));
	say("attached %s%s%s to %s (%llu bytes, block size %u, %s%s%s)%s",
	    server_name(server_config(cfg, retry.server)),
	    cfg->name[0] ? " export " : "", cfg->name[0] ? shown_name(cfg->name) : "", dev,
	    (unsigned long long)a.size, a.block_size, a.ioctl ? "ioctl" : "netlink",
	    !cfg->tls ? "" : a.proxied ? ", TLS via proxy" : ", kTLS",
	    (a.ex.flags | (cfg->readonly ? NBD_FLAG_READ_ONLY : 0)) & NBD_FLAG_READ_ONLY ?
		    ", read-only" : "", persist);
	return 0;
}

/* ==== /init: early ======================================================
 * nbdboot as PID 1 of an initramfs that holds nothing else: the kernel's
 * file systems, the console on fds 0-2, each message also on /dev/kmsg,
 * and the one way out of a failure, since PID 1 must never exit: say what
 * failed and what to do, wait nbdboot.panic= seconds (the kernel's panic=
 * when not given), reboot.  Calls Formatting, Errors, Configuration and
 * Connection (the clock).
 */

static struct initstate {
	struct nbd_boot boot;
	char cmdline[8192];
	const char *step; /* what was being done: the fatal message names it */
} init_st;

/* A small procfs or sysfs file into buf, NUL-terminated (cut to size); its
 * length, or -1.  The /init sections read the kernel's state through it. */
static ssize_t read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

static void init_mount(const char *type, const char *dir, const char *data)
{
	mkdir(dir, 0755);
	if (mount(type, dir, type, MS_NOSUID | (strcmp(type, "devtmpfs") ? MS_NODEV : 0) |
		  (strcmp(type, "proc") && strcmp(type, "sysfs") ? 0 : MS_NOEXEC), data) < 0 &&
	    errno != EBUSY)
		say("warning: unable to mount %s on %s: %s", type, dir, strerror(errno));
}

/* The console as fds 0-2 (the kernel opens it only when the initramfs has
 * /dev/console), and /dev/kmsg for the copy of every message. */
static void init_console(void)
{
	int fd = -1;
	if (fcntl(0, F_GETFD) < 0 || fcntl(1, F_GETFD) < 0 || fcntl(2, F_GETFD) < 0) {
		fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			fd = open("/dev/null", O_RDWR);
		for (int i = 0; fd >= 0 && i < 3; i++)
			if (fcntl(i, F_GETFD) < 0)
				dup2(fd, i);
		if (fd > 2)
			close(fd);
	}
	output.kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	output.console_level = 7;
	char b[16];
	uint64_t v;
	if (read_text("/proc/sys/kernel/printk", b, sizeof b) > 0 && scan_decimal(b, &v) && v < 16)
		output.console_level = (int)v; /* the first of the four numbers */
}

static void init_early(void)
{
	init_mount("proc", "/proc", NULL);
	init_mount("sysfs", "/sys", NULL);
	init_mount("devtmpfs", "/dev", "mode=0755");
	init_console();
	init_mount("tmpfs", "/run", "mode=0755");
}

/* What the user can do about a failure of this class. */
static const char *init_hint(void)
{
	switch (nbd_last_error_class()) {
	case EXIT_USAGE:
		return "correct the kernel command line (see nbdboot(8), BOOT AS /init)";
	case EXIT_KERNEL:
		return "the initramfs may lack a module: rebuild it with make initramfs MODULES=...";
	}
	return "check the network, the server and its export; nbdboot retried until "
	       "nbdboot.wait= ran out";
}

/* The kernel's panic= (seconds; negative: at once; 0: never). */
static int kernel_panic_s(void)
{
	char b[16];
	int v = 0;
	bool neg;
	read_text("/proc/sys/kernel/panic", b, sizeof b);
	neg = b[0] == '-';
	for (const char *p = b + neg; *p >= '0' && *p <= '9' && v < 1000000; p++)
		v = v * 10 + (*p - '0');
	return neg ? -v : v;
}

/* PID 1 must not exit: the reason, what to do, then reboot or wait. */
__attribute__((noreturn))
static void init_fatal(void)
{
	int s = init_st.boot.panic_s == NBD_PANIC_UNSET ? kernel_panic_s() : init_st.boot.panic_s;
	output.level = 2;
	say("fatal: unable to %s: %s", init_st.step, nbd_last_error());
	say("%s", init_hint());
	if (s == 0)
		say("waiting for ever (nbdboot.panic=0, or the kernel's panic=0): reset the machine "
		    "once that is done, or boot with nbdboot.panic=SECONDS to reboot by itself");
	else if (s > 0)
		say("rebooting in %d s (nbdboot.panic=)", s);
	else
		say("rebooting now (panic=%d)", s);
	for (int64_t until = nbd_now_ms() + (int64_t)s * 1000; s != 0 && nbd_now_ms() < until;)
		sleep_ms(until - nbd_now_ms());
	sync();
	if (s != 0)
		reboot(RB_AUTOBOOT);
	for (;;)
		pause(); /* the documented exception to "every wait has a deadline" */
}

/* ==== /init: modules ====================================================
 * Loads what the boot needs from the initramfs's /lib/modules/KVER, whose
 * modules.dep, modules.alias and modules.softdep (depmod's, made by make
 * initramfs for just the modules in it) say where each one is, what it
 * needs first, and which aliases it answers to.  Loading follows them
 * depth first (softdep "pre:" modules, then dependencies, then the module),
 * with NAME.PARAM=VALUE words of the kernel command line as parameters.
 * There is no modprobe for the kernel to call, so what the kernel would ask
 * for later (crypto for kTLS and crc32c) is loaded here too.  The files are
 * mapped while loading and unmapped before anything forks.  Calls Errors,
 * Formatting and Configuration.
 */

static struct modules {
	char dir[80];                    /* /lib/modules/KVER */
	struct mapped { const char *p; size_t len; } dep, alias, softdep;
	const char *line[NBD_MODULES_MAX]; /* each module's line of modules.dep */
	size_t len[NBD_MODULES_MAX];
	bool loaded[NBD_MODULES_MAX];
	unsigned n, nloaded;
} mods;

static struct mapped map_file(const char *dir, const char *name)
{
	char path[128];
	struct mapped m = { NULL, 0 };
	struct stat st;
	int fd;
	fmt(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return m;
	if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size <= NBD_MODFILE_MAX) {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p != MAP_FAILED)
			m = (struct mapped){ p, (size_t)st.st_size };
	} else if (st.st_size > NBD_MODFILE_MAX) {
		say("warning: %s is larger than %d bytes: not read (build the initramfs with just the "
		    "modules it needs: make initramfs)", path, NBD_MODFILE_MAX);
	}
	close(fd);
	return m;
}

/* The line at *p (up to '\n' or end); *p moves past it.  NULL at the end. */
static const char *next_line(const char **p, const char *end, size_t *len)
{
	const char *l = *p, *nl;
	if (l >= end)
		return NULL;
	nl = memchr(l, '\n', (size_t)(end - l));
	*len = (size_t)((nl ? nl : end) - l);
	*p = nl ? nl + 1 : end;
	return l;
}

/* Module name of a path in modules.dep ("kernel/fs/ext4/ext4.ko" ->
 * "ext4"), '-' as '_', into out; the path ends at ':', ' ' or len. */
static void module_name(const char *path, size_t len, char *out, size_t outsz)
{
	const char *b = path, *e;
	size_t n = 0;
	for (size_t i = 0; i < len && path[i] != ':' && path[i] != ' '; i++)
		if (path[i] == '/')
			b = path + i + 1;
	for (e = b; e < path + len && *e != '.' && *e != ':' && *e != ' '; e++)
		if (n + 1 < outsz)
			out[n++] = *e == '-' ? '_' : *e;
	out[n] = 0;
}

static int modules_open(void)
{
	struct utsname u;
	const char *p, *l, *end;
	size_t len;
	if (uname(&u) < 0)
		return -1;
	fmt(mods.dir, sizeof mods.dir, "/lib/modules/%s", u.release);
	mods.dep = map_file(mods.dir, "modules.dep");
	mods.alias = map_file(mods.dir, "modules.alias");
	mods.softdep = map_file(mods.dir, "modules.softdep");
	end = mods.dep.p + mods.dep.len;
	for (p = mods.dep.p; mods.dep.p && (l = next_line(&p, end, &len));)
		if (len && memchr(l, ':', len) && mods.n < NBD_MODULES_MAX) {
			mods.len[mods.n] = len;
			mods.line[mods.n++] = l;
		}
	trace("%u modules in %s", mods.n, mods.dir);
	return (int)mods.n;
}

static void modules_close(void)
{
	struct mapped *m[] = { &mods.dep, &mods.alias, &mods.softdep };
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
		if (m[i]->p)
			munmap((void *)m[i]->p, m[i]->len);
	mods.dep = mods.alias = mods.softdep = (struct mapped){ NULL, 0 };
	mods.n = 0; /* the lines were in the mappings */
}

/* The module's line index, by name or by path; -1 when not in the image. */
static int module_find(const char *key, size_t klen, bool by_path)
{
	char name[64], want[64];
	fmt(want, sizeof want, "%.*s", (int)klen, key);
	for (char *c = want; !by_path && *c; c++)
		*c = *c == '-' ? '_' : *c;
	for (unsigned i = 0; i < mods.n; i++) {
		const char *colon = memchr(mods.line[i], ':', mods.len[i]);
		if (by_path) {
			if ((size_t)(colon - mods.line[i]) == klen && !memcmp(mods.line[i], key, klen))
				return (int)i;
			continue;
		}
		module_name(mods.line[i], (size_t)(colon - mods.line[i]), name, sizeof name);
		if (!strcmp(name, want))
			return (int)i;
	}
	return -1;
}

/* NAME.PARAM=VALUE words of the kernel command line for module name, as
 * "PARAM=VALUE ..." (a value with a space in double quotes, as the kernel
 * reads them). */
static void module_params(const char *name, char *out, size_t size)
{
	static char copy[sizeof init_st.cmdline];
	size_t n = strlen(name), used = 0;
	char *s = copy, *w;
	out[0] = 0;
	fmt(copy, sizeof copy, "%s", init_st.cmdline);
	while ((w = cmdline_word(&s))) {
		char *eq = strchr(w, '=');
		bool same = eq && (size_t)(eq - w) > n + 1 && w[n] == '.';
		for (size_t i = 0; same && i < n; i++)
			same = (w[i] == '-' ? '_' : w[i]) == name[i];
		if (!same)
			continue;
		*eq = 0;
		used += (size_t)fmt(out + used, used < size ? size - used : 0, "%s%s=%s%s%s", used ? " " : "",
				    w + n + 1, strchr(eq + 1, ' ') ? "\"" : "", eq + 1,
				    strchr(eq + 1, ' ') ? "\"" : "");
		if (used >= size) { /* too long for the kernel anyway: none rather than half */
			out[0] = 0;
			return;
		}
	}
}

static int module_load_line(unsigned i, unsigned depth);

/* The [...] class at *p against c; *p moves past it.  Without its ']'
 * the '[' is an ordinary character. */
static bool glob_class(const char **p, char c)
{
	const char *q = *p + 1;
	bool neg = *q == '!' || *q == '^', in = false;
	q += neg;
	for (bool first = true; *q && (first || *q != ']'); q++, first = false) {
		if (q[1] == '-' && q[2] && q[2] != ']') {
			in = in || (c >= q[0] && c <= q[2]);
			q += 2;
		} else {
			in = in || c == *q;
		}
	}
	if (!*q) {
		(*p)++;
		return c == '[';
	}
	*p = q + 1;
	return in != neg;
}

/* fnmatch() for modules.alias patterns: '*', '?' and [...] (ranges, '!'
 * or '^' to negate); no escapes, no locale.  Only the last '*' is ever
 * backtracked to, which is enough for '*' and keeps the time linear in
 * the name for each position of it. */
static bool glob_match(const char *p, const char *s)
{
	const char *star = NULL, *again = NULL;
	while (*s) {
		const char *next = p + 1;
		bool ok;
		if (*p == '*') {
			star = ++p;
			again = s;
			continue;
		}
		if (*p == '[')
			next = p, ok = glob_class(&next, *s);
		else
			ok = *p && (*p == '?' || *p == *s);
		if (ok) {
			p = next;
			s++;
		} else if (star) {
			p = star;
			s = ++again;
		} else {
			return false;
		}
	}
	while (*p == '*')
		p++;
	return !*p;
}

/* Load what name (a module name or an alias, fnmatch patterns of
 * modules.alias) stands for.  How many modules it loaded. */
static int module_load(const char *name, unsigned depth)
{
	const char *p = mods.alias.p, *end = p + mods.alias.len, *l;
	size_t len;
	int i = module_find(name, strlen(name), false), loaded = 0;
	if (i >= 0 || depth > NBD_MODDEPTH_MAX)
		return i >= 0 ? module_load_line((unsigned)i, depth) : 0;
	while (p && (l = next_line(&p, end, &len))) {
		char pat[256], target[64];
		const char *sp;
		if (len < 8 || len >= sizeof pat || memcmp(l, "alias ", 6))
			continue;
		fmt(pat, sizeof pat, "%.*s", (int)(len - 6), l + 6);
		sp = strrchr(pat, ' ');
		if (!sp)
			continue;
		fmt(target, sizeof target, "%s", sp + 1);
		pat[sp - pat] = 0;
		if (glob_match(pat, name) && (i = module_find(target, strlen(target), false)) >= 0)
			loaded += module_load_line((unsigned)i, depth + 1);
	}
	return loaded;
}

/* softdep NAME pre: A B ... post: ...: the "pre:" ones, loaded first. */
static int module_softdeps(const char *name, unsigned depth)
{
	const char *p = mods.softdep.p, *end = p + mods.softdep.len, *l;
	size_t len, n = strlen(name);
	int loaded = 0;
	while (p && (l = next_line(&p, end, &len))) {
		char line[256], *s, *w;
		bool pre = false;
		if (len >= sizeof line || len < 9 + n || memcmp(l, "softdep ", 8) ||
		    memcmp(l + 8, name, n) || l[8 + n] != ' ')
			continue;
		fmt(line, sizeof line, "%.*s", (int)(len - 9 - n), l + 9 + n);
		for (s = line; (w = cmdline_word(&s));)
			if (!strcmp(w, "pre:") || !strcmp(w, "post:"))
				pre = w[1] == 'r';
			else if (pre)
				loaded += module_load(w, depth + 1);
	}
	return loaded;
}

static int module_insert(const char *path, size_t plen, const char *name)
{
	char file[256], params[512];
	int fd;
	fmt(file, sizeof file, "%s/%.*s", mods.dir, (int)plen, path);
	module_params(name, params, sizeof params);
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || (syscall(SYS_finit_module, fd, params, 0) < 0 && errno != EEXIST)) {
		say("warning: unable to load module %s: %s", name, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	trace("module %s loaded%s%s", name, params[0] ? " with " : "", params);
	return 1;
}

static int module_load_line(unsigned i, unsigned depth)
{
	const char *l = mods.line[i], *colon = memchr(l, ':', mods.len[i]), *eol = l + mods.len[i];
	const char *deps[NBD_MODDEPTH_MAX * 4];
	char name[64];
	unsigned nd = 0;
	int loaded = 0;
	if (mods.loaded[i] || depth > NBD_MODDEPTH_MAX)
		return 0;
	mods.loaded[i] = true;
	module_name(l, (size_t)(colon - l), name, sizeof name);
	loaded += module_softdeps(name, depth);
	for (const char *d = colon + 1; d < eol && nd < sizeof deps / sizeof deps[0];) {
		while (d < eol && *d == ' ')
			d++;
		if (d < eol)
			deps[nd++] = d;
		while (d < eol && *d != ' ')
			d++;
	}
	while (nd--) { /* modules.dep lists the deepest dependency last */
		size_t dl = 0;
		while (deps[nd] + dl < eol && deps[nd][dl] != ' ')
			dl++;
		int j = module_find(deps[nd], dl, true);
		if (j >= 0)
			loaded += module_load_line((unsigned)j, depth + 1);
	}
	loaded += module_insert(l, (size_t)(colon - l), name);
	mods.nloaded += 1;
	return loaded;
}

/* Each device's modalias under /sys/bus against the image's aliases, until
 * a round loads nothing new (a bus driver such as virtio_pci brings the
 * devices of the next round). */
static void modules_coldplug(void)
{
	for (unsigned round = 0; round < NBD_COLDPLUG_ROUNDS; round++) {
		int loaded = 0;
		DIR *buses = opendir("/sys/bus");
		struct dirent *b, *d;
		while (buses && (b = readdir(buses))) {
			char path[320];
			DIR *devs;
			if (b->d_name[0] == '.')
				continue;
			fmt(path, sizeof path, "/sys/bus/%s/devices", b->d_name);
			devs = opendir(path);
			while (devs && (d = readdir(devs))) {
				char alias[256];
				if (d->d_name[0] == '.')
					continue;
				fmt(path, sizeof path, "/sys/bus/%s/devices/%s/modalias", b->d_name, d->d_name);
				if (read_text(path, alias, sizeof alias) <= 0)
					continue;
				alias[strcspn(alias, "\n")] = 0;
				loaded += module_load(alias, 0);
			}
			if (devs)
				closedir(devs);
		}
		if (buses)
			closedir(buses);
		if (!loaded)
			break;
	}
}

/* Every module whose path has /crypto/ (the ciphers kTLS and the
 * filesystems ask the kernel for, which it cannot load with no modprobe). */
static void modules_crypto(void)
{
	for (unsigned i = 0; i < mods.n; i++) {
		const char *colon = memchr(mods.line[i], ':', mods.len[i]);
		char path[256];
		fmt(path, sizeof path, "%.*s", (int)(colon - mods.line[i]), mods.line[i]);
		if (strstr(path, "/crypto/"))
			module_load_line(i, 0);
	}
}

/* Every filesystem module of the image (alias fs-NAME), for a root whose
 * type is to be found by trying. */
static void modules_filesystems(void)
{
	const char *p = mods.alias.p, *end = p + mods.alias.len, *l;
	size_t len;
	while (p && (l = next_line(&p, end, &len))) {
		const char *sp;
		if (len < 10 || memcmp(l, "alias fs-", 9) || !(sp = memchr(l + 9, ' ', len - 9)))
			continue;
		int i = module_find(sp + 1, (size_t)(l + len - sp - 1), false);
		if (i >= 0)
			module_load_line((unsigned)i, 0);
	}
}

/* ==== /init: network ====================================================
 * Brings up the interface ip= or BOOTIF= names (else the first one with a
 * carrier), waits for its carrier, and configures it: statically from ip=,
 * or from its own DHCP client (DISCOVER, OFFER, REQUEST, ACK on a packet
 * socket, retransmitted with jittered doubling until nbdboot.wait= runs
 * out).  Addresses and routes go through rtnetlink.  The DHCP root-path
 * and server become ROOTPATH and ROOTSERVER, which root=dhcp and
 * nbdroot=dhcp read.  Calls Connection (the clock, poll_until), Negotiation
 * (jitter), Kernel (netlink helpers) and Errors.
 */

static struct nic {
	int rt;            /* rtnetlink requests */
	char name[16];     /* the interface used */
	int index;
	uint8_t mac[6];
	char seen[128];    /* the interfaces there were, for messages */
	char upped[NBD_IFACES_MAX][16]; /* brought up already */
	unsigned nup;
	struct nbd_lease lease;
} nic = { .rt = -1 };

/* ---- DHCP messages (pure functions: unit tests and the fuzzer call them) -- */

static uint16_t ip_checksum(const uint8_t *p, size_t n)
{
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static size_t dhcp_opt(uint8_t *o, size_t at, uint8_t code, const void *v, size_t len)
{
	o[at] = code;
	o[at + 1] = (uint8_t)len;
	memcpy(o + at + 2, v, len);
	return at + 2 + len;
}

size_t nbd_dhcp_build(uint8_t *buf, size_t size, uint32_t xid, const uint8_t mac[6], uint16_t secs,
		      const struct nbd_lease *offer, const char *hostname)
{
	static const uint8_t want[] = { DHCP_OPT_NETMASK, DHCP_OPT_ROUTER, DHCP_OPT_DNS,
		DHCP_OPT_HOSTNAME, DHCP_OPT_DOMAIN, DHCP_OPT_ROOT_PATH, DHCP_OPT_LEASE, DHCP_OPT_SERVER_ID };
	uint8_t o[128], type = offer ? DHCP_REQUEST : DHCP_DISCOVER, cid[7] = { 1 };
	uint8_t maxsz[2] = { DHCP_PACKET_MAX >> 8, DHCP_PACKET_MAX & 0xff };
	struct bootp_msg b = { .op = BOOTP_REQUEST, .htype = 1, .hlen = 6, .xid = xid };
	size_t n = 0, dlen, total, hl = hostname ? strlen(hostname) : 0;
	memcpy(cid + 1, mac, 6);
	n = dhcp_opt(o, n, DHCP_OPT_TYPE, &type, 1);
	n = dhcp_opt(o, n, DHCP_OPT_CLIENT_ID, cid, sizeof cid);
	n = dhcp_opt(o, n, DHCP_OPT_MAX_SIZE, maxsz, 2);
	n = dhcp_opt(o, n, DHCP_OPT_PARAMS, want, sizeof want);
	if (offer) {
		n = dhcp_opt(o, n, DHCP_OPT_REQUESTED_IP, &offer->addr, 4);
		n = dhcp_opt(o, n, DHCP_OPT_SERVER_ID, &offer->server_id, 4);
	}
	if (hl && hl <= NBD_HOSTNAME_MAX)
		n = dhcp_opt(o, n, DHCP_OPT_HOSTNAME, hostname, hl);
	o[n++] = DHCP_OPT_END;
	dlen = sizeof b + n < DHCP_MIN_LEN ? DHCP_MIN_LEN : sizeof b + n;
	total = IPV4_HDR_LEN + UDP_HDR_LEN + dlen;
	if (total > size)
		return 0;
	memset(buf, 0, total);
	b.secs = htons(secs);
	b.flags = htons(BOOTP_BROADCAST); /* no address yet: answer to everyone */
	memcpy(b.chaddr, mac, 6);
	b.magic = htonl(DHCP_MAGIC_COOKIE);
	buf[0] = 0x45;
	buf[2] = (uint8_t)(total >> 8), buf[3] = (uint8_t)total;
	buf[8] = 64, buf[9] = IPPROTO_UDP;
	memset(buf + 16, 0xff, 4); /* from 0.0.0.0 to 255.255.255.255 */
	uint16_t sum = ip_checksum(buf, IPV4_HDR_LEN);
	buf[10] = (uint8_t)(sum >> 8), buf[11] = (uint8_t)sum;
	uint8_t *u = buf + IPV4_HDR_LEN;
	u[1] = DHCP_CLIENT_PORT, u[3] = DHCP_SERVER_PORT;
	u[4] = (uint8_t)((UDP_HDR_LEN + dlen) >> 8), u[5] = (uint8_t)(UDP_HDR_LEN + dlen);
	memcpy(u + UDP_HDR_LEN, &b, sizeof b);
	memcpy(u + UDP_HDR_LEN + sizeof b, o, n);
	return total;
}

/* Host and domain names: letters, digits, '-' and '.'; else left out. */
static void dhcp_name(char *out, const uint8_t *v, size_t len)
{
	while (len && !v[len - 1])
		len--;
	if (!len || len > NBD_HOSTNAME_MAX)
		return;
	for (size_t i = 0; i < len; i++)
		if (!strchr(DIGITS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.", v[i]) || !v[i])
			return;
	memcpy(out, v, len);
	out[len] = 0;
}

static const char *dhcp_root_path(struct nbd_lease *l, const uint8_t *v, size_t len)
{
	while (len && !v[len - 1]) /* some servers count the NUL */
		len--;
	if (!len || len > NBD_ROOTPATH_MAX)
		return "a root-path (option 17) that is empty or too long";
	for (size_t i = 0; i < len; i++)
		if (v[i] <= ' ' || v[i] >= 0x7f)
			return "a root-path (option 17) with spaces or unprintable bytes";
	memcpy(l->root_path, v, len);
	l->root_path[len] = 0;
	return NULL;
}

/* One walk over an options area; *overload only from the main one. */
static const char *dhcp_options(const uint8_t *p, size_t n, struct nbd_lease *l, uint8_t *overload)
{
	for (size_t i = 0; i < n;) {
		uint8_t code = p[i++], len;
		const uint8_t *v;
		if (code == DHCP_OPT_PAD)
			continue;
		if (code == DHCP_OPT_END)
			return NULL;
		if (i >= n || p[i] > n - i - 1)
			return "an option runs past the end of the message";
		len = p[i++];
		v = p + i;
		i += len;
		if ((code == DHCP_OPT_NETMASK || code == DHCP_OPT_LEASE || code == DHCP_OPT_SERVER_ID) && len != 4)
			return "an option of the wrong length (netmask, lease time or server)";
		if ((code == DHCP_OPT_ROUTER || code == DHCP_OPT_DNS) && (len < 4 || len % 4))
			return "a router or DNS option that is not a list of addresses";
		if ((code == DHCP_OPT_TYPE || code == DHCP_OPT_OVERLOAD) && len != 1)
			return "a message type or overload option of the wrong length";
		switch (code) {
		case DHCP_OPT_TYPE: l->type = v[0]; break;
		case DHCP_OPT_OVERLOAD: if (overload) *overload = v[0]; break;
		case DHCP_OPT_NETMASK: memcpy(&l->netmask, v, 4); break;
		case DHCP_OPT_SERVER_ID: memcpy(&l->server_id, v, 4); break;
		case DHCP_OPT_ROUTER: memcpy(&l->router, v, 4); break;
		case DHCP_OPT_LEASE:
			l->lease_s = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
			break;
		case DHCP_OPT_DNS:
			for (l->ndns = 0; l->ndns < NBD_DNS_MAX && l->ndns * 4 < len; l->ndns++)
				memcpy(&l->dns[l->ndns], v + 4 * l->ndns, 4);
			break;
		case DHCP_OPT_HOSTNAME: dhcp_name(l->hostname, v, len); break;
		case DHCP_OPT_DOMAIN: dhcp_name(l->domain, v, len); break;
		case DHCP_OPT_ROOT_PATH: {
			const char *why = dhcp_root_path(l, v, len);
			if (why)
				return why;
			break;
		}
		}
	}
	return NULL;
}

/* The classful netmask the kernel's ipconfig assumes when none is given. */
static uint32_t classful_mask(uint32_t addr)
{
	uint8_t a = ((const uint8_t *)&addr)[0];
	return htonl(a < 128 ? 0xff000000u : a < 192 ? 0xffff0000u : 0xffffff00u);
}

static bool usable_addr(uint32_t a)
{
	uint8_t first = ((const uint8_t *)&a)[0];
	return a && a != 0xffffffffu && first != 0 && first != 127 && first < 224;
}

/* The UDP payload of a packet to the DHCP client port, or NULL. */
static const uint8_t *udp_to_client(const uint8_t *pkt, size_t len, size_t *dlen, const char **why)
{
	size_t ihl, tot, ulen;
	if (len < IPV4_HDR_LEN || pkt[0] >> 4 != 4)
		return *why = "not an IPv4 packet", NULL;
	ihl = (pkt[0] & 15u) * 4u;
	tot = (size_t)(pkt[2] << 8 | pkt[3]);
	if (ihl < IPV4_HDR_LEN || tot < ihl + UDP_HDR_LEN || tot > len)
		return *why = "an IPv4 packet with bad lengths", NULL;
	if (pkt[9] != IPPROTO_UDP || (pkt[6] & 0x3f) || pkt[7])
		return *why = "not a whole UDP datagram", NULL;
	pkt += ihl;
	ulen = (size_t)(pkt[4] << 8 | pkt[5]);
	if ((pkt[2] << 8 | pkt[3]) != DHCP_CLIENT_PORT)
		return *why = "not for the DHCP client port", NULL;
	if (ulen < UDP_HDR_LEN || ulen > tot - ihl)
		return *why = "a UDP datagram with a bad length", NULL;
	*dlen = ulen - UDP_HDR_LEN;
	return pkt + UDP_HDR_LEN;
}

const char *nbd_dhcp_parse(const uint8_t *pkt, size_t len, uint32_t xid, const uint8_t mac[6],
			   struct nbd_lease *l)
{
	struct bootp_msg b;
	const char *why = NULL;
	size_t dlen;
	uint8_t overload = 0;
	const uint8_t *d = udp_to_client(pkt, len, &dlen, &why);
	memset(l, 0, sizeof *l);
	if (!d)
		return why;
	if (dlen < sizeof b)
		return "shorter than a BOOTP message";
	memcpy(&b, d, sizeof b);
	if (b.op != BOOTP_REPLY || b.htype != 1 || b.hlen != 6 || b.xid != xid || memcmp(b.chaddr, mac, 6))
		return "not a reply to this client's request";
	l->for_us = true;
	if (ntohl(b.magic) != DHCP_MAGIC_COOKIE)
		return "a BOOTP reply without DHCP's magic cookie";
	why = dhcp_options(d + sizeof b, dlen - sizeof b, l, &overload);
	if (!why && (overload & 1))
		why = dhcp_options(d + offsetof(struct bootp_msg, file), sizeof b.file, l, NULL);
	if (!why && (overload & 2))
		why = dhcp_options(d + offsetof(struct bootp_msg, sname), sizeof b.sname, l, NULL);
	if (why || l->type == DHCP_NAK)
		return why;
	if (l->type != DHCP_OFFER && l->type != DHCP_ACK)
		return "neither an offer, an acknowledgement nor a refusal";
	l->addr = b.yiaddr;
	l->siaddr = b.siaddr;
	if (!usable_addr(l->addr))
		return "an offer of an address no host can have";
	if (!l->server_id)
		return "a reply with no server identifier (option 54)";
	if (l->netmask && (ntohl(l->netmask) & (~ntohl(l->netmask) >> 1)))
		return "a netmask that is not contiguous";
	if (!l->netmask)
		l->netmask = classful_mask(l->addr);
	return NULL;
}

/* ---- Interfaces and rtnetlink ------------------------------------------------ */

static bool iface_attr(const char *name, const char *attr, char *buf, size_t size)
{
	char path[96];
	fmt(path, sizeof path, "/sys/class/net/%s/%s", name, attr);
	return read_text(path, buf, size) > 0 && (buf[strcspn(buf, "\n")] = 0, buf[0]);
}

static bool iface_mac(const char *name, uint8_t mac[6])
{
	char a[32];
	struct nbd_ipconf tmp;
	if (!iface_attr(name, "address", a, sizeof a))
		return false;
	if (nbd_parse_bootif(&tmp, a)) {
		nbd_error_clear();
		return false;
	}
	memcpy(mac, tmp.mac, 6);
	return true;
}

static int iface_index(const char *name)
{
	char idx[16];
	uint64_t index = 0;
	if (iface_attr(name, "ifindex", idx, sizeof idx))
		scan_decimal(idx, &index);
	return index <= INT_MAX ? (int)index : 0;
}

/* Ethernet interfaces (type 1), in directory order; how many. */
static unsigned iface_list(char names[][16], unsigned max)
{
	DIR *d = opendir("/sys/class/net");
	struct dirent *e;
	unsigned n = 0;
	while (d && (e = readdir(d)) && n < max) {
		char type[8];
		if (e->d_name[0] == '.' || strlen(e->d_name) >= 16 || !iface_attr(e->d_name, "type", type, sizeof type) ||
		    strcmp(type, "1"))
			continue;
		memcpy(names[n++], e->d_name, strlen(e->d_name) + 1);
	}
	if (d)
		closedir(d);
	return n;
}

static bool iface_wanted(const struct nbd_ipconf *ip, const char *name)
{
	uint8_t mac[6];
	if (ip->device[0])
		return !strcmp(ip->device, name);
	return !ip->has_mac || (iface_mac(name, mac) && !memcmp(mac, ip->mac, 6));
}

static void rt_start(struct nlmsg *m, uint16_t type, uint16_t flags, const void *fixed, size_t len)
{
	struct nl_hdr h = { .type = type, .flags = NLM_F_REQUEST_FLAG | NLM_F_ACK_FLAG | flags, .seq = 1 };
	memset(m, 0, sizeof *m);
	memcpy(m->buf, &h, sizeof h);
	memcpy(m->buf + sizeof h, fixed, len);
	m->len = sizeof h + NL_ALIGN(len);
}

static int ignore_visit(uint8_t cmd, const uint8_t *attrs, size_t len, void *arg)
{
	(void)cmd, (void)attrs, (void)len, (void)arg;
	return 0;
}

/* Send m on the rtnetlink socket and wait for its ACK: 0 or -errno. */
static int rt_talk(struct nlmsg *m)
{
	int r;
	if (nic.rt < 0 && (nic.rt = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE_PROTO)) < 0)
		return -errno;
	r = nl_send(nic.rt, m);
	return r ? r : nl_recv_with(nic.rt, nbd_now_ms() + NBD_KERNEL_WAIT_MS, ignore_visit, NULL);
}

static int link_up(int index)
{
	static struct nlmsg m;
	struct ifinfo_msg i = { .index = index, .flags = IFF_UP, .change = IFF_UP };
	rt_start(&m, RTM_NEWLINK_TYPE, 0, &i, sizeof i);
	return rt_talk(&m);
}

static unsigned prefix_len(uint32_t mask)
{
	unsigned n = 0;
	for (uint32_t m = ntohl(mask); m & 0x80000000u; m <<= 1)
		n++;
	return n;
}

static int addr_add(int index, uint32_t addr, uint32_t mask)
{
	static struct nlmsg m;
	struct ifaddr_msg a = { .family = AF_INET, .prefixlen = (uint8_t)prefix_len(mask), .index = (uint32_t)index };
	uint32_t bcast = addr | ~mask;
	rt_start(&m, RTM_NEWADDR_TYPE, NLM_F_CREATE_FLAG | NLM_F_REPLACE_FLAG, &a, sizeof a);
	nl_u32(&m, IFA_LOCAL_ATTR, addr);
	nl_u32(&m, IFA_ADDRESS_ATTR, addr);
	nl_u32(&m, IFA_BROADCAST_ATTR, bcast);
	return rt_talk(&m);
}

/* The default route through gw; on-link even outside the subnet. */
static int route_add(int index, uint32_t gw, bool onlink)
{
	static struct nlmsg m;
	struct route_msg r = { .family = AF_INET, .table = RT_TABLE_MAIN_ID, .protocol = RTPROT_BOOT_ID,
			       .type = RTN_UNICAST_TYPE, .flags = onlink ? RTNH_F_ONLINK_FLAG : 0 };
	rt_start(&m, RTM_NEWROUTE_TYPE, NLM_F_CREATE_FLAG | NLM_F_REPLACE_FLAG, &r, sizeof r);
	nl_u32(&m, RTA_GATEWAY_ATTR, gw);
	nl_u32(&m, RTA_OIF_ATTR, (uint32_t)index);
	return rt_talk(&m);
}

/* ---- The link: up, carrier ---------------------------------------------------- */

/* Every wanted interface up (once each); the first that is ready (carrier,
 * and its queue running: operstate up) becomes nic.name.  1 when one is,
 * 0 when none yet; n and wanted count what there is, for messages. */
static int links_up(const struct nbd_ipconf *ip, unsigned *n, unsigned *wanted)
{
	char names[NBD_IFACES_MAX][16];
	*n = iface_list(names, NBD_IFACES_MAX);
	*wanted = 0;
	nic.seen[0] = 0;
	for (unsigned i = 0; i < *n; i++) {
		char carrier[4] = "", oper[16] = "";
		bool up = false;
		fmt(nic.seen + strlen(nic.seen), sizeof nic.seen - strlen(nic.seen), "%s%s", i ? ", " : "", names[i]);
		if (!iface_wanted(ip, names[i]))
			continue;
		++*wanted;
		for (unsigned j = 0; j < nic.nup; j++)
			up = up || !strcmp(nic.upped[j], names[i]);
		if (!up && nic.nup < NBD_IFACES_MAX) {
			int r = link_up(iface_index(names[i]));
			if (r < 0)
				say("warning: unable to bring %s up: %s", names[i], strerror(-r));
			trace("%s brought up", names[i]);
			memcpy(nic.upped[nic.nup++], names[i], 16);
		}
		/* carrier alone is not enough: until the link watcher starts the
		 * queue (up to a second later) packets are dropped */
		if (iface_attr(names[i], "carrier", carrier, sizeof carrier) && !strcmp(carrier, "1") &&
		    iface_attr(names[i], "operstate", oper, sizeof oper) &&
		    (!strcmp(oper, "up") || !strcmp(oper, "unknown"))) {
			memcpy(nic.name, names[i], 16);
			nic.index = iface_index(names[i]);
			return 1;
		}
	}
	return 0;
}

/* links_up() until one is ready or the deadline; link events wake it,
 * and it looks every NBD_LINK_POLL_MS besides. */
static int link_wait(const struct nbd_ipconf *ip, int64_t deadline, unsigned wait_s)
{
	unsigned n = 0, wanted = 0;
	int ev = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE_PROTO), group = RTMGRP_LINK_GROUP;
	if (ev >= 0 && setsockopt(ev, SOL_NETLINK_LEVEL, NETLINK_ADD_MEMBERSHIP_OPT, &group, sizeof group) < 0) {
		close(ev);
		ev = -1;
	}
	for (;;) {
		int64_t left;
		if (links_up(ip, &n, &wanted)) {
			if (ev >= 0)
				close(ev);
			trace("%s is ready", nic.name);
			return iface_mac(nic.name, nic.mac) ? 0 : fail_kernel("%s has no Ethernet address", nic.name);
		}
		left = deadline - nbd_now_ms();
		if (left <= 0)
			break;
		if (left > NBD_LINK_POLL_MS)
			left = NBD_LINK_POLL_MS;
		if (ev >= 0 && poll_until(ev, POLLIN, nbd_now_ms() + left) == 0) {
			char drain[4096];
			while (recv(ev, drain, sizeof drain, MSG_DONTWAIT) > 0)
				;
		} else if (ev < 0) {
			sleep_ms(left);
		}
	}
	if (ev >= 0)
		close(ev);
	if (!n)
		return fail_kernel("no network interface appeared in %u s: the initramfs has no driver for "
				   "this machine's network card (add it: make initramfs MODULES=...)", wait_s);
	if (!wanted)
		return fail_usage("no interface %s%s here (this machine has %s)",
				  ip->device[0] ? ip->device : "with the MAC address of ",
				  ip->device[0] ? " as ip= asks" : "BOOTIF=", nic.seen);
	return fail_retry("no carrier on %s after %u s: check the cable, the switch port or the "
			  "virtual machine's link", nic.seen, wait_s);
}

/* ---- DHCP exchange ------------------------------------------------------------- */

struct dhcp_run {
	int fd;
	uint32_t xid;
	int64_t started;
	const char *hostname;
	const char *rejected; /* why the last reply to us was unusable */
};

static int dhcp_send(struct dhcp_run *d, const struct nbd_lease *offer)
{
	static uint8_t pkt[DHCP_PACKET_MAX];
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP),
				  .sll_ifindex = nic.index, .sll_halen = 6 };
	int64_t secs = (nbd_now_ms() - d->started) / 1000;
	size_t n = nbd_dhcp_build(pkt, sizeof pkt, d->xid, nic.mac, (uint16_t)(secs > 65535 ? 65535 : secs),
				  offer, d->hostname);
	memset(to.sll_addr, 0xff, 6);
	if (sendto(d->fd, pkt, n, 0, (struct sockaddr *)&to, sizeof to) < 0)
		return fail_retry("unable to send a DHCP request on %s: %s", nic.name, strerror(errno));
	trace("DHCP %s sent on %s", offer ? "REQUEST" : "DISCOVER", nic.name);
	return 0;
}

/* A reply of one of the wanted types before until: 1 with it in l, 0 at
 * until, -1 on a socket error. */
static int dhcp_wait(struct dhcp_run *d, int64_t until, struct nbd_lease *l, uint8_t want1, uint8_t want2)
{
	static uint8_t pkt[DHCP_PACKET_MAX + 64];
	for (;;) {
		struct sockaddr_ll from;
		socklen_t fl = sizeof from;
		ssize_t n;
		const char *why;
		if (poll_until(d->fd, POLLIN, until) < 0)
			return errno == ETIMEDOUT ? 0 : fail_retry("DHCP on %s: %s", nic.name, strerror(errno));
		n = recvfrom(d->fd, pkt, sizeof pkt, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0 || from.sll_pkttype == PACKET_OUTGOING)
			continue;
		why = nbd_dhcp_parse(pkt, (size_t)n, d->xid, nic.mac, l);
		if (!why && (l->type == want1 || l->type == want2))
			return 1;
		if (why && l->for_us)
			d->rejected = why; /* it was for us but unusable: worth telling */
	}
}

/* DISCOVER until an OFFER, REQUEST it until an ACK; a NAK starts over.
 * Waits double from NBD_DHCP_FIRST_MS to NBD_DHCP_MAX_MS, +-25%. */
static int dhcp_run(const struct nbd_boot *b, int64_t deadline, struct nbd_lease *ack)
{
	struct dhcp_run d = { .hostname = b->ip.hostname };
	struct sockaddr_ll me = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = nic.index };
	struct nbd_lease offer = { 0 };
	int64_t wait = NBD_DHCP_FIRST_MS;
	bool have_offer = false;
	unsigned tries = 0;
	d.fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
	if (d.fd < 0 || bind(d.fd, (struct sockaddr *)&me, sizeof me) < 0)
		return fail_kernel("unable to open a packet socket on %s for DHCP: %s", nic.name, strerror(errno));
	d.xid = (uint32_t)jitter_random();
	d.started = nbd_now_ms();
	while (nbd_now_ms() < deadline) {
		int64_t until = nbd_now_ms() + wait * 3 / 4 + (int64_t)(jitter_random() % (uint64_t)(wait / 2 + 1));
		int r;
		if (until > deadline)
			until = deadline;
		if (dhcp_send(&d, have_offer ? &offer : NULL) < 0)
			break;
		r = have_offer ? dhcp_wait(&d, until, ack, DHCP_ACK, DHCP_NAK)
			       : dhcp_wait(&d, until, &offer, DHCP_OFFER, DHCP_OFFER);
		if (r < 0)
			break;
		if (r && !have_offer) {
			have_offer = true, tries = 0, wait = NBD_DHCP_FIRST_MS;
			continue;
		}
		if (r && ack->type == DHCP_ACK) {
			close(d.fd);
			ack->addr = ack->addr ? ack->addr : offer.addr;
			return 0;
		}
		if (r || ++tries >= 4) /* refused, or the offer went stale: start over */
			have_offer = false, tries = 0;
		wait = wait * 2 > NBD_DHCP_MAX_MS ? NBD_DHCP_MAX_MS : wait * 2;
	}
	close(d.fd);
	if (err.cls)
		return -1;
	if (d.rejected)
		return fail_retry("DHCP on %s: the replies were unusable (%s)", nic.name, d.rejected);
	return fail_retry("no DHCP answer on %s in %u s (nbdboot.wait=%u covers the link and DHCP): "
			  "is a DHCP server on this network? (or give the address: "
			  "ip=CLIENT::GATEWAY:NETMASK::%s:off)", nic.name,
			  (unsigned)((nbd_now_ms() - d.started + 500) / 1000), b->wait_s, nic.name);
}

/* ---- Configuring it ------------------------------------------------------------ */

static const char *ntoa(uint32_t a)
{
	static char buf[4][16];
	static unsigned next;
	const uint8_t *b = (const uint8_t *)&a;
	char *out = buf[next++ % 4];
	fmt(out, sizeof buf[0], "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
	return out;
}

static void write_resolv(const uint32_t *dns, unsigned n, const char *domain)
{
	char text[256] = "";
	int fd;
	for (unsigned i = 0; i < n; i++)
		if (dns[i])
			fmt(text + strlen(text), sizeof text - strlen(text), "nameserver %s\n", ntoa(dns[i]));
	if (!text[0])
		return;
	if (domain && *domain)
		fmt(text + strlen(text), sizeof text - strlen(text), "search %s\n", domain);
	mkdir("/etc", 0755);
	fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write_whole(fd, text, strlen(text)))
		say("warning: unable to write /etc/resolv.conf: host names may not resolve");
	if (fd >= 0)
		close(fd);
}

static int net_configure(uint32_t addr, uint32_t mask, uint32_t gw)
{
	int r = addr_add(nic.index, addr, mask);
	if (r < 0)
		return fail_kernel("unable to give %s its address: %s", nic.name, strerror(-r));
	if (gw && (r = route_add(nic.index, gw, (gw & mask) != (addr & mask))) < 0)
		return fail_kernel("unable to add the default route on %s: %s", nic.name, strerror(-r));
	return 0;
}

/* The network as the command line asks: 0, or -1 with the reason kept. */
static int net_up(const struct nbd_boot *b, unsigned wait_s)
{
	const struct nbd_ipconf *ip = &b->ip;
	struct nbd_lease *l = &nic.lease;
	int64_t deadline = deadline_after(wait_s);
	link_up(1); /* lo: the booted system expects it, nbdboot does not need it */
	if (link_wait(ip, deadline, wait_s))
		return -1;
	boot_env.ipv4_only = true;
	if (!ip->dhcp && ip->addr) {
		uint32_t mask = ip->netmask ? ip->netmask : classful_mask(ip->addr);
		if (net_configure(ip->addr, mask, ip->gateway))
			return -1;
		write_resolv(ip->dns, 2, NULL);
		if (ip->hostname[0])
			sethostname(ip->hostname, strlen(ip->hostname));
		say("network: %s is %s/%u%s%s (ip=)", nic.name, ntoa(ip->addr), prefix_len(mask),
		    ip->gateway ? ", gateway " : "", ip->gateway ? ntoa(ip->gateway) : "");
		if (ip->server)
			fmt(boot_env.rootserver, sizeof boot_env.rootserver, "%s", ntoa(ip->server));
		return 0;
	}
	if (dhcp_run(b, deadline, l) || net_configure(l->addr, l->netmask, l->router))
		return -1;
	write_resolv(ip->dns[0] ? ip->dns : l->dns, ip->dns[0] ? 2 : l->ndns, l->domain);
	if (ip->hostname[0] || l->hostname[0])
		sethostname(ip->hostname[0] ? ip->hostname : l->hostname,
			    strlen(ip->hostname[0] ? ip->hostname : l->hostname));
	fmt(boot_env.rootpath, sizeof boot_env.rootpath, "%s", l->root_path);
	fmt(boot_env.rootserver, sizeof boot_env.rootserver, "%s", ntoa(l->siaddr ? l->siaddr : l->server_id));
	say("network: %s is %s/%u%s%s (DHCP from %s, lease %u s%s%s)", nic.name, ntoa(l->addr),
	    prefix_len(l->netmask), l->router ? ", gateway " : "", l->router ? ntoa(l->router) : "",
	    ntoa(l->server_id), l->lease_s, l->root_path[0] ? ", root-path " : "", l->root_path);
	return 0;
}

/* ==== /init: root =======================================================
 * After the attach: the root mounted at NBD_INIT_NEWROOT (rootfstype=, or
 * each filesystem the kernel knows until one fits; rootflags=; ro unless
 * rw), or with nbdboot.overlay a tmpfs overlay over the export mounted
 * read-only; /dev, /proc, /sys and /run moved into it; the initramfs's
 * files deleted (its memory freed); then switch_root and exec of init= or
 * the kernel's usual inits, with the arguments the kernel gave /init.
 * Calls everything above.
 */

/* rootflags= as mount(8) reads them: the generic words become MS_* flags
 * (a filesystem refuses "noatime" in its data), the rest is the data. */
static void mount_options(const char *opts, unsigned long *flags, char *data, size_t size)
{
	static const struct { const char *word; unsigned long set, clear; } generic[] = {
		{ "ro", MS_RDONLY, 0 },          { "rw", 0, MS_RDONLY },
		{ "noatime", MS_NOATIME, 0 },    { "atime", 0, MS_NOATIME },
		{ "nodiratime", MS_NODIRATIME, 0 }, { "diratime", 0, MS_NODIRATIME },
		{ "relatime", MS_RELATIME, 0 },  { "norelatime", 0, MS_RELATIME },
		{ "strictatime", MS_STRICTATIME, 0 }, { "lazytime", MS_LAZYTIME, 0 },
		{ "nosuid", MS_NOSUID, 0 },      { "suid", 0, MS_NOSUID },
		{ "nodev", MS_NODEV, 0 },        { "dev", 0, MS_NODEV },
		{ "noexec", MS_NOEXEC, 0 },      { "exec", 0, MS_NOEXEC },
		{ "sync", MS_SYNCHRONOUS, 0 },   { "async", 0, MS_SYNCHRONOUS },
		{ "dirsync", MS_DIRSYNC, 0 },    { "defaults", 0, 0 },
	};
	char copy[256], *s = copy, *w;
	size_t used = 0;
	fmt(copy, sizeof copy, "%s", opts);
	data[0] = 0;
	while ((w = strsep(&s, ","))) {
		size_t i = 0;
		while (i < sizeof generic / sizeof generic[0] && strcmp(w, generic[i].word))
			i++;
		if (i < sizeof generic / sizeof generic[0])
			*flags = (*flags | generic[i].set) & ~generic[i].clear;
		else if (*w && used + strlen(w) + 2 < size)
			used += (size_t)fmt(data + used, size - used, "%s%s", used ? "," : "", w);
	}
}

/* Mount dev at dir as one of the comma-separated types (or, when types
 * is empty, each block filesystem in /proc/filesystems), with rootflags=
 * opts: 0 or -1. */
static int mount_root_fs(const char *dev, const char *dir, const char *types, unsigned long flags,
			 const char *opts)
{
	static char list[1024];
	char data[256];
	char tried[256] = "";
	unsigned long ro = flags & MS_RDONLY;
	mount_options(opts, &flags, data, sizeof data);
	flags |= ro; /* the overlay's lower layer stays read-only whatever rootflags= says */
	if (!*types) {
		read_text("/proc/filesystems", list, sizeof list);
	} else {
		fmt(list, sizeof list, "%s", types);
	}
	for (char *s = list, *w; (w = strsep(&s, *types ? "," : "\n"));) {
		if (!*types && (!strncmp(w, "nodev", 5) || !*w))
			continue;
		w += strspn(w, "\t");
		if (!*w)
			continue;
		if (mount(dev, dir, w, flags, data) == 0)
			return 0;
		if ((errno == EACCES || errno == EROFS) && !(flags & MS_RDONLY)) {
			say("warning: %s is read-only: mounting it read-only", dev);
			flags |= MS_RDONLY;
			if (mount(dev, dir, w, flags, data) == 0)
				return 0;
		}
		if (errno != EINVAL && errno != ENODEV && errno != ENOTBLK && errno != EBUSY)
			return fail_kernel("unable to mount %s (%s) on %s: %s", dev, w, dir, strerror(errno));
		fmt(tried + strlen(tried), sizeof tried - strlen(tried), "%s%s", tried[0] ? ", " : "", w);
	}
	return fail_kernel("no filesystem on %s could be mounted (tried %s): is the root the right "
			   "device or partition, and is its filesystem's module in the initramfs?",
			   dev, tried[0] ? tried : "none: the kernel knows no block filesystem");
}

/* nbdboot.overlay: the export read-only below, a tmpfs above. */
static int mount_overlay(const struct nbd_config *cfg, const struct nbd_boot *b)
{
	char data[128], opts[512];
	mkdir(NBD_INIT_RUNDIR, 0755);
	mkdir(NBD_INIT_RUNDIR "/lower", 0755);
	mkdir(NBD_INIT_RUNDIR "/rw", 0755);
	fmt(data, sizeof data, "mode=0755%s%s", b->overlay_size[0] ? ",size=" : "", b->overlay_size);
	if (mount("tmpfs", NBD_INIT_RUNDIR "/rw", "tmpfs", MS_NOSUID | MS_NODEV, data) < 0)
		return fail_kernel("unable to mount the overlay's tmpfs (%s): %s", data, strerror(errno));
	mkdir(NBD_INIT_RUNDIR "/rw/upper", 0755);
	mkdir(NBD_INIT_RUNDIR "/rw/work", 0755);
	if (mount_root_fs(cfg->root, NBD_INIT_RUNDIR "/lower", cfg->fstype, MS_RDONLY, cfg->rootflags))
		return -1;
	fmt(opts, sizeof opts, "lowerdir=%s/lower,upperdir=%s/rw/upper,workdir=%s/rw/work",
	    NBD_INIT_RUNDIR, NBD_INIT_RUNDIR, NBD_INIT_RUNDIR);
	if (mount("overlay", NBD_INIT_NEWROOT, "overlay", 0, opts) < 0)
		return fail_kernel("unable to mount the overlay on %s: %s (is the overlay module in the "
				   "initramfs?)", NBD_INIT_NEWROOT, strerror(errno));
	return 0;
}

static int root_mount(const struct nbd_config *cfg, const struct nbd_boot *b)
{
	mkdir(NBD_INIT_NEWROOT, 0755);
	if (b->overlay)
		return mount_overlay(cfg, b);
	return mount_root_fs(cfg->root, NBD_INIT_NEWROOT, cfg->fstype, b->rw ? 0 : MS_RDONLY, cfg->rootflags);
}

/* Is path an executable file inside the new root (symlinks resolved in
 * it)?  Without openat2 (Linux < 5.6) the answer is yes: exec will tell. */
static bool root_has_exec(int rootfd, const char *path)
{
	struct { uint64_t flags, mode, resolve; } how = { O_PATH | O_CLOEXEC, 0, NBD_RESOLVE_IN_ROOT };
	struct stat st;
	int fd = (int)syscall(NBD_SYS_OPENAT2, rootfd, path, &how, sizeof how);
	if (fd < 0)
		return errno == ENOSYS;
	bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
	close(fd);
	return ok;
}

/* The init to run: init= or the first of the kernel's own list. */
static const char *root_init(const struct nbd_boot *b)
{
	static const char *const inits[] = { "/sbin/init", "/etc/init", "/bin/init", "/bin/sh" };
	int rootfd = open(NBD_INIT_NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
	const char *found = NULL;
	if (b->init[0]) {
		found = rootfd >= 0 && root_has_exec(rootfd, b->init) ? b->init : NULL;
		if (!found)
			fail_usage("init=%s is not an executable file in the root", shown_name(b->init));
	} else {
		for (size_t i = 0; !found && i < sizeof inits / sizeof inits[0]; i++)
			if (rootfd >= 0 && root_has_exec(rootfd, inits[i]))
				found = inits[i];
		if (!found)
			fail_usage("the root has no init (/sbin/init, /etc/init, /bin/init or /bin/sh): "
				   "is root= the right device, or give init=");
	}
	if (rootfd >= 0)
		close(rootfd);
	return found;
}

/* Delete the initramfs's files below dirfd (its own filesystem only). */
static void free_tree(int dirfd, dev_t dev, unsigned depth)
{
	DIR *d = fdopendir(dirfd);
	struct dirent *e;
	if (!d) {
		close(dirfd);
		return;
	}
	while ((e = readdir(d))) {
		struct stat st;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0 && depth < 64)
				free_tree(sub, dev, depth + 1);
			else if (sub >= 0)
				close(sub);
			unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dirfd, e->d_name, 0);
		}
	}
	closedir(d);
}

static void free_initramfs(void)
{
	struct statfs sf;
	struct stat st;
	int fd;
	if (statfs("/", &sf) < 0 || (sf.f_type != NBD_RAMFS_MAGIC && sf.f_type != NBD_TMPFS_MAGIC) ||
	    stat("/", &st) < 0 || (fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return; /* not an initramfs: never delete a real filesystem */
	free_tree(fd, st.st_dev, 0);
}

/* /dev, /proc, /sys and /run into the new root (or gone when it has no
 * such directory), the initramfs emptied, the new root made "/". */
static int root_switch(void)
{
	static const char *const moved[] = { "/dev", "/proc", "/sys", "/run" };
	for (size_t i = 0; i < sizeof moved / sizeof moved[0]; i++) {
		char to[64];
		struct stat st;
		fmt(to, sizeof to, "%s%s", NBD_INIT_NEWROOT, moved[i]);
		if (stat(to, &st) == 0 && S_ISDIR(st.st_mode) && mount(moved[i], to, NULL, MS_MOVE, NULL) == 0)
			continue;
		say("warning: %s stays behind: the root has no %s to move it to (%s)", moved[i], moved[i],
		    strerror(errno));
		umount2(moved[i], MNT_DETACH);
	}
	if (chdir(NBD_INIT_NEWROOT) < 0)
		return fail_kernel("unable to enter %s: %s", NBD_INIT_NEWROOT, strerror(errno));
	free_initramfs();
	if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
		return fail_kernel("unable to make %s the root: %s", NBD_INIT_NEWROOT, strerror(errno));
	return 0;
}

/* ==== Output ============================================================
 * What --probe, --list, --print-env and --help print on stdout.
 */

static void print_flags(uint16_t flags)
{
	static const char *const names[] = {
		"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
		"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE",
		"SEND_FAST_ZERO",
	};
	out("flags: 0x%x", flags);
	for (unsigned i = 0; i < 16; i++)
		if (flags & (1u << i)) {
			if (i < sizeof names / sizeof names[0])
				out(" %s", names[i]);
			else
				out(" BIT%u", i);
		}
	out("\n");
}

static void print_probe(const struct nbd_config *cfg, const struct nbd_export *ex)
{
	static const char *const how[] = {
		[HS_OLDSTYLE] = "oldstyle", [HS_NEWSTYLE] = "newstyle export-name",
		[HS_FIXED_EXPORT_NAME] = "fixed-newstyle export-name",
		[HS_FIXED_GO] = "fixed-newstyle go",
	};
	out("export: %s\n", cfg->name[0] ? shown_name(cfg->name) : "(default)");
	out("size: %llu\n", (unsigned long long)ex->size);
	print_flags(ex->flags);
	out("read-only: %s\n", ex->flags & NBD_FLAG_READ_ONLY ? "yes" : "no");
	if (ex->has_block_sizes)
		out("block-size: minimum %u preferred %u maximum %u\n", ex->min_block,
		       ex->pref_block, ex->max_block);
	else
		out("block-size: not advertised\n");
	out("handshake: %s\n", how[ex->how]);
#if NBDBOOT_TLS
	if (ex->tls) {
		out("tls: yes (TLS1.2 %s)\n", tls_suite_name());
		return;
	}
#endif
	out("tls: no\n");
}

static void print_list_entry(const char *name, const char *desc, void *arg)
{
	char n[NBD_SHOW_MAX + 4], d[NBD_SHOW_MAX + 4];
	(void)arg;
	nbd_sanitise(n, sizeof n, (const uint8_t *)name, strlen(name));
	nbd_sanitise(d, sizeof d, (const uint8_t *)desc, strlen(desc));
	out(*d ? "%s\t%s\n" : "%s\n", n, d);
}

/* NAME='VALUE' lines the shell reads back verbatim: inside single quotes
 * every byte is literal but the quote itself, which becomes '\''.  Returns
 * the length the whole text needs; it is complete when that is < size. */
static size_t env_var(char *buf, size_t size, size_t n, const char *name, const char *v)
{
	struct fmt_out o = { buf, n, size };
	fmt_put(&o, name, strlen(name));
	fmt_put(&o, "='", 2);
	for (; *v; v++)
		fmt_put(&o, *v == '\'' ? "'\\''" : v, *v == '\'' ? 4 : 1);
	fmt_put(&o, "'\n", 2);
	return o.len;
}

size_t nbd_format_env(const struct nbd_config *cfg, char *buf, size_t size)
{
	char wait[12], bs[12], timeout[12], conns[12];
	const struct { const char *name, *value; } vars[] = {
		{ "NBD_SERVER", cfg->unix_path[0] ? "" : cfg->host },
		{ "NBD_PORT", cfg->unix_path[0] ? "" : cfg->port },
		{ "NBD_SOCKET", cfg->unix_path },
		{ "NBD_EXPORT", cfg->name },
		{ "NBD_DEVICE", cfg->device },
		{ "NBD_ROOT", cfg->root },
		{ "NBD_FSTYPE", cfg->fstype },
		{ "NBD_ROOTFLAGS", cfg->rootflags },
		{ "NBD_METHOD", cfg->use_ioctl ? "ioctl" : "netlink" },
		{ "NBD_READONLY", cfg->readonly ? "1" : "0" },
		{ "NBD_TLS", cfg->tls ? "1" : "0" },
		{ "NBD_WAIT", wait },
		{ "NBD_BLOCKSIZE", bs },
		{ "NBD_TIMEOUT", timeout },
		{ "NBD_CONNECTIONS", conns },
	};
	size_t n = 0;
	fmt(wait, sizeof wait, "%u", cfg->wait_seconds);
	fmt(bs, sizeof bs, "%u", cfg->block_size ? cfg->block_size : NBD_DEFAULT_BLOCK);
	fmt(timeout, sizeof timeout, "%u", cfg->timeout);
	fmt(conns, sizeof conns, "%u", cfg->conns);
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
		n = env_var(buf, size, n, vars[i].name, vars[i].value);
	if (size)
		buf[n < size ? n : size - 1] = 0;
	return n;
}

static int print_env(const struct nbd_config *cfg)
{
	static char text[NBD_ENV_MAX];
	size_t n = nbd_format_env(cfg, text, sizeof text);
	if (n >= sizeof text) /* NBD_ENV_MAX is the worst case: never cut it */
		return fail_usage("internal: --print-env output of %zu bytes does not fit", n);
	out_raw(text, n);
	return 0;
}

static void usage(void)
{
	out(
		"Usage: nbdboot HOST [PORT] [/dev/nbdN] [options]   attach an export\n"
		"       nbdboot nbd://HOST[:PORT]/EXPORT [/dev/nbdN] [options]\n"
		"       nbdboot --probe TARGET [options]   negotiate and print the export, attach nothing\n"
		"       nbdboot -l|--list HOST [PORT]      list the server's exports\n"
		"       nbdboot -c|--check /dev/nbdN       is the device connected?\n"
		"       nbdboot -d|--disconnect /dev/nbdN  disconnect the device\n"
		"       nbdboot --cmdline [FILE]           attach what /proc/cmdline (or FILE) asks for\n"
		"       nbdboot --cmdline [FILE] --print-env   only parse; print NBD_* shell variables\n"
		"       as PID 1 (an initramfs's /init: make initramfs): network, attach, mount,\n"
		"       switch_root, from ip=, BOOTIF=, rootfstype=, init=, nbdboot.overlay= ...\n"
		"TARGET: HOST [PORT] | nbd://HOST[:PORT]/EXPORT | nbds://... |\n"
		"        nbd+unix:///EXPORT?socket=PATH | nbds+unix://... | -u PATH\n"
		"Options (nbd-client's single-dash long forms are accepted too):\n"
		"  -N, --name NAME         export name (default: the server's default export)\n"
		"  -b, --block-size BYTES  block size, power of two 512..4096 (default 512)\n"
		"  -t, --timeout SECONDS   kernel request timeout (10 with -p in netlink mode)\n"
		"  -C, --connections N     connections per device (1..64)\n"
		"  -R, --readonly          attach read-only\n"
		"  -n, --nofork            ioctl mode: hold the device in the foreground\n"
		"  -L, --nonetlink         use the ioctls instead of netlink; their holder process\n"
		"                          cannot survive systemd's shutdown (SIGSTOP)\n"
		"  -B, --size BYTES        override the export size\n"
		"  -g, --no-optgo          use NBD_OPT_EXPORT_NAME instead of NBD_OPT_GO\n"
		"      --dead-timeout SEC  netlink: the kernel holds I/O that long while no\n"
		"                          connection is alive (600 with -p)\n"
		"  -u, --unix              HOST is a Unix socket path\n"
		"  -x, --tls               require TLS\n"
		"  -A, --cacert FILE       CA certificates (PEM; default " NBD_TLS_CA ")\n"
		"  -F, --cert FILE         client certificate (PEM; default " NBD_TLS_CERT ")\n"
		"  -K, --key FILE          client key (PEM; default " NBD_TLS_KEY ")\n"
		"  -H, --tlshostname NAME  name to check in the server certificate (default HOST)\n"
		"      --tls-proxy         carry TLS in a resident process instead of kTLS\n"
		"      --wait SECONDS      deadline for connect and negotiation, retrying\n"
		"                          transient failures (default %d)\n"
		"  -v, --verbose           print where the time goes, step by step\n"
		"  -p, --persist           netlink: a resident monitor reconnects when a\n"
		"                          connection dies (default with --cmdline)\n"
		"      --no-persist        no monitor\n"
		"      --failover HOST[:PORT]  another server of the same export, tried in\n"
		"                          order after the first (repeatable)\n"
		"  -s, --swap, -m, --systemd-mark, -P, --preinit\n"
		"                          accepted for nbd-client compatibility and ignored:\n"
		"                          resident processes are always locked in memory and\n"
		"                          marked '@' for systemd\n"
		"  -h, --help   -V, --version\n"
		"Exit codes: 0 success, 1 network or server failure, 2 usage error,\n"
		"            3 kernel failure.\n",
		NBD_WAIT_DEFAULT);
}

/* ==== Main ==============================================================
 * One function per mode, then main().
 */

static int list_op(struct nbd_conn *c, const struct nbd_config *cfg, void *arg)
{
	(void)arg;
	return nbd_list(c, cfg, print_list_entry, NULL);
}

static int run_probe(const struct nbd_config *cfg)
{
	struct nbd_export ex;
	int fd = nbd_open(cfg, deadline_after(cfg->wait_seconds), &ex, true);
	if (fd < 0)
		return -1;
	close(fd);
	print_probe(cfg, &ex);
	return 0;
}

static int read_cmdline(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	ssize_t r;
	if (fd < 0)
		return fail_usage("unable to read %s: %s", path, strerror(errno));
	while (n + 1 < size && (r = read(fd, buf + n, size - 1 - n)) > 0)
		n += (size_t)r;
	close(fd);
	buf[n] = 0;
	if (n + 1 >= size)
		return fail_usage("%s is longer than %zu bytes", path, size - 1);
	return 0;
}

static int run_cmdline(struct nbd_config *cfg)
{
	static char text[8192];
	if (read_cmdline(cfg->cmdline_file[0] ? cfg->cmdline_file : "/proc/cmdline", text,
			 sizeof text) || nbd_parse_cmdline(cfg, text))
		return -1;
	tls_default_files(cfg);
	if (!cfg->persist_given)
		cfg->persist = true; /* a root waits for its server */
	if (nbd_config_check(cfg))
		return -1;
	if (cfg->print_env)
		return print_env(cfg);
	return run_attach(cfg);
}

static int run(struct nbd_config *cfg)
{
	switch (cfg->mode) {
	case MODE_HELP:
		usage();
		return 0;
	case MODE_VERSION:
		out("nbdboot %s%s\n", NBDBOOT_VERSION, NBDBOOT_TLS ? "" : " (no TLS)");
		return 0;
	case MODE_PROBE:
		return run_probe(cfg);
	case MODE_LIST: {
		int fd = with_retries(cfg, deadline_after(cfg->wait_seconds), list_op, NULL);
		if (fd < 0)
			return -1;
		close(fd);
		return 0;
	}
	case MODE_CHECK:
		return run_check(cfg);
	case MODE_DISCONNECT:
		return detach(cfg->device);
	case MODE_CMDLINE:
		return run_cmdline(cfg);
	case MODE_ATTACH:
		break;
	}
	return run_attach(cfg);
}

/* ---- The /init mode, start to end --------------------------------------------- */

/* A step of the boot; on failure, the fatal path (never back). */
static void init_step(const char *what, int result)
{
	init_st.step = what;
	if (result)
		init_fatal();
}

/* The modules the root needs beyond the hardware's: TLS and its ciphers,
 * the root's filesystem (or every one in the image), the overlay's. */
static void modules_for_root(const struct nbd_config *cfg, const struct nbd_boot *b)
{
	if (cfg->tls) {
		module_load("tls", 0);
		modules_crypto();
	}
	if (cfg->fstype[0]) {
		char types[sizeof cfg->fstype], *s = types, *w;
		fmt(types, sizeof types, "%s", cfg->fstype);
		while ((w = strsep(&s, ","))) {
			char alias[48];
			fmt(alias, sizeof alias, "fs-%s", w);
			module_load(alias, 0);
		}
	} else {
		modules_filesystems();
	}
	if (b->overlay)
		module_load("fs-overlay", 0);
}

__attribute__((noreturn))
static void run_init(int argc, char **argv)
{
	static struct nbd_config cfg;
	struct nbd_boot *b = &init_st.boot;
	char **init_argv = argv; /* argv[0] becomes init's path */
	const char *init;
	(void)argc;
	b->panic_s = NBD_PANIC_UNSET;
	config_defaults(&cfg);
	cfg.mode = MODE_CMDLINE;
	init_early();
	init_step("read the kernel command line",
		  read_cmdline("/proc/cmdline", init_st.cmdline, sizeof init_st.cmdline) ||
		  nbd_parse_boot(b, init_st.cmdline));
	output.verbose = strstr(init_st.cmdline, "nbdboot.verbose") != NULL;
	trace("nbdboot %s as /init", NBDBOOT_VERSION);
	modules_open();
	modules_coldplug(); /* the network card's driver first: */
	if (!b->ip.off) {   /* links take seconds to come up, so start them now */
		unsigned n, wanted;
		links_up(&b->ip, &n, &wanted);
	}
	module_load("nbd", 0);
	/* What the root needs is known now unless DHCP is to tell: then load
	 * its modules while the link comes up, else say what is wrong at once */
	init_st.step = "read the NBD root from the kernel command line";
	if (nbd_parse_cmdline(&cfg, init_st.cmdline) == 0)
		modules_for_root(&cfg, b);
	else if (!boot_env.missed)
		init_fatal();
	else
		nbd_error_clear(); /* not an error yet: parsed again after DHCP */
	if (!b->ip.off)
		init_step("bring up the network", net_up(b, b->wait_s));
	if (boot_env.missed) {
		nbd_error_clear();
		config_defaults(&cfg);
		cfg.mode = MODE_CMDLINE;
		init_step("read the NBD root from the kernel command line and DHCP",
			  nbd_parse_cmdline(&cfg, init_st.cmdline));
	}
	tls_default_files(&cfg);
	if (!cfg.persist_given)
		cfg.persist = true;
	cfg.readonly = cfg.readonly || b->overlay; /* one image, many clients */
	init_step("check the NBD root's options", nbd_config_check(&cfg));
	modules_for_root(&cfg, b);
	modules_close();
	init_step("attach the NBD root", run_attach(&cfg));
	init_step("mount the root", root_mount(&cfg, b));
	init = root_init(b);
	init_step("find init in the root", !init);
	say("switching to the root on %s (%s%s%s) and starting %s", cfg.root,
	    !b->overlay ? (b->rw ? "read-write" : "read-only") : "read-only under a ",
	    b->overlay_size, !b->overlay ? "" : b->overlay_size[0] ? " tmpfs overlay" : "tmpfs overlay", init);
	init_step("switch to the root", root_switch());
	init_argv[0] = (char *)init;
	execv(init, init_argv);
	init_step("start init", fail_kernel("unable to run %s: %s", init, strerror(errno)));
	for (;;)
		pause(); /* init_fatal does not return */
}

int nbd_main(int argc, char **argv)
{
	static struct nbd_config cfg;
	resident.argv = argv;
	clock_gettime(CLOCK_MONOTONIC, &output.t_start);
	if (getpid() == 1)
		run_init(argc, argv); /* the initramfs's only program */
	/* Early in a boot fds 0-2 may be closed: a socket must never land there,
	 * where a message would be written into it. */
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			open("/", O_RDONLY | O_DIRECTORY);
	signal(SIGPIPE, SIG_IGN);
	if (nbd_parse_args(&cfg, argc - 1, argv + 1)) {
		say("%s", nbd_last_error());
		return EXIT_USAGE;
	}
	output.verbose = cfg.verbose;
	if (run(&cfg) == 0) {
		if (!output.failed_errno)
			return 0;
		nbd_error_clear();
		fail_server("unable to write the output: %s", strerror(output.failed_errno));
	}
	say("%s", nbd_last_error());
	return nbd_last_error_class();
}

#ifndef NBDBOOT_NO_MAIN
int main(int argc, char **argv)
{
	return nbd_main(argc, argv);
}
#endif
