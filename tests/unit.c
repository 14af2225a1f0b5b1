/*
 * Unit tests for nbdboot: the command-line and URI parsers, and every
 * negative negotiation path against scripted servers over a socketpair.
 * Scripted servers are only for misbehaviour real servers will not produce;
 * tests/interop.sh talks to real ones.
 *
 * Includes nbdboot.c itself so static helpers are reachable.
 */
#define NBDBOOT_NO_MAIN
#include "../nbdboot.c"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <sys/resource.h>

static int passed, failed;
static FILE *results;

static void report(const char *name, bool ok, const char *why)
{
	if (ok) {
		passed++;
		printf("ok   unit: %s\n", name);
	} else {
		failed++;
		printf("FAIL unit: %s: %s\n", name, why);
	}
	if (results)
		fprintf(results, "%s unit: %s\n", ok ? "pass" : "fail", name);
	nbd_error_clear(); /* errors are sticky: the next case starts clean */
}

/* ---- Parsers ---------------------------------------------------------------- */

struct args_case {
	const char *name;
	const char *argv[16];
	int rc;             /* 0 or -1 */
	const char *host, *port, *export_name, *device, *unix_path;
	const char *errpart; /* substring of the error when rc == -1 */
};

static const struct args_case args_cases[] = {
	{ "host only", { "srv" }, 0, "srv", "10809", "", "", "" },
	{ "host and port", { "srv", "10900" }, 0, "srv", "10900", "", "", "" },
	{ "host port device", { "srv", "10900", "/dev/nbd1" }, 0, "srv", "10900", "", "/dev/nbd1" },
	{ "device before port", { "srv", "nbd3", "10900" }, 0, "srv", "10900", "", "/dev/nbd3" },
	{ "debian initramfs form",
	  { "10.0.0.1", "-N", "root", "10809", "/dev/nbd0", "-swap", "-persist", "-systemd-mark",
	    "-b", "512" },
	  0, "10.0.0.1", "10809", "root", "/dev/nbd0" },
	{ "single-dash long name", { "-name", "x", "srv" }, 0, "srv", "10809", "x" },
	{ "double-dash name=", { "--name=a b", "srv" }, 0, "srv", "10809", "a b" },
	{ "attached short value", { "srv", "-b512", "-Nexp" }, 0, "srv", "10809", "exp" },
	{ "short cluster", { "-sp", "srv" }, 0, "srv", "10809" },
	{ "ipv6 positional", { "::1", "10900" }, 0, "::1", "10900" },
	{ "bracketed ipv6 positional", { "[fe80::1]" }, 0, "fe80::1", "10809" },
	{ "uri", { "nbd://h:1234/exp" }, 0, "h", "1234", "exp" },
	{ "uri ipv6", { "nbd://[::1]:1234/e" }, 0, "::1", "1234", "e" },
	{ "uri ipv6 default port", { "nbd://[2001:db8::5]/" }, 0, "2001:db8::5", "10809", "" },
	{ "uri percent-decoding", { "nbd://h/a%20b%2Fc" }, 0, "h", "10809", "a b/c" },
	{ "uri no path", { "nbd://h" }, 0, "h", "10809", "" },
	{ "uri with device", { "nbd://h/x", "/dev/nbd2" }, 0, "h", "10809", "x", "/dev/nbd2" },
	{ "nbd+unix uri", { "nbd+unix:///e?socket=/run/s" }, 0, "", "10809", "e", "", "/run/s" },
	{ "-u socket path", { "-u", "/tmp/sock" }, 0, "", "10809", "", "", "/tmp/sock" },
	{ "probe mode", { "--probe", "srv" }, 0, "srv", "10809" },
	{ "disconnect takes device", { "-d", "/dev/nbd4" }, 0, "", "10809", "", "/dev/nbd4" },
	{ "unknown option", { "srv", "--frobnicate" }, -1, .errpart = "unknown option" },
	{ "unknown short option", { "srv", "-Q" }, -1, .errpart = "unknown option '-Q'" },
	{ "bad port", { "srv", "abc" }, -1, .errpart = "unexpected argument 'abc'" },
	{ "port out of range", { "srv", "70000" }, -1, .errpart = "out of range" },
	{ "block size not power of two", { "srv", "-b", "3" }, -1, .errpart = "block size 3" },
	{ "block size above kernel", { "srv", "-b", "8192" }, -1, .errpart = "block size 8192" },
	{ "missing option value", { "srv", "-N" }, -1, .errpart = "needs a value" },
	{ "no server", { "-N", "x" }, -1, .errpart = "no server given" },
	{ "conflicting modes", { "-l", "-d", "/dev/nbd0" }, -1, .errpart = "conflicting" },
	{ "check needs a device", { "-c", "sda" }, -1, .errpart = "not an nbd device" },
	{ "uri bad port", { "nbd://h:x1/" }, -1, .errpart = "not a number" },
	{ "uri unterminated v6", { "nbd://[::1/e" }, -1, .errpart = "unterminated" },
	{ "unix uri without socket", { "nbd+unix:///e" }, -1, .errpart = "socket=PATH" },
	{ "unix uri with host", { "nbd+unix://h/e?socket=/s" }, -1, .errpart = "empty host" },
	{ "unknown scheme", { "http://h/" }, -1, .errpart = "not an NBD URI" },
	{ "unsupported uri query", { "nbds://h/e?tls-certificates=/etc/pki" }, -1,
	  .errpart = "query parameter 'tls-certificates=/etc/pki' is not supported" },
	{ "bad percent escape", { "nbd://h/a%zz" }, -1, .errpart = "escape" },
	{ "negative wait", { "srv", "--wait", "-1" }, -1, .errpart = "not a number" },
	{ "flag given a value", { "srv", "--swap=1" }, -1, .errpart = "takes no value" },
	{ "host with space", { "a b" }, -1, .errpart = "invalid characters" },
	{ "sdp refused", { "srv", "-sdp" }, -1, .errpart = "SDP" },
	{ "too many cmdline files", { "--cmdline", "a", "b" }, -1, .errpart = "at most one" },
	{ "failover bad port", { "srv", "--failover", "h2:x" }, -1, .errpart = "failover server: port" },
	{ "failover bad brackets", { "srv", "--failover", "[::1]x" }, -1, .errpart = "[IPv6][:PORT]" },
	{ "failover with a unix socket", { "-u", "/s", "--failover", "h2" }, -1,
	  .errpart = "not a Unix socket" },
	{ "failover too many", { "s", "--failover=a", "--failover=b", "--failover=c", "--failover=d",
	  "--failover=e", "--failover=f", "--failover=g", "--failover=h" }, -1, .errpart = "at most 7" },
};

static void test_args(void)
{
	for (size_t i = 0; i < sizeof args_cases / sizeof args_cases[0]; i++) {
		const struct args_case *t = &args_cases[i];
		static struct nbd_config cfg;
		char why[1024] = "", name[128];
		int argc = 0;
		while (t->argv[argc])
			argc++;
		nbd_error_clear();
		int rc = nbd_parse_args(&cfg, argc, (char **)t->argv);
		snprintf(name, sizeof name, "args: %s", t->name);
		if (rc != t->rc)
			snprintf(why, sizeof why, "rc %d, error '%s'", rc, nbd_last_error());
		else if (rc && !strstr(nbd_last_error(), t->errpart))
			snprintf(why, sizeof why, "error '%s' lacks '%s'", nbd_last_error(), t->errpart);
		else if (!rc && (strcmp(cfg.host, t->host ? t->host : "") ||
				 strcmp(cfg.port, t->port ? t->port : "10809") ||
				 strcmp(cfg.name, t->export_name ? t->export_name : "") ||
				 strcmp(cfg.device, t->device ? t->device : "") ||
				 strcmp(cfg.unix_path, t->unix_path ? t->unix_path : "")))
			snprintf(why, sizeof why, "got host '%s' port '%s' name '%s' dev '%s' unix '%s'",
				 cfg.host, cfg.port, cfg.name, cfg.device, cfg.unix_path);
		report(name, !why[0], why);
	}
}

/* --failover: HOST[:PORT], [IPv6][:PORT], a bare IPv6 address; persist */
static void test_failover_args(void)
{
	static struct nbd_config cfg;
	const char *v[] = { "h1", "--failover", "h2:10900", "--failover", "[fd00::2]:10901",
			    "--failover=fd00::3", "-failover", "h4", "-p" };
	const char *w[] = { "h1" }, *x[] = { "h1", "-p", "--no-persist" };
	const struct nbd_config *c;
	nbd_error_clear();
	bool ok = nbd_parse_args(&cfg, 9, (char **)v) == 0 && cfg.nfailover == 4 &&
		  !strcmp(cfg.failover[0].host, "h2") && !strcmp(cfg.failover[0].port, "10900") &&
		  !strcmp(cfg.failover[1].host, "fd00::2") && !strcmp(cfg.failover[1].port, "10901") &&
		  !strcmp(cfg.failover[2].host, "fd00::3") && !cfg.failover[2].port[0] &&
		  !strcmp(cfg.failover[3].host, "h4") && !cfg.failover[3].port[0] && cfg.persist;
	report("args: --failover forms, in order", ok, nbd_last_error());
	c = server_config(&cfg, 3);
	report("args: a failover server without a port takes the first one's",
	       !strcmp(c->host, "fd00::3") && !strcmp(c->port, "10809") && !strcmp(cfg.host, "h1"),
	       c->host);
	report("args: server 0 is the first server", server_config(&cfg, 0) == &cfg, "wrong");
	report("args: persist is off unless -p (outside a boot)",
	       nbd_parse_args(&cfg, 1, (char **)w) == 0 && !cfg.persist && !cfg.persist_given &&
		       request_timeout(&cfg) == 0 && dead_timeout(&cfg) == 0, "wrong");
	report("args: --no-persist after -p",
	       nbd_parse_args(&cfg, 3, (char **)x) == 0 && !cfg.persist && cfg.persist_given, "wrong");
	cfg.persist = true;
	report("args: persist gives the reconnect timeouts",
	       request_timeout(&cfg) == NBD_PERSIST_TIMEOUT &&
		       dead_timeout(&cfg) == NBD_PERSIST_DEAD_TIMEOUT, "wrong");
	cfg.timeout = 3;
	cfg.dead_timeout = 7;
	report("args: given timeouts win over persist's",
	       request_timeout(&cfg) == 3 && dead_timeout(&cfg) == 7, "wrong");
	nbd_error_clear();
	ok = nbd_parse_cmdline(&cfg, "root=nbd:10.0.0.1:10809:ext4:rw:failover=10.0.0.2,"
				     "failover=[fd00::9]:1234 nbdboot.failover=10.0.0.3 nbdboot.nopersist") == 0 &&
	     cfg.nfailover == 3 && !strcmp(cfg.failover[0].host, "10.0.0.2") &&
	     !strcmp(cfg.failover[1].host, "fd00::9") && !strcmp(cfg.failover[1].port, "1234") &&
	     !strcmp(cfg.failover[2].host, "10.0.0.3") && cfg.persist_given && !cfg.persist;
	report("cmdline: failover= in NBDOPTS and nbdboot.failover=, nbdboot.nopersist", ok,
	       nbd_last_error());
}

static void test_args_flags(void)
{
	static struct nbd_config cfg;
	char *v[] = { "srv", "-N", "n", "10809", "/dev/nbd0", "-swap", "-persist",
		      "-systemd-mark", "-b", "1024", "-t", "30", "-C", "4", "-R", "-L", "-g",
		      "--wait", "7" };
	bool ok = nbd_parse_args(&cfg, (int)(sizeof v / sizeof v[0]), v) == 0 && cfg.block_size == 1024 && cfg.timeout == 30 &&
		  cfg.conns == 4 && cfg.readonly && cfg.use_ioctl && cfg.no_optgo &&
		  cfg.wait_seconds == 7 && cfg.mode == MODE_ATTACH;
	report("args: every nbd-client flag lands in the config", ok, nbd_last_error());
	char *w[] = { "srv" };
	ok = nbd_parse_args(&cfg, 1, w) == 0 && cfg.wait_seconds == NBD_WAIT_DEFAULT &&
	     cfg.block_size == 0 && cfg.conns == 1;
	report("args: defaults", ok, nbd_last_error());
}

static void test_uri_tls(void)
{
	static struct nbd_config cfg;
	config_defaults(&cfg);
	bool ok = nbd_parse_uri(&cfg, "nbds://h/x") == 0 && cfg.tls;
	config_defaults(&cfg);
	ok = ok && nbd_parse_uri(&cfg, "nbds+unix:///x?socket=/s") == 0 && cfg.tls &&
	     !strcmp(cfg.unix_path, "/s");
	report("uri: nbds schemes require TLS", ok, nbd_last_error());
	char *v[] = { "nbds://h/x" };
	ok = nbd_parse_args(&cfg, 1, v) == -1 && nbd_last_error_class() == EXIT_USAGE;
	report("args: TLS without a CA file is refused as a usage error",
	       ok && strstr(nbd_last_error(), NBDBOOT_TLS ? "--cacert" : "built without TLS"),
	       nbd_last_error());
}

static void test_sanitise(void)
{
	char out[NBD_SHOW_MAX + 8];
	uint8_t in[300];
	nbd_sanitise(out, sizeof out, (const uint8_t *)"a\x1b[2Jb\n\xc3\xa9", 9);
	report("sanitise: control and non-ASCII bytes become '?'", !strcmp(out, "a?[2Jb???"), out);
	memset(in, 'x', sizeof in);
	nbd_sanitise(out, sizeof out, in, sizeof in);
	report("sanitise: bounded with an ellipsis",
	       strlen(out) == NBD_SHOW_MAX + 3 && !strcmp(out + NBD_SHOW_MAX, "..."), out);
	char exact[NBD_SHOW_MAX + 4]; /* what callers give it: the text and "..." */
	nbd_sanitise(exact, sizeof exact, in, sizeof in);
	report("sanitise: a buffer of NBD_SHOW_MAX + 4 gets the '...' marker",
	       strlen(exact) == NBD_SHOW_MAX + 3 && !strcmp(exact + NBD_SHOW_MAX, "..."), exact);
	nbd_sanitise(exact, sizeof exact, in, NBD_SHOW_MAX);
	report("sanitise: text of exactly NBD_SHOW_MAX bytes has no marker",
	       strlen(exact) == NBD_SHOW_MAX, exact);
}

/* ---- Scripted servers --------------------------------------------------------- */

struct buf {
	uint8_t d[1 << 17];
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (n)
		memcpy(b->d + b->n, p, n);
	b->n += n;
}
static void put16(struct buf *b, uint16_t v) { be16_put(b->d + b->n, v); b->n += 2; }
static void put32(struct buf *b, uint32_t v) { be32_put(b->d + b->n, v); b->n += 4; }
static void put64(struct buf *b, uint64_t v) { be64_put(b->d + b->n, v); b->n += 8; }

static void greet_new(struct buf *b, uint16_t flags)
{
	put64(b, NBD_MAGIC);
	put64(b, NBD_IHAVEOPT);
	put16(b, flags);
}

static void greet_old(struct buf *b, uint64_t size, uint32_t flags)
{
	put64(b, NBD_MAGIC);
	put64(b, NBD_OLDSTYLE_MAGIC);
	put64(b, size);
	put32(b, flags);
	memset(b->d + b->n, 0, 124);
	b->n += 124;
}

static void reply(struct buf *b, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, opt);
	put32(b, type);
	put32(b, len);
	put(b, data, len);
}

static void info_export(struct buf *b, uint32_t opt, uint64_t size, uint16_t flags)
{
	uint8_t p[12];
	be16_put(p, NBD_INFO_EXPORT);
	be64_put(p + 2, size);
	be16_put(p + 10, flags);
	reply(b, opt, NBD_REP_INFO, p, sizeof p);
}

static void info_bs(struct buf *b, uint32_t opt, uint32_t min, uint32_t pref, uint32_t max)
{
	uint8_t p[14];
	be16_put(p, NBD_INFO_BLOCK_SIZE);
	be32_put(p + 2, min);
	be32_put(p + 6, pref);
	be32_put(p + 10, max);
	reply(b, opt, NBD_REP_INFO, p, sizeof p);
}

static void ack(struct buf *b, uint32_t opt) { reply(b, opt, NBD_REP_ACK, NULL, 0); }

/* A server script: first the greeting alone, then (after the client's first
 * write) the rest; optionally keep the socket open (stall) at the end. */
struct script {
	struct buf greeting, rest;
	bool stall;
	bool hangup; /* close right after the greeting */
};

struct outcome {
	int rc;
	struct nbd_export ex;
	char error[sizeof err.msg];
	bool transient;
	uint8_t sent[8192]; /* what the client sent, as the server saw it */
	size_t sent_len;
	size_t first_read; /* bytes in the server's first read after the greeting */
	int64_t elapsed_ms;
};

static struct script S;
static struct outcome O;

static void server(int fd, int log)
{
	uint8_t in[8192];
	size_t total = 0;
	ssize_t r;
	uint64_t first = 0;
	if (write(fd, S.greeting.d, S.greeting.n) < 0 || S.hangup)
		_exit(1);
	usleep(50000); /* let the client's first write arrive whole */
	r = read(fd, in, sizeof in);
	if (r > 0) {
		first = (uint64_t)r;
		total = (size_t)r;
	}
	if (write(fd, S.rest.d, S.rest.n) < 0 && !S.stall) {
		/* the client may have hung up early: that is what some tests check */
	}
	if (S.stall)
		sleep(3);
	shutdown(fd, SHUT_WR);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	while (total < sizeof in && poll(&p, 1, 2000) > 0 &&
	       (r = read(fd, in + total, sizeof in - total)) > 0)
		total += (size_t)r;
	if (write(log, &first, sizeof first) < 0 || write(log, in, total) < 0)
		_exit(1);
	_exit(0);
}

static char listed[4096];

static void collect(const char *name, const char *desc, void *arg)
{
	size_t n = strlen(listed);
	(void)arg;
	snprintf(listed + n, sizeof listed - n, "%s|%s;", name, desc);
}

/* Run nbd_negotiate (or nbd_list when list) against S with cfg. */
static void run_script(const struct nbd_config *cfg, bool probe, bool list, int deadline_ms)
{
	int sv[2], lp[2];
	pid_t pid;
	uint64_t first = 0;
	ssize_t r;
	memset(&O, 0, sizeof O);
	socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	if (pipe(lp))
		abort();
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		close(lp[0]);
		server(sv[1], lp[1]);
	}
	close(sv[1]);
	close(lp[1]);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	struct nbd_conn c = { .fd = sv[0], .deadline_ms = nbd_now_ms() + deadline_ms };
	nbd_error_clear();
	listed[0] = 0;
	O.elapsed_ms = nbd_now_ms();
	if (list)
		O.rc = nbd_list(&c, cfg, collect, NULL);
	else
		O.rc = nbd_negotiate(&c, cfg, &O.ex, probe);
	O.elapsed_ms = nbd_now_ms() - O.elapsed_ms;
	snprintf(O.error, sizeof O.error, "%s", err.msg);
	O.transient = err.transient;
	close(sv[0]);
	if (read(lp[0], &first, sizeof first) == sizeof first)
		O.first_read = (size_t)first;
	while (O.sent_len < sizeof O.sent &&
	       (r = read(lp[0], O.sent + O.sent_len, sizeof O.sent - O.sent_len)) > 0)
		O.sent_len += (size_t)r;
	close(lp[0]);
	waitpid(pid, NULL, 0);
}

/* ---- Negotiation scenarios ------------------------------------------------------- */

#define HS_BOTH (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)

static struct nbd_config C;

static void reset(uint16_t hs)
{
	memset(&S, 0, sizeof S);
	config_defaults(&C);
	greet_new(&S.greeting, hs);
}

static void expect_ok(const char *name)
{
	report(name, O.rc == 0, O.error);
}

static void expect_err(const char *name, const char *part)
{
	char why[1024];
	snprintf(why, sizeof why, "rc %d, error '%s', wanted '%s'", O.rc, O.error, part);
	report(name, O.rc == -1 && strstr(O.error, part), why);
}

/* Offset of the first option after the 4 client-flag bytes. */
static uint32_t sent_opt(size_t at) { return be32_get(O.sent + at + 8); }

static void test_go_success(void)
{
	reset(HS_BOTH);
	strcpy(C.name, "disk");
	info_export(&S.rest, NBD_OPT_GO, 1 << 20, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH);
	info_bs(&S.rest, NBD_OPT_GO, 1, 4096, 1 << 25);
	ack(&S.rest, NBD_OPT_GO);
	run_script(&C, false, false, 2000);
	expect_ok("go: named export negotiates");
	report("go: size, flags and block sizes are taken",
	       O.ex.size == 1 << 20 && O.ex.flags == (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH) &&
		       O.ex.has_block_sizes && O.ex.min_block == 1 && O.ex.pref_block == 4096 &&
		       O.ex.max_block == 1 << 25 && O.ex.how == HS_FIXED_GO,
	       "wrong export fields");
	size_t golen = 4 + NBD_OPT_HDR_LEN + 4 + 4 + 4;
	report("go: client flags and GO travel in one write", O.first_read == golen, "split write");
	report("go: client flags echo fixed newstyle and no zeroes", be32_get(O.sent) == 3,
	       "wrong client flags");
	report("go: request asks for the name and INFO_BLOCK_SIZE",
	       be64_get(O.sent + 4) == NBD_IHAVEOPT && sent_opt(4) == NBD_OPT_GO &&
		       be32_get(O.sent + 16) == 12 && be32_get(O.sent + 20) == 4 &&
		       !memcmp(O.sent + 24, "disk", 4) && be16_get(O.sent + 28) == 1 &&
		       be16_get(O.sent + 30) == NBD_INFO_BLOCK_SIZE,
	       "wrong GO request");
	report("go: nothing sent after GO's ACK", O.sent_len == golen, "extra bytes sent");
}

static void test_client_flags_not_offered(void)
{
	reset(NBD_FLAG_FIXED_NEWSTYLE);
	info_export(&S.rest, NBD_OPT_GO, 512, 0);
	ack(&S.rest, NBD_OPT_GO);
	run_script(&C, false, false, 2000);
	report("handshake: NO_ZEROES is not claimed unless offered",
	       O.rc == 0 && be32_get(O.sent) == NBD_FLAG_C_FIXED_NEWSTYLE, O.error);
	report("go: flags without HAS_FLAGS read as none", O.ex.flags == 0, "flags kept");
}

static void test_unknown_info_skipped(void)
{
	uint8_t odd[10] = { 0, 99 };
	reset(HS_BOTH);
	reply(&S.rest, NBD_OPT_GO, NBD_REP_INFO, odd, sizeof odd);
	info_export(&S.rest, NBD_OPT_GO, 4096, 1);
	ack(&S.rest, NBD_OPT_GO);
	run_script(&C, false, false, 2000);
	report("go: unknown info types are skipped", O.rc == 0 && O.ex.size == 4096, O.error);
}

static void test_go_fallback(void)
{
	reset(NBD_FLAG_FIXED_NEWSTYLE);
	strcpy(C.name, "e");
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_UNSUP, NULL, 0);
	put64(&S.rest, 123456);
	put16(&S.rest, 3);
	memset(S.rest.d + S.rest.n, 0, 124);
	S.rest.n += 124;
	run_script(&C, false, false, 2000);
	expect_ok("fallback: GO unsupported falls back to EXPORT_NAME");
	report("fallback: EXPORT_NAME result and zeroes consumed",
	       O.ex.size == 123456 && O.ex.flags == 3 && O.ex.how == HS_FIXED_EXPORT_NAME,
	       "wrong export");
	size_t go = 4 + NBD_OPT_HDR_LEN + 4 + 1 + 4;
	report("fallback: second option is EXPORT_NAME with the name",
	       O.sent_len == go + NBD_OPT_HDR_LEN + 1 && sent_opt(go) == NBD_OPT_EXPORT_NAME &&
		       O.sent[go + NBD_OPT_HDR_LEN] == 'e',
	       "wrong second option");
}

static void test_go_error_is_not_fallback(void)
{
	reset(HS_BOTH);
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_POLICY, NULL, 0);
	run_script(&C, false, false, 2000);
	expect_err("fallback: only UNSUP falls back (POLICY is an error)", "by policy");
}

static void test_nonfixed_uses_export_name(void)
{
	reset(0);
	put64(&S.rest, 999);
	put16(&S.rest, 1);
	memset(S.rest.d + S.rest.n, 0, 124);
	S.rest.n += 124;
	run_script(&C, false, false, 2000);
	report("newstyle without fixed: EXPORT_NAME directly, client flags 0",
	       O.rc == 0 && O.ex.how == HS_NEWSTYLE && be32_get(O.sent) == 0 &&
		       sent_opt(4) == NBD_OPT_EXPORT_NAME && O.ex.size == 999,
	       O.error);
}

static void test_export_name_refused(void)
{
	reset(HS_BOTH);
	C.no_optgo = true;
	strcpy(C.name, "nope");
	run_script(&C, false, false, 2000);
	expect_err("export-name: a closed socket is a refusal of the export, retried",
		   "server refused export 'nope': it closed the connection after EXPORT_NAME");
	report("export-name: the refusal is retried (a busy server closes too)", O.transient,
	       "not transient");
}

static void test_oldstyle(void)
{
	memset(&S, 0, sizeof S);
	config_defaults(&C);
	greet_old(&S.greeting, 1 << 30, 3);
	run_script(&C, false, false, 2000);
	report("oldstyle: accepted without a name",
	       O.rc == 0 && O.ex.how == HS_OLDSTYLE && O.ex.size == 1 << 30 && O.ex.flags == 3 &&
		       O.sent_len == 0,
	       O.error);
	strcpy(C.name, "x");
	run_script(&C, false, false, 2000);
	expect_err("oldstyle: refused when an export name is asked", "oldstyle");
	config_defaults(&C);
	C.tls = true;
	run_script(&C, false, false, 2000);
	expect_err("oldstyle: refused when TLS is asked", "refusing to continue without TLS");
	memset(&S, 0, sizeof S);
	greet_old(&S.greeting, 1, 0x10000);
	config_defaults(&C);
	run_script(&C, false, false, 2000);
	expect_err("oldstyle: high flag bits refused", "invalid oldstyle flags");
}

struct bad_reply {
	const char *name, *part;
	void (*build)(struct buf *b);
};

static void b_bad_magic(struct buf *b)
{
	put64(b, 0x1122334455667788ULL);
	put32(b, NBD_OPT_GO);
	put32(b, NBD_REP_ACK);
	put32(b, 0);
}
static void b_wrong_echo(struct buf *b) { ack(b, NBD_OPT_LIST); }
static void b_export_len(struct buf *b)
{
	uint8_t p[13] = { 0, NBD_INFO_EXPORT };
	reply(b, NBD_OPT_GO, NBD_REP_INFO, p, sizeof p);
}
static void b_bs_len(struct buf *b)
{
	uint8_t p[12] = { 0, NBD_INFO_BLOCK_SIZE };
	reply(b, NBD_OPT_GO, NBD_REP_INFO, p, sizeof p);
}
static void b_no_export(struct buf *b) { ack(b, NBD_OPT_GO); }
static void b_bs_min(struct buf *b) { info_bs(b, NBD_OPT_GO, 3, 4096, 65536); }
static void b_bs_min_huge(struct buf *b) { info_bs(b, NBD_OPT_GO, 1 << 17, 1 << 17, 1 << 20); }
static void b_bs_pref(struct buf *b) { info_bs(b, NBD_OPT_GO, 1, 256, 65536); }
static void b_bs_max(struct buf *b) { info_bs(b, NBD_OPT_GO, 512, 4096, 2048); }
static void b_bs_max_mult(struct buf *b) { info_bs(b, NBD_OPT_GO, 1024, 4096, 5000); }
static void b_absurd(struct buf *b) { info_export(b, NBD_OPT_GO, UINT64_MAX, 1); }
static void b_truncated(struct buf *b)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, NBD_OPT_GO);
	put32(b, NBD_REP_INFO);
	put32(b, 12);
	put16(b, NBD_INFO_EXPORT);
}
static void b_short_info(struct buf *b)
{
	uint8_t p[1] = { 0 };
	reply(b, NBD_OPT_GO, NBD_REP_INFO, p, 1);
}
static void b_oversized(struct buf *b)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, NBD_OPT_GO);
	put32(b, NBD_REP_INFO);
	put32(b, 0x7fffffff);
}
static void b_long_error(struct buf *b)
{
	put64(b, NBD_REP_MAGIC);
	put32(b, NBD_OPT_GO);
	put32(b, NBD_REP_ERR_UNKNOWN);
	put32(b, NBD_ERRMSG_MAX + 1);
}
static void b_ack_payload(struct buf *b)
{
	uint8_t p[4] = { 0 };
	reply(b, NBD_OPT_GO, NBD_REP_ACK, p, 4);
}
static void b_unexpected(struct buf *b)
{
	uint8_t p[8] = { 0 };
	reply(b, NBD_OPT_GO, NBD_REP_SERVER, p, 8);
}
static void b_endless(struct buf *b)
{
	uint8_t p[2] = { 0, 77 };
	for (int i = 0; i <= NBD_REPLIES_MAX; i++)
		reply(b, NBD_OPT_GO, NBD_REP_INFO, p, 2);
}
static void b_ack_after_bad_then(struct buf *b) { (void)b; }

static const struct bad_reply bad_replies[] = {
	{ "bad reply magic", "bad reply magic", b_bad_magic },
	{ "wrong echoed option", "answered option 3", b_wrong_echo },
	{ "INFO_EXPORT of the wrong length", "INFO_EXPORT of 13 bytes", b_export_len },
	{ "INFO_BLOCK_SIZE of the wrong length", "INFO_BLOCK_SIZE of 12 bytes", b_bs_len },
	{ "ACK without INFO_EXPORT", "no INFO_EXPORT", b_no_export },
	{ "minimum block size not a power of two", "invalid block sizes", b_bs_min },
	{ "minimum block size above 64 KiB", "invalid block sizes", b_bs_min_huge },
	{ "preferred block size below 512", "invalid block sizes", b_bs_pref },
	{ "maximum below preferred", "invalid block sizes", b_bs_max },
	{ "maximum not a multiple of minimum", "invalid block sizes", b_bs_max_mult },
	{ "absurd export size", "absurd export size", b_absurd },
	{ "reply truncated by a close", "server closed the connection", b_truncated },
	{ "INFO shorter than its type", "1-byte INFO", b_short_info },
	{ "oversized reply length", "more than the", b_oversized },
	{ "oversized error text", "more than the", b_long_error },
	{ "ACK with a payload", "more than the 0 allowed", b_ack_payload },
	{ "unexpected reply type", "unexpected reply type 2", b_unexpected },
	{ "endless replies", "more than 4096 replies", b_endless },
	{ "no reply at all", "server closed the connection", b_ack_after_bad_then },
};

static void test_bad_replies(void)
{
	for (size_t i = 0; i < sizeof bad_replies / sizeof bad_replies[0]; i++) {
		char name[128];
		reset(HS_BOTH);
		bad_replies[i].build(&S.rest);
		run_script(&C, false, false, 3000);
		snprintf(name, sizeof name, "hostile: %s", bad_replies[i].name);
		expect_err(name, bad_replies[i].part);
	}
}

static void test_bad_greetings(void)
{
	memset(&S, 0, sizeof S);
	config_defaults(&C);
	put(&S.greeting, "HTTP/1.1 400 Bad Request\r\n", 26);
	run_script(&C, false, false, 2000);
	expect_err("greeting: wrong magic is not an NBD server", "not an NBD server");
	memset(&S, 0, sizeof S);
	put64(&S.greeting, NBD_MAGIC);
	put64(&S.greeting, 0x1234);
	run_script(&C, false, false, 2000);
	expect_err("greeting: unknown second magic", "unknown protocol magic");
	memset(&S, 0, sizeof S);
	put64(&S.greeting, NBD_MAGIC);
	S.hangup = true;
	run_script(&C, false, false, 2000);
	expect_err("greeting: cut short", "server closed the connection (greeting)");
}

static void test_stall(void)
{
	reset(HS_BOTH);
	S.stall = true;
	run_script(&C, false, false, 300);
	expect_err("stall: a silent server hits the deadline", "timed out");
	report("stall: the deadline is honoured (well under the server's 3 s stall)",
	       O.elapsed_ms < 2500, "took too long");
	reset(HS_BOTH);
	S.stall = true;
	S.greeting.n = 10; /* half a greeting, then silence */
	run_script(&C, false, false, 300);
	expect_err("stall: a half greeting hits the deadline", "timed out");
}

struct err_case {
	uint32_t type;
	const char *name, *part;
	bool transient;
};

static const struct err_case err_cases[] = {
	{ NBD_REP_ERR_POLICY, "POLICY", "refused export 'x' by policy", true },
	{ NBD_REP_ERR_INVALID, "INVALID", "rejected GO as invalid" },
	{ NBD_REP_ERR_PLATFORM, "PLATFORM", "on its platform" },
	{ NBD_REP_ERR_TLS_REQD, "TLS_REQD", "requires TLS: add --tls or use nbds://" },
	{ NBD_REP_ERR_UNKNOWN, "UNKNOWN", "refused export 'x' as unknown or unavailable", true },
	{ NBD_REP_ERR_SHUTDOWN, "SHUTDOWN", "shutting down", true },
	{ NBD_REP_ERR_BLOCK_SIZE_REQD, "BLOCK_SIZE_REQD", "block size negotiation" },
	{ NBD_REP_ERR_TOO_BIG, "TOO_BIG", "too big" },
	{ NBD_REP_ERR_EXT_HEADER_REQD, "EXT_HEADER_REQD", "extended headers" },
	{ NBD_REP_FLAG_ERROR | 77, "unknown error", "error 77" },
};

static void test_error_replies(void)
{
	for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
		char name[128], why[1024];
		reset(HS_BOTH);
		strcpy(C.name, "x");
		reply(&S.rest, NBD_OPT_GO, err_cases[i].type, "why\x1b[0m", 7);
		run_script(&C, false, false, 2000);
		snprintf(name, sizeof name, "error reply: %s has its own message", err_cases[i].name);
		expect_err(name, err_cases[i].part);
		snprintf(name, sizeof name, "error reply: %s shows the server text sanitised",
			 err_cases[i].name);
		report(name, strstr(O.error, "server says: why?[0m") != NULL, O.error);
		snprintf(name, sizeof name, "error reply: %s %s retried", err_cases[i].name,
			 err_cases[i].transient ? "is" : "is not");
		snprintf(why, sizeof why, "transient=%d", O.transient);
		report(name, O.transient == err_cases[i].transient, why);
	}
	reset(HS_BOTH);
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, NULL, 0);
	run_script(&C, false, false, 2000);
	expect_err("error reply: UNKNOWN for the default export says only what the server said",
		   "server refused the default export as unknown or unavailable");
	size_t go = 4 + NBD_OPT_HDR_LEN + 8;
	report("error reply: the client leaves with ABORT",
	       O.sent_len == go + NBD_OPT_HDR_LEN && sent_opt(go) == NBD_OPT_ABORT, "no ABORT");
	reset(HS_BOTH);
	info_bs(&S.rest, NBD_OPT_GO, 3, 4096, 65536);
	run_script(&C, false, false, 2000);
	report("hostile: a bad INFO reply is answered with ABORT",
	       O.rc == -1 && O.sent_len == go + NBD_OPT_HDR_LEN && sent_opt(go) == NBD_OPT_ABORT,
	       O.error);
	reset(HS_BOTH);
	ack(&S.rest, NBD_OPT_GO);
	run_script(&C, false, false, 2000);
	report("hostile: an ACK without INFO_EXPORT is left with NBD_CMD_DISC",
	       O.rc == -1 && O.sent_len == go + NBD_REQUEST_LEN &&
		       be16_get(O.sent + go + 6) == NBD_CMD_DISC,
	       O.error);
}

/* UNKNOWN is what a busy nbdkit says too: the server's own list decides. */
static void test_unknown_then_list(void)
{
	uint8_t e[16];
	size_t go = 4 + NBD_OPT_HDR_LEN + 4 + 1 + 4;
	reset(HS_BOTH);
	strcpy(C.name, "x");
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, NULL, 0);
	be32_put(e, 1);
	memcpy(e + 4, "a", 1);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 5);
	memcpy(e + 4, "b", 1);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 5);
	ack(&S.rest, NBD_OPT_LIST);
	run_script(&C, false, false, 2000);
	expect_err("unknown: a name missing from the server's list is a wrong name",
		   "server has no export named 'x' (it lists 'a', 'b')");
	report("unknown: a wrong name is not retried", !O.transient, "transient");
	report("unknown: GO, LIST, then ABORT",
	       O.sent_len == go + 2 * NBD_OPT_HDR_LEN && sent_opt(go) == NBD_OPT_LIST &&
		       sent_opt(go + NBD_OPT_HDR_LEN) == NBD_OPT_ABORT,
	       "wrong options sent");
	reset(HS_BOTH);
	strcpy(C.name, "x");
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, "limit", 5);
	be32_put(e, 1);
	memcpy(e + 4, "x", 1);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 5);
	ack(&S.rest, NBD_OPT_LIST);
	run_script(&C, false, false, 2000);
	expect_err("unknown: a listed name refused is a busy server",
		   "server refused export 'x' as unknown or unavailable (server says: limit)");
	report("unknown: a listed name refused is retried", O.transient, "not transient");
	reset(HS_BOTH);
	strcpy(C.name, "x");
	reply(&S.rest, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, NULL, 0);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_ERR_POLICY, NULL, 0);
	run_script(&C, false, false, 2000);
	expect_err("unknown: a server that will not list keeps the refusal",
		   "server refused export 'x' as unknown or unavailable");
	report("unknown: ... and it is retried", O.transient, "not transient");
}

static void test_tls_refusals(void)
{
	reset(0);
	C.tls = true;
	run_script(&C, false, false, 2000);
	expect_err("tls: server without fixed newstyle is refused", "without TLS");
	report("tls: nothing is sent to a server without fixed newstyle", O.sent_len == 0,
	       "client sent bytes");
	reset(HS_BOTH);
	C.tls = true;
	reply(&S.rest, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, NULL, 0);
	run_script(&C, false, false, 2000);
	expect_err("tls: STARTTLS answered with an error is refused", "without TLS");
	report("tls: nothing follows the refused STARTTLS",
	       O.sent_len == 4 + NBD_OPT_HDR_LEN && sent_opt(4) == NBD_OPT_STARTTLS,
	       "client sent more after STARTTLS");
	reset(HS_BOTH);
	C.tls = true;
	reply(&S.rest, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP, NULL, 0);
	run_script(&C, false, false, 2000);
	expect_err("tls: STARTTLS unsupported (a stripping middlebox) is refused", "without TLS");
}

static void test_probe_disconnects(void)
{
	reset(HS_BOTH);
	info_export(&S.rest, NBD_OPT_GO, 1000, 1);
	ack(&S.rest, NBD_OPT_GO);
	run_script(&C, true, false, 2000);
	size_t go = 4 + NBD_OPT_HDR_LEN + 8;
	report("probe: negotiates with GO like an attach, then sends NBD_CMD_DISC",
	       O.rc == 0 && sent_opt(4) == NBD_OPT_GO && O.sent_len == go + NBD_REQUEST_LEN &&
		       be32_get(O.sent + go) == NBD_REQUEST_MAGIC &&
		       be16_get(O.sent + go + 6) == NBD_CMD_DISC,
	       O.error);
}

static void test_list(void)
{
	uint8_t e[64];
	reset(HS_BOTH);
	be32_put(e, 3);
	memcpy(e + 4, "onedesc", 7);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 11);
	be32_put(e, 3);
	memcpy(e + 4, "two", 3);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 7);
	ack(&S.rest, NBD_OPT_LIST);
	run_script(&C, false, true, 2000);
	report("list: names and descriptions", O.rc == 0 && !strcmp(listed, "one|desc;two|;"),
	       listed);
	report("list: LIST then ABORT",
	       sent_opt(4) == NBD_OPT_LIST && O.sent_len == 4 + 2 * NBD_OPT_HDR_LEN &&
		       sent_opt(4 + NBD_OPT_HDR_LEN) == NBD_OPT_ABORT,
	       "wrong options sent");
	reset(HS_BOTH);
	be32_put(e, 50);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_SERVER, e, 10);
	run_script(&C, false, true, 2000);
	expect_err("list: name longer than its entry is refused", "malformed export list entry");
	reset(HS_BOTH);
	reply(&S.rest, NBD_OPT_LIST, NBD_REP_ERR_POLICY, "no", 2);
	run_script(&C, false, true, 2000);
	expect_err("list: refusal is reported", "by policy");
	reset(0);
	run_script(&C, false, true, 2000);
	expect_err("list: needs fixed newstyle", "cannot list exports");
}

/* ---- Kernel command line ------------------------------------------------------ */

struct cmdline_case {
	const char *name, *text;
	int rc;
	const char *host, *port, *export_name, *device, *root, *fstype, *rootflags;
	const char *errpart;
	bool ioctl, readonly, tls;
	unsigned wait;
};

static const struct cmdline_case cmdline_cases[] = {
	{ "dracut port", "quiet root=nbd:10.0.2.2:10900 ro", 0, "10.0.2.2", "10900", "",
	  "/dev/nbd0", "/dev/nbd0" },
	{ "dracut name", "root=nbd:srv:disk", 0, "srv", "10809", "disk", "/dev/nbd0", "/dev/nbd0" },
	{ "dracut fstype and flags", "root=nbd:srv:10900:ext4:noatime,data=ordered", 0, "srv",
	  "10900", "", "/dev/nbd0", "/dev/nbd0", "ext4", "noatime,data=ordered" },
	{ "dracut nbdopts", "root=nbd:srv:disk:xfs::wait=7,ioctl,readonly", 0, "srv", "10809",
	  "disk", "/dev/nbd0", "/dev/nbd0", "xfs", "", .ioctl = true, .readonly = true, .wait = 7 },
	{ "dracut netroot", "root=/dev/nbd0 netroot=nbd:srv:1234", 0, "srv", "1234", "",
	  "/dev/nbd0", "/dev/nbd0" },
	{ "dracut bracketed ipv6", "root=nbd:[fd00::2]:10900:ext4", 0, "fd00::2", "10900", "",
	  "/dev/nbd0", "/dev/nbd0", "ext4" },
	{ "debian comma form", "nbdroot=srv,disk,nbd1 root=/dev/nbd1", 0, "srv", "10809", "disk",
	  "/dev/nbd1", "/dev/nbd1" },
	{ "debian comma form, port", "nbdroot=srv,2000", 0, "srv", "2000", "", "/dev/nbd0",
	  "/dev/nbd0" },
	{ "debian host:port/name", "nbdroot=srv:2000/disk root=/dev/nbd0p1", 0, "srv", "2000",
	  "disk", "/dev/nbd0", "/dev/nbd0p1" },
	{ "debian host:/name", "nbdroot=srv:/disk", 0, "srv", "10809", "disk", "/dev/nbd0",
	  "/dev/nbd0" },
	{ "debian [v6]:/name", "nbdroot=[fd00::1]:/d", 0, "fd00::1", "10809", "d", "/dev/nbd0",
	  "/dev/nbd0" },
	{ "debian [v6]:port/name", "nbdroot=[fd00::1]:99/d", 0, "fd00::1", "99", "d",
	  "/dev/nbd0", "/dev/nbd0" },
	{ "debian nbddev", "nbdroot=srv:/d nbddev=/dev/nbd3", 0, "srv", "10809", "d", "/dev/nbd3",
	  "/dev/nbd3" },
	{ "uri root", "root=nbd://srv:77/e rootfstype=ext4 rootflags=ro", 0, "srv", "77", "e",
	  "/dev/nbd0", "/dev/nbd0", "ext4", "ro" },
	{ "nbds uri root asks for TLS", "root=nbds://srv/e", 0, "srv", "10809", "e", "/dev/nbd0",
	  "/dev/nbd0", .tls = true },
	{ "dracut nbdopts with the nbdboot. prefix", "root=nbd:srv:d:ext4::nbdboot.ioctl", 0, "srv",
	  "10809", "d", "/dev/nbd0", "/dev/nbd0", "ext4", .ioctl = true },
	{ "own namespace", "root=nbd:srv:d nbdboot.wait=5 nbdboot.ioctl nbdboot.device=/dev/nbd2",
	  0, "srv", "10809", "d", "/dev/nbd2", "/dev/nbd2", .ioctl = true, .wait = 5 },
	{ "quoted values", "root=nbd:srv:d:ext4:\"a b\"", 0, "srv", "10809", "d", "/dev/nbd0",
	  "/dev/nbd0", "ext4", "a b" },
	{ "no nbd root", "root=/dev/sda1 quiet", -1, .errpart = "asks for no NBD root" },
	{ "two roots", "root=nbd:a:1 nbdroot=b:/x", -1, .errpart = "more than one NBD root" },
	{ "bad dracut port", "root=nbd:srv:99999", -1, .errpart = "root: port 99999" },
	{ "empty dracut server", "root=nbd::disk", -1, .errpart = "root: bad server" },
	{ "unknown nbdopt", "root=nbd:srv:d:ext4::frob", -1, .errpart = "root: unknown nbdboot option 'frob'" },
	{ "nbdopt missing value", "root=nbd:srv:d:ext4::wait", -1, .errpart = "needs =VALUE" },
	{ "unknown own option", "root=nbd:srv:d nbdboot.bogus=1", -1, .errpart = "unknown nbdboot option 'bogus'" },
	{ "bad nbdroot", "nbdroot=justahost", -1, .errpart = "nbdroot: 'justahost'" },
	{ "nbdroot dhcp without dhcp data", "nbdroot=dhcp", -1, .errpart = "ROOTPATH" },
	{ "bad nbddev", "nbdroot=s:/d nbddev=/dev/sda", -1, .errpart = "nbddev:" },
	{ "bad root device", "nbdroot=s:/d root=/dev/nbdXp1", -1, .errpart = "root=/dev/nbdXp1" },
	{ "root on another nbd", "nbdroot=s:/d nbddev=/dev/nbd1 root=/dev/nbd0p1", -1,
	  .errpart = "not on the NBD device" },
	{ "bad uri", "root=nbd://srv:x/", -1, .errpart = "root: " },
	{ "root=/dev/nbd10p1 is not a partition of nbd1",
	  "nbdroot=s:/d nbddev=/dev/nbd1 root=/dev/nbd10p1", -1, .errpart = "not on the NBD device" },
	{ "root=/dev/nbd021 is not a kernel device name", "nbdroot=s:/d nbddev=/dev/nbd0 root=/dev/nbd021",
	  -1, .errpart = "root=/dev/nbd021 is not /dev/nbdN" },
	{ "root=/dev/nbd021 alone is refused too", "nbdroot=s:/d root=/dev/nbd021", -1,
	  .errpart = "root=/dev/nbd021 is not /dev/nbdN" },
	{ "partition 0 does not exist", "nbdroot=s:/d root=/dev/nbd0p0", -1,
	  .errpart = "root=/dev/nbd0p0 is not" },
	{ "partition with a leading zero", "nbdroot=s:/d root=/dev/nbd0p01", -1,
	  .errpart = "root=/dev/nbd0p01 is not" },
	{ "nbddev with a leading zero", "nbdroot=s:/d nbddev=/dev/nbd01", -1,
	  .errpart = "'/dev/nbd01' is not an nbd device" },
	{ "a newline inside quotes stays out of the message", "root=nbd:h:d nbdboot.\"\n\x1b[2J\"", -1,
	  .errpart = "unknown nbdboot option '??[2J'" },
	{ "nbd1p12 is a partition of nbd1", "nbdroot=s:/d nbddev=/dev/nbd1 root=/dev/nbd1p12", 0, "s",
	  "10809", "d", "/dev/nbd1", "/dev/nbd1p12" },
	{ "nbd10 with root nbd10p1", "nbdroot=s:/d root=/dev/nbd10p1", 0, "s", "10809", "d",
	  "/dev/nbd10", "/dev/nbd10p1" },
};

static void test_cmdline(void)
{
	for (size_t i = 0; i < sizeof cmdline_cases / sizeof cmdline_cases[0]; i++) {
		const struct cmdline_case *t = &cmdline_cases[i];
		static struct nbd_config cfg;
		char why[1200] = "", name[128];
		config_defaults(&cfg);
		nbd_error_clear();
		int rc = nbd_parse_cmdline(&cfg, t->text);
		snprintf(name, sizeof name, "cmdline: %s", t->name);
#define S_(x) ((x) ? (x) : "")
		if (rc != t->rc)
			snprintf(why, sizeof why, "rc %d, error '%s'", rc, nbd_last_error());
		else if (rc && !strstr(nbd_last_error(), t->errpart))
			snprintf(why, sizeof why, "error '%s' lacks '%s'", nbd_last_error(), t->errpart);
		else if (!rc && (strcmp(cfg.host, S_(t->host)) || strcmp(cfg.port, S_(t->port)) ||
				 strcmp(cfg.name, S_(t->export_name)) ||
				 strcmp(cfg.device, S_(t->device)) || strcmp(cfg.root, S_(t->root)) ||
				 strcmp(cfg.fstype, S_(t->fstype)) ||
				 strcmp(cfg.rootflags, S_(t->rootflags)) || cfg.use_ioctl != t->ioctl ||
				 cfg.readonly != t->readonly || cfg.tls != t->tls ||
				 cfg.wait_seconds != (t->wait ? t->wait : NBD_WAIT_DEFAULT)))
			snprintf(why, sizeof why,
				 "got host '%s' port '%s' name '%s' dev '%s' root '%s' fs '%s' "
				 "flags '%s' ioctl %d ro %d tls %d wait %u",
				 cfg.host, cfg.port, cfg.name, cfg.device, cfg.root, cfg.fstype,
				 cfg.rootflags, cfg.use_ioctl, cfg.readonly, cfg.tls, cfg.wait_seconds);
		report(name, !why[0], why);
	}
	static struct nbd_config cfg;
	config_defaults(&cfg);
	setenv("ROOTPATH", "10.1.1.1:/dhcpdisk", 1);
	bool ok = nbd_parse_cmdline(&cfg, "nbdroot=dhcp") == 0 && !strcmp(cfg.host, "10.1.1.1") &&
		  !strcmp(cfg.name, "dhcpdisk");
	report("cmdline: nbdroot=dhcp takes the DHCP root-path", ok, nbd_last_error());
	config_defaults(&cfg);
	setenv("ROOTSERVER", "10.2.2.2", 1);
	ok = nbd_parse_cmdline(&cfg, "nbdroot=/d2") == 0 && !strcmp(cfg.host, "10.2.2.2") &&
	     !strcmp(cfg.name, "d2");
	report("cmdline: nbdroot=/NAME takes the DHCP server", ok, nbd_last_error());
	char longpath[600];
	memset(longpath, 'a', sizeof longpath - 1);
	longpath[sizeof longpath - 1] = 0;
	setenv("ROOTPATH", longpath, 1);
	config_defaults(&cfg);
	ok = nbd_parse_cmdline(&cfg, "nbdroot=dhcp") == -1 &&
	     strstr(nbd_last_error(), "ROOTPATH) is too long (599 bytes");
	report("cmdline: a DHCP root-path of 512 bytes or more is too long, not 'not set'", ok,
	       nbd_last_error());
	unsetenv("ROOTPATH");
	unsetenv("ROOTSERVER");
}

/* root=dhcp, netroot=dhcp, nbdroot=dhcp: the DHCP root-path in each grammar */
struct dhcp_root_case {
	const char *name, *text, *rootpath;
	const char *host, *port, *export_name, *fstype;
	bool tls;
};

static const struct dhcp_root_case dhcp_root_cases[] = {
	{ "root=dhcp, root-path in dracut's form", "root=dhcp", "nbd:10.0.3.1:10809:ext4", "10.0.3.1",
	  "10809", "", "ext4" },
	{ "root=dhcp, root-path in dracut's form with a name", "root=dhcp", "nbd:10.0.3.1:rootfs:xfs:noatime",
	  "10.0.3.1", "10809", "rootfs", "xfs" },
	{ "root=dhcp, root-path an NBD URI", "root=dhcp", "nbd://10.0.3.1/rootfs", "10.0.3.1", "10809",
	  "rootfs" },
	{ "root=dhcp, root-path an nbds URI", "root=dhcp", "nbds://10.0.3.1:10900/rootfs", "10.0.3.1", "10900",
	  "rootfs", .tls = true },
	{ "root=dhcp, root-path in Debian's HOST:PORT/NAME", "root=dhcp", "10.0.3.1:10809/rootfs", "10.0.3.1",
	  "10809", "rootfs" },
	{ "root=dhcp, root-path in Debian's SRV,NAME", "root=dhcp", "10.0.3.1,rootfs", "10.0.3.1", "10809",
	  "rootfs" },
	{ "netroot=dhcp, root-path in dracut's form", "netroot=dhcp", "nbd:10.0.3.1:10809:ext4", "10.0.3.1",
	  "10809", "", "ext4" },
	{ "netroot=dhcp, root-path an NBD URI", "netroot=dhcp", "nbd://10.0.3.1/rootfs", "10.0.3.1", "10809",
	  "rootfs" },
	{ "netroot=dhcp, root-path in Debian's form", "netroot=dhcp", "10.0.3.1:10809/rootfs", "10.0.3.1",
	  "10809", "rootfs" },
	{ "nbdroot=dhcp, root-path in Debian's form", "nbdroot=dhcp", "10.0.3.1:10809/rootfs", "10.0.3.1",
	  "10809", "rootfs" },
	{ "nbdroot= empty, root-path in Debian's form", "nbdroot=", "10.0.3.1,rootfs", "10.0.3.1", "10809",
	  "rootfs" },
	{ "nbdroot=dhcp, root-path an NBD URI", "nbdroot=dhcp", "nbd://10.0.3.1/rootfs", "10.0.3.1", "10809",
	  "rootfs" },
	{ "nbdroot=dhcp, root-path in dracut's form", "nbdroot=dhcp", "nbd:10.0.3.1:10809:ext4", "10.0.3.1",
	  "10809", "", "ext4" },
};

static bool dhcp_root_ok(const struct dhcp_root_case *t, const struct nbd_config *cfg)
{
	return !strcmp(cfg->host, t->host) && !strcmp(cfg->port, t->port) &&
	       !strcmp(cfg->name, t->export_name) && !strcmp(cfg->fstype, S_(t->fstype)) &&
	       cfg->tls == t->tls && !strcmp(cfg->device, "/dev/nbd0");
}

static void test_cmdline_dhcp_root(void)
{
	static struct nbd_config cfg;
	char name[200];
	unsetenv("ROOTPATH");
	unsetenv("ROOTSERVER");
	for (size_t i = 0; i < sizeof dhcp_root_cases / sizeof dhcp_root_cases[0]; i++) {
		const struct dhcp_root_case *t = &dhcp_root_cases[i];
		/* as an initramfs's DHCP client leaves it: the environment */
		memset(&boot_env, 0, sizeof boot_env);
		setenv("ROOTPATH", t->rootpath, 1);
		config_defaults(&cfg);
		nbd_error_clear();
		snprintf(name, sizeof name, "cmdline: %s (ROOTPATH)", t->name);
		report(name, nbd_parse_cmdline(&cfg, t->text) == 0 && dhcp_root_ok(t, &cfg) && !boot_env.missed,
		       nbd_last_error()[0] ? nbd_last_error() : cfg.host);
		/* as the /init mode's own DHCP client leaves it */
		unsetenv("ROOTPATH");
		memset(&boot_env, 0, sizeof boot_env);
		snprintf(boot_env.rootpath, sizeof boot_env.rootpath, "%s", t->rootpath);
		snprintf(boot_env.rootserver, sizeof boot_env.rootserver, "10.0.3.1");
		config_defaults(&cfg);
		nbd_error_clear();
		snprintf(name, sizeof name, "cmdline: %s (the /init mode's DHCP)", t->name);
		report(name, nbd_parse_cmdline(&cfg, t->text) == 0 && dhcp_root_ok(t, &cfg) && !boot_env.missed,
		       nbd_last_error()[0] ? nbd_last_error() : cfg.host);
	}
	memset(&boot_env, 0, sizeof boot_env);
	setenv("ROOTPATH", "10.9.9.9:/other", 1);
	snprintf(boot_env.rootpath, sizeof boot_env.rootpath, "10.0.3.1:/rootfs");
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=dhcp: the /init mode's own root-path wins over the environment",
	       nbd_parse_cmdline(&cfg, "root=dhcp") == 0 && !strcmp(cfg.host, "10.0.3.1"), cfg.host);
	unsetenv("ROOTPATH");
	memset(&boot_env, 0, sizeof boot_env);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=dhcp without a root-path names option 17",
	       nbd_parse_cmdline(&cfg, "root=dhcp") == -1 &&
		       strstr(nbd_last_error(), "root=dhcp needs the DHCP root-path (option 17"),
	       nbd_last_error());
	report("cmdline: ... and marks the value missed (the /init mode asks again after DHCP)", boot_env.missed,
	       "not marked");
	memset(&boot_env, 0, sizeof boot_env);
	nbd_error_clear();
	report("cmdline: netroot=dhcp without a root-path names option 17",
	       nbd_parse_cmdline(&cfg, "netroot=dhcp") == -1 && strstr(nbd_last_error(), "netroot=dhcp needs") &&
		       strstr(nbd_last_error(), "option 17") && boot_env.missed,
	       nbd_last_error());
	memset(&boot_env, 0, sizeof boot_env);
	nbd_error_clear();
	report("cmdline: nbdroot=/NAME without a DHCP server marks it missed",
	       nbd_parse_cmdline(&cfg, "nbdroot=/rootfs") == -1 && strstr(nbd_last_error(), "ROOTSERVER") &&
		       boot_env.missed,
	       nbd_last_error());
	memset(&boot_env, 0, sizeof boot_env);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: nbdroot=HOST:PORT/NAME needs nothing from DHCP (nothing missed)",
	       nbd_parse_cmdline(&cfg, "nbdroot=10.0.3.1:10809/rootfs") == 0 && !boot_env.missed,
	       nbd_last_error()[0] ? nbd_last_error() : "marked missed");
	memset(&boot_env, 0, sizeof boot_env);
	nbd_error_clear();
	report("cmdline: a malformed nbdroot= is not blamed on DHCP (nothing missed)",
	       nbd_parse_cmdline(&cfg, "nbdroot=justahost") == -1 && !boot_env.missed,
	       nbd_last_error());
	memset(&boot_env, 0, sizeof boot_env);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=nbd:... needs nothing from DHCP (nothing missed)",
	       nbd_parse_cmdline(&cfg, "root=nbd:10.0.3.1:rootfs") == 0 && !boot_env.missed, nbd_last_error());
	memset(&boot_env, 0, sizeof boot_env);
	setenv("ROOTPATH", "nbd:10.0.3.1:99999", 1);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=dhcp: a bad root-path is blamed on root",
	       nbd_parse_cmdline(&cfg, "root=dhcp") == -1 && strstr(nbd_last_error(), "root: port 99999"),
	       nbd_last_error());
	setenv("ROOTPATH", "nbd://10.0.3.1:x/", 1);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=dhcp: a bad URI root-path is blamed on root",
	       nbd_parse_cmdline(&cfg, "root=dhcp") == -1 && !strncmp(nbd_last_error(), "root: ", 6),
	       nbd_last_error());
	setenv("ROOTPATH", "10.0.3.1:/rootfs", 1);
	config_defaults(&cfg);
	nbd_error_clear();
	report("cmdline: root=dhcp and netroot=dhcp together name two roots",
	       nbd_parse_cmdline(&cfg, "root=dhcp netroot=dhcp") == -1 &&
		       strstr(nbd_last_error(), "more than one NBD root"),
	       nbd_last_error());
	unsetenv("ROOTPATH");
	memset(&boot_env, 0, sizeof boot_env);
}

/* ---- --print-env: what the shell reads back ------------------------------------ */

/* Run text through sh's eval and print NAME's value back. */
static bool shell_value(const char *text, const char *name, char *value, size_t size)
{
	char path[] = "/tmp/nbdboot-unit-envXXXXXX", cmd[256];
	int fd = mkstemp(path);
	FILE *f;
	size_t n;
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return false;
	close(fd);
	snprintf(cmd, sizeof cmd, "sh -c '. \"$1\"; printf %%s \"$%s\"' sh %s", name, path);
	f = popen(cmd, "r");
	n = f ? fread(value, 1, size - 1, f) : 0;
	value[n] = 0;
	unlink(path);
	return f && pclose(f) == 0;
}

static void test_print_env(void)
{
	static struct nbd_config cfg;
	static char text[NBD_ENV_MAX], back[NBD_STRING_MAX + 8];
	size_t n;
	config_defaults(&cfg);
	memset(cfg.name, '\'', NBD_STRING_MAX);
	cfg.name[NBD_STRING_MAX] = 0;
	strcpy(cfg.host, "h");
	n = nbd_format_env(&cfg, text, sizeof text);
	report("print-env: 4096 single quotes fit, ending with the closing quote",
	       n < sizeof text && strstr(text, "\nNBD_CONNECTIONS='1'\n") &&
		       text[n - 1] == '\n',
	       "output cut");
	report("print-env: an export name of 4096 quotes evals back exactly",
	       shell_value(text, "NBD_EXPORT", back, sizeof back) && !strcmp(back, cfg.name),
	       back);
	strcpy(cfg.name, "a'b\"c$(touch /tmp/nbdboot-pwned)`x`\\ \t;|&");
	n = nbd_format_env(&cfg, text, sizeof text);
	report("print-env: shell syntax in the name is data, not code",
	       shell_value(text, "NBD_EXPORT", back, sizeof back) && !strcmp(back, cfg.name) &&
		       access("/tmp/nbdboot-pwned", F_OK) != 0,
	       back);
	char small[64];
	n = nbd_format_env(&cfg, small, sizeof small);
	report("print-env: a short buffer reports the whole length needed",
	       n > sizeof small && strlen(small) == sizeof small - 1, "wrong length");
}

/* ---- /init mode: ip=, BOOTIF= and the boot words ------------------------------- */

struct ip_case {
	const char *name, *value;
	int rc;
	bool dhcp, off;
	const char *addr, *server, *gateway, *netmask, *hostname, *device, *dns0, *dns1;
	const char *errpart;
};

static const struct ip_case ip_cases[] = {
	{ "ip=dhcp", "dhcp", 0, .dhcp = true },
	{ "ip=on", "on", 0, .dhcp = true },
	{ "ip=any", "any", 0, .dhcp = true },
	{ "ip=bootp", "bootp", 0, .dhcp = true },
	{ "ip=both", "both", 0, .dhcp = true },
	{ "ip=off", "off", 0, .off = true },
	{ "ip=none", "none", 0, .off = true },
	{ "ip=DEVICE:dhcp names the interface", "eth1:dhcp", 0, .dhcp = true, .device = "eth1" },
	{ "ip=DEVICE:off", "eth1:off", 0, .off = true, .device = "eth1" },
	{ "ip= full static form, every field in network byte order",
	  "10.0.2.15:10.0.2.2:10.0.2.1:255.255.255.0:box-1.lan:eth0:off:10.0.2.3:10.0.2.4", 0,
	  .addr = "10.0.2.15", .server = "10.0.2.2", .gateway = "10.0.2.1", .netmask = "255.255.255.0",
	  .hostname = "box-1.lan", .device = "eth0", .dns0 = "10.0.2.3", .dns1 = "10.0.2.4" },
	{ "ip= a client address with an empty autoconf is static",
	  "10.0.2.15::10.0.2.1:255.255.0.0::eth0:", 0, .addr = "10.0.2.15", .gateway = "10.0.2.1",
	  .netmask = "255.255.0.0", .device = "eth0" },
	{ "ip= a client address and no autoconf field is static", "10.0.2.15::10.0.2.1:255.255.0.0", 0,
	  .addr = "10.0.2.15", .gateway = "10.0.2.1", .netmask = "255.255.0.0" },
	{ "ip= a client address with autoconf dhcp asks DHCP", "10.0.2.15::::::dhcp", 0, .dhcp = true,
	  .addr = "10.0.2.15" },
	{ "ip= no client address, empty autoconf: DHCP", ":::::eth0:", 0, .dhcp = true, .device = "eth0" },
	{ "ip= no client address, autoconf off: off", ":::::eth0:off", 0, .off = true, .device = "eth0" },
	{ "ip=CLIENT alone, the kernel's shortest static form", "10.0.2.15", 0, .addr = "10.0.2.15" },
	{ "ip=CLIENT:SERVER", "10.0.2.15:10.0.2.2", 0, .addr = "10.0.2.15", .server = "10.0.2.2" },
	{ "ip=CLIENT:SERVER with a bad server", "10.0.2.15:10.0.2.x", -1,
	  .errpart = "server address '10.0.2.x' is not an IPv4 address" },
	{ "ip= the tenth field (NTP) is read past", "10.0.2.15:::::::::10.0.2.5", 0, .addr = "10.0.2.15" },
	{ "ip= DNS servers without an address (DHCP)", ":::::::10.0.2.3:10.0.2.4", 0, .dhcp = true,
	  .dns0 = "10.0.2.3", .dns1 = "10.0.2.4" },
	{ "ip= a bad client address", "10.0.2.300::10.0.2.1:255.255.255.0::eth0:off", -1,
	  .errpart = "client address '10.0.2.300' is not an IPv4 address" },
	{ "ip= a bad gateway", "10.0.2.15::gw:255.255.255.0", -1, .errpart = "gateway 'gw' is not an IPv4" },
	{ "ip= a bad DNS server", "10.0.2.15:::::::10.0.2.3:x", -1, .errpart = "second DNS server 'x'" },
	{ "ip= a netmask that is not contiguous", "10.0.2.15::10.0.2.1:255.0.255.0", -1,
	  .errpart = "netmask 255.0.255.0 is not contiguous" },
	{ "ip= more than 10 fields", "1:2:3:4:5:6:7:8:9:10:11", -1, .errpart = "more than 10 fields" },
	{ "ip= a host name with '_'", "10.0.2.15::::bad_name", -1, .errpart = "host name 'bad_name'" },
	{ "ip= a host name of 64 bytes",
	  "10.0.2.15::::aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", -1,
	  .errpart = "is not a host name" },
	{ "ip= a device name with '/'", "10.0.2.15:::::a/b", -1, .errpart = "'a/b' is not an interface name" },
	{ "ip=DEVICE:dhcp with '/' in the device", "a/b:dhcp", -1,
	  .errpart = "'a/b' is not an interface name" },
	{ "ip= a device name of 15 bytes", ":::::eth0123456789ab:dhcp", 0, .dhcp = true,
	  .device = "eth0123456789ab" },
	{ "ip= a device name of 16 bytes", ":::::eth0123456789abc:dhcp", -1,
	  .errpart = "'eth0123456789abc' is not an interface name" },
	{ "ip= the device '..'", ":::::..:dhcp", -1, .errpart = "'..' is not an interface name" },
	{ "ip=rarp: no RARP client", "rarp", -1, .errpart = "ip=rarp is not off, none, on" },
	{ "ip=dhcp6 is refused (IPv4 only)", "dhcp6", -1, .errpart = "ip=dhcp6 is not" },
	{ "ip=DEVICE:dhcp6 is refused", "eth0:dhcp6", -1, .errpart = "ip: autoconf 'dhcp6' is not off" },
	{ "ip= autoconf rarp in the full form", "10.0.2.15::::::rarp", -1,
	  .errpart = "autoconf 'rarp' is not off" },
	{ "ip= autoconf dhcp6 in the full form", ":::::eth0:dhcp6", -1, .errpart = "autoconf 'dhcp6'" },
	{ "ip= an empty value", "", -1, .errpart = "ip= is not off" },
	{ "ip= an unknown word", "static", -1, .errpart = "ip=static is not off" },
};

static uint32_t addr_of(const char *s)
{
	struct in_addr a = { 0 };
	if (s)
		inet_pton(AF_INET, s, &a);
	return a.s_addr;
}

static void test_ip(void)
{
	for (size_t i = 0; i < sizeof ip_cases / sizeof ip_cases[0]; i++) {
		const struct ip_case *t = &ip_cases[i];
		struct nbd_ipconf ip;
		char why[1024] = "", name[160];
		memset(&ip, 0, sizeof ip);
		nbd_error_clear();
		int rc = nbd_parse_ip(&ip, t->value);
		snprintf(name, sizeof name, "ip: %s", t->name);
		if (rc != t->rc)
			snprintf(why, sizeof why, "rc %d, error '%s'", rc, nbd_last_error());
		else if (rc && !strstr(nbd_last_error(), t->errpart))
			snprintf(why, sizeof why, "error '%s' lacks '%s'", nbd_last_error(), t->errpart);
		else if (rc && strchr(nbd_last_error(), '\n'))
			snprintf(why, sizeof why, "error '%s' is more than one line", nbd_last_error());
		else if (!rc && (!ip.given || ip.dhcp != t->dhcp || ip.off != t->off ||
				 ip.addr != addr_of(t->addr) || ip.server != addr_of(t->server) ||
				 ip.gateway != addr_of(t->gateway) || ip.netmask != addr_of(t->netmask) ||
				 strcmp(ip.hostname, S_(t->hostname)) || strcmp(ip.device, S_(t->device)) ||
				 ip.dns[0] != addr_of(t->dns0) || ip.dns[1] != addr_of(t->dns1)))
			snprintf(why, sizeof why, "got dhcp %d off %d addr %08x server %08x gw %08x mask %08x "
				 "host '%s' dev '%s' dns %08x %08x", ip.dhcp, ip.off, ntohl(ip.addr),
				 ntohl(ip.server), ntohl(ip.gateway), ntohl(ip.netmask), ip.hostname,
				 ip.device, ntohl(ip.dns[0]), ntohl(ip.dns[1]));
		report(name, !why[0], why);
	}
	char longer[600];
	struct nbd_ipconf ip = { 0 };
	memset(longer, '1', sizeof longer - 1);
	longer[sizeof longer - 1] = 0;
	nbd_error_clear();
	report("ip: a value of 599 bytes is too long",
	       nbd_parse_ip(&ip, longer) == -1 && strstr(nbd_last_error(), "ip: the value is too long"),
	       nbd_last_error());
}

struct bootif_case {
	const char *name, *value;
	int rc;
	uint8_t mac[6];
};

static const struct bootif_case bootif_cases[] = {
	{ "PXE's form, type 01 first", "01-52-54-00-12-34-56", 0, { 0x52, 0x54, 0, 0x12, 0x34, 0x56 } },
	{ "without the type", "52-54-00-12-34-56", 0, { 0x52, 0x54, 0, 0x12, 0x34, 0x56 } },
	{ "upper case", "01-AA-BB-CC-DD-EE-0F", 0, { 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f } },
	{ "colons", "52:54:00:ab:cd:ef", 0, { 0x52, 0x54, 0, 0xab, 0xcd, 0xef } },
	{ "a 01 without the type is the MAC's first byte", "01-52-54-00-12-34", 0,
	  { 0x01, 0x52, 0x54, 0, 0x12, 0x34 } },
	{ "five bytes are refused", "52-54-00-12-34", -1 },
	{ "five and a half bytes are refused", "01-52-54-00-12-34-5", -1 },
	{ "seven bytes are refused", "01-52-54-00-12-34-56-78", -1 },
	{ "a type other than Ethernet is refused", "06-52-54-00-12-34-56", -1 },
	{ "a non-hex digit is refused", "52-54-00-12-34-5g", -1 },
	{ "no separators is refused", "5254001234560000x", -1 },
	{ "a control byte that looks like a digit once lowered is refused", "52-54-00-12-34-\x15" "6", -1 },
	{ "empty is refused", "", -1 },
};

static void test_bootif(void)
{
	for (size_t i = 0; i < sizeof bootif_cases / sizeof bootif_cases[0]; i++) {
		const struct bootif_case *t = &bootif_cases[i];
		struct nbd_ipconf ip;
		char name[128];
		memset(&ip, 0, sizeof ip);
		nbd_error_clear();
		int rc = nbd_parse_bootif(&ip, t->value);
		snprintf(name, sizeof name, "BOOTIF: %s", t->name);
		if (t->rc)
			report(name, rc == -1 && !ip.has_mac && strstr(nbd_last_error(), "is not 01-aa-bb"),
			       rc ? nbd_last_error() : "accepted");
		else
			report(name, rc == 0 && ip.has_mac && !memcmp(ip.mac, t->mac, 6), nbd_last_error());
	}
	static const uint8_t mac[6] = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 };
	struct nbd_boot b;
	bool ok = nbd_parse_boot(&b, "BOOTIF=01-52-54-00-12-34-56 ip=eth9:dhcp ip=10.0.2.15:::::eth0:off") == 0 &&
		  b.ip.has_mac && !memcmp(b.ip.mac, mac, 6) && !b.ip.dhcp && !strcmp(b.ip.device, "eth0") &&
		  b.ip.addr == addr_of("10.0.2.15");
	report("ip: the last ip= wins and keeps BOOTIF's MAC", ok, nbd_last_error());
	ok = nbd_parse_boot(&b, "ip=dhcp BOOTIF=01-52-54-00-12-34-56") == 0 && b.ip.dhcp && b.ip.has_mac &&
	     !memcmp(b.ip.mac, mac, 6);
	report("ip: BOOTIF= after ip= adds the MAC", ok, nbd_last_error());
}

struct boot_case {
	const char *name, *text;
	int rc;
	bool rw, overlay;
	const char *init, *overlay_size;
	int panic_s;   /* 0 here: NBD_PANIC_UNSET; else the value + 1 */
	uint32_t wait; /* 0 here: NBD_WAIT_DEFAULT; else the value + 1 */
	const char *errpart;
};

static const struct boot_case boot_cases[] = {
	{ "defaults", "quiet console=ttyS0 root=nbd:srv:disk", 0 },
	{ "ro", "ro", 0 },
	{ "rw", "rw", 0, .rw = true },
	{ "the last of ro and rw wins", "rw quiet ro", 0 },
	{ "init= an absolute path", "init=/sbin/init.real", 0, .init = "/sbin/init.real" },
	{ "init= a relative path is refused", "init=sbin/init", -1, .errpart = "init=sbin/init is not an absolute path" },
	{ "init= empty is refused", "init=", -1, .errpart = "init= is not an absolute path" },
	{ "nbdboot.overlay=tmpfs", "nbdboot.overlay=tmpfs", 0, .overlay = true },
	{ "nbdboot.overlay=512m", "nbdboot.overlay=512m", 0, .overlay = true, .overlay_size = "512m" },
	{ "nbdboot.overlay=2G", "nbdboot.overlay=2G", 0, .overlay = true, .overlay_size = "2G" },
	{ "nbdboot.overlay=50%", "nbdboot.overlay=50%", 0, .overlay = true, .overlay_size = "50%" },
	{ "nbdboot.overlay=1048576 (bytes)", "nbdboot.overlay=1048576", 0, .overlay = true,
	  .overlay_size = "1048576" },
	{ "nbdboot.overlay=bad", "nbdboot.overlay=bad", -1, .errpart = "nbdboot.overlay=bad is not tmpfs or a size" },
	{ "nbdboot.overlay= two suffixes", "nbdboot.overlay=5mm", -1, .errpart = "nbdboot.overlay=5mm" },
	{ "nbdboot.overlay= an unknown suffix", "nbdboot.overlay=5t", -1, .errpart = "nbdboot.overlay=5t" },
	{ "nbdboot.overlay= empty", "nbdboot.overlay=", -1, .errpart = "nbdboot.overlay= is not" },
	{ "nbdboot.overlay= 31 digits", "nbdboot.overlay=1234567890123456789012345678901", -1,
	  .errpart = "is not tmpfs or a size" },
	{ "nbdboot.overlay= 30 digits and a suffix", "nbdboot.overlay=123456789012345678901234567890k", 0,
	  .overlay = true, .overlay_size = "123456789012345678901234567890k" },
	{ "the last nbdboot.overlay= wins", "nbdboot.overlay=512m nbdboot.overlay=tmpfs", 0, .overlay = true },
	{ "nbdboot.panic=0", "nbdboot.panic=0", 0, .panic_s = 1 },
	{ "nbdboot.panic=30", "nbdboot.panic=30", 0, .panic_s = 31 },
	{ "nbdboot.panic=bad", "nbdboot.panic=bad", -1, .errpart = "nbdboot.panic 'bad' is not a number" },
	{ "nbdboot.panic=-1", "nbdboot.panic=-1", -1, .errpart = "nbdboot.panic '-1' is not a number" },
	{ "nbdboot.panic= past a day", "nbdboot.panic=86401", -1, .errpart = "nbdboot.panic 86401 is out of range" },
	{ "nbdboot.wait=5", "nbdboot.wait=5", 0, .wait = 6 },
	{ "nbdboot.wait=0", "nbdboot.wait=0", 0, .wait = 1 },
	{ "nbdboot.wait=x", "nbdboot.wait=x", -1, .errpart = "nbdboot.wait 'x' is not a number" },
	{ "words after -- are init's", "ro -- rw init=relative nbdboot.panic=bad", 0 },
	{ "quoted words", "\"init=/sbin/my init\"", 0, .init = "/sbin/my init" },
	{ "ip= is read", "ip=bogus", -1, .errpart = "ip=bogus is not" },
	{ "BOOTIF= is read", "BOOTIF=xx", -1, .errpart = "BOOTIF=xx is not" },
};

static void test_boot(void)
{
	for (size_t i = 0; i < sizeof boot_cases / sizeof boot_cases[0]; i++) {
		const struct boot_case *t = &boot_cases[i];
		static struct nbd_boot b;
		char why[1024] = "", name[160];
		int panic = t->panic_s ? t->panic_s - 1 : NBD_PANIC_UNSET;
		uint32_t wait = t->wait ? t->wait - 1 : NBD_WAIT_DEFAULT;
		nbd_error_clear();
		int rc = nbd_parse_boot(&b, t->text);
		snprintf(name, sizeof name, "boot: %s", t->name);
		if (rc != t->rc)
			snprintf(why, sizeof why, "rc %d, error '%s'", rc, nbd_last_error());
		else if (rc && !strstr(nbd_last_error(), t->errpart))
			snprintf(why, sizeof why, "error '%s' lacks '%s'", nbd_last_error(), t->errpart);
		else if (!rc && (b.rw != t->rw || b.overlay != t->overlay || strcmp(b.init, S_(t->init)) ||
				 strcmp(b.overlay_size, S_(t->overlay_size)) || b.panic_s != panic ||
				 b.wait_s != wait || b.ip.given))
			snprintf(why, sizeof why, "got rw %d overlay %d '%s' init '%s' panic %d wait %u ip %d",
				 b.rw, b.overlay, b.overlay_size, b.init, b.panic_s, b.wait_s, b.ip.given);
		report(name, !why[0], why);
	}
}

/* ---- /init mode: DHCP messages ---------------------------------------------------- */

/* Where things are in an IPv4/UDP/BOOTP packet without IP options. */
enum {
	AT_UDP = IPV4_HDR_LEN, AT_BOOTP = AT_UDP + UDP_HDR_LEN,
	AT_OP = AT_BOOTP, AT_XID = AT_BOOTP + 4, AT_FLAGS = AT_BOOTP + 10,
	AT_YIADDR = AT_BOOTP + 16, AT_CHADDR = AT_BOOTP + 28, AT_SNAME = AT_BOOTP + 44,
	AT_FILE = AT_BOOTP + 108, AT_MAGIC = AT_BOOTP + 236, AT_OPTIONS = AT_BOOTP + 240,
};

static const uint8_t client_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
#define CLIENT_XID 0x11223344u

/* Options as bytes: O(53, 1, 2) is a pointer and a length. */
#define O(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
#define OFFER_OPTS 53, 1, DHCP_OFFER, 54, 4, 10, 0, 3, 1, 1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 3, 1, \
		   51, 4, 0, 0, 0x0e, 0x10
#define ACK_OPTS 53, 1, DHCP_ACK, 54, 4, 10, 0, 3, 1, 1, 4, 255, 255, 255, 0

/* A server's reply, by hand: IPv4 from 10.0.3.1 to the broadcast address,
 * UDP 67 to 68, BOOTP op 2 for CLIENT_XID and client_mac, yiaddr 10.0.3.50,
 * the magic cookie, then opts as given (no END added).  Its length. */
static size_t server_reply(uint8_t *p, const uint8_t *opts, size_t olen)
{
	size_t total = AT_OPTIONS + olen;
	uint32_t xid = htonl(CLIENT_XID);
	memset(p, 0, total);
	p[0] = 0x45;
	be16_put(p + 2, (uint16_t)total);
	p[8] = 64, p[9] = IPPROTO_UDP;
	memcpy(p + 12, "\x0a\x00\x03\x01\xff\xff\xff\xff", 8);
	be16_put(p + 10, ip_checksum(p, IPV4_HDR_LEN));
	be16_put(p + AT_UDP, DHCP_SERVER_PORT);
	be16_put(p + AT_UDP + 2, DHCP_CLIENT_PORT);
	be16_put(p + AT_UDP + 4, (uint16_t)(total - AT_UDP));
	p[AT_OP] = BOOTP_REPLY, p[AT_OP + 1] = 1, p[AT_OP + 2] = 6;
	memcpy(p + AT_XID, &xid, 4);
	memcpy(p + AT_YIADDR, "\x0a\x00\x03\x32", 4);
	memcpy(p + AT_CHADDR, client_mac, 6);
	be32_put(p + AT_MAGIC, DHCP_MAGIC_COOKIE);
	memcpy(p + AT_OPTIONS, opts, olen);
	return total;
}

static const char *parse_reply(const uint8_t *opts, size_t olen, struct nbd_lease *l)
{
	static uint8_t p[DHCP_PACKET_MAX];
	size_t n = server_reply(p, opts, olen);
	return nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, l);
}

/* An ACK with option code holding len bytes of text, into p; its length. */
static size_t ack_with(uint8_t *p, uint8_t code, const char *text, size_t len)
{
	static const uint8_t ack[] = { ACK_OPTS };
	uint8_t o[sizeof ack + 2 + 255 + 1];
	memcpy(o, ack, sizeof ack);
	o[sizeof ack] = code;
	o[sizeof ack + 1] = (uint8_t)len;
	memcpy(o + sizeof ack + 2, text, len);
	o[sizeof ack + 2 + len] = DHCP_OPT_END;
	return server_reply(p, o, sizeof ack + 3 + len);
}

static const char *parse_ack_with(uint8_t code, const char *text, size_t len, struct nbd_lease *l)
{
	static uint8_t p[DHCP_PACKET_MAX];
	size_t n = ack_with(p, code, text, len);
	return nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, l);
}

/* The value of option code in a packet nbd_dhcp_build made; NULL if absent. */
static const uint8_t *built_opt(const uint8_t *p, size_t len, uint8_t code, size_t *vlen)
{
	for (size_t i = AT_OPTIONS; i + 1 < len && p[i] != DHCP_OPT_END;) {
		if (p[i] == DHCP_OPT_PAD) {
			i++;
			continue;
		}
		if (i + 2 + p[i + 1] > len)
			return NULL;
		if (p[i] == code) {
			*vlen = p[i + 1];
			return p + i + 2;
		}
		i += 2 + p[i + 1];
	}
	return NULL;
}

static void test_dhcp_build(void)
{
	static uint8_t p[DHCP_PACKET_MAX];
	struct nbd_lease offer = { .type = DHCP_OFFER };
	const uint8_t *v;
	size_t vlen = 0, n = nbd_dhcp_build(p, sizeof p, htonl(CLIENT_XID), client_mac, 3, NULL, NULL);
	uint32_t xid;
	memcpy(&xid, p + AT_XID, 4);
	report("dhcp build: DISCOVER is an IPv4 packet of its own length, 300 bytes of BOOTP or more",
	       n >= AT_BOOTP + DHCP_MIN_LEN && p[0] == 0x45 && be16_get(p + 2) == n &&
		       be16_get(p + AT_UDP + 4) == n - AT_UDP, "wrong lengths");
	report("dhcp build: DISCOVER's IPv4 header checksum is valid", ip_checksum(p, IPV4_HDR_LEN) == 0,
	       "bad checksum");
	report("dhcp build: DISCOVER goes from 0.0.0.0 to 255.255.255.255 by UDP",
	       p[9] == IPPROTO_UDP && !memcmp(p + 12, "\0\0\0\0\xff\xff\xff\xff", 8), "wrong addresses");
	report("dhcp build: DISCOVER goes from port 68 to port 67",
	       be16_get(p + AT_UDP) == DHCP_CLIENT_PORT && be16_get(p + AT_UDP + 2) == DHCP_SERVER_PORT,
	       "wrong ports");
	report("dhcp build: DISCOVER asks for a broadcast answer", be16_get(p + AT_FLAGS) == BOOTP_BROADCAST,
	       "no broadcast flag");
	report("dhcp build: DISCOVER is a BOOTP request with the xid, MAC and magic cookie",
	       p[AT_OP] == BOOTP_REQUEST && p[AT_OP + 1] == 1 && p[AT_OP + 2] == 6 &&
		       xid == htonl(CLIENT_XID) && !memcmp(p + AT_CHADDR, client_mac, 6) &&
		       be32_get(p + AT_MAGIC) == DHCP_MAGIC_COOKIE && be16_get(p + AT_BOOTP + 8) == 3,
	       "wrong BOOTP fields");
	v = built_opt(p, n, DHCP_OPT_TYPE, &vlen);
	report("dhcp build: DISCOVER has option 53 = 1", v && vlen == 1 && v[0] == DHCP_DISCOVER, "no type");
	report("dhcp build: DISCOVER names no address and no server",
	       !built_opt(p, n, DHCP_OPT_REQUESTED_IP, &vlen) && !built_opt(p, n, DHCP_OPT_SERVER_ID, &vlen),
	       "has them");
	v = built_opt(p, n, DHCP_OPT_PARAMS, &vlen);
	report("dhcp build: DISCOVER asks for the root-path (option 17)",
	       v && memchr(v, DHCP_OPT_ROOT_PATH, vlen) && memchr(v, DHCP_OPT_NETMASK, vlen), "not asked");
	report("dhcp build: the parser refuses a client's own DISCOVER",
	       nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, &offer) != NULL, "parsed");
	offer = (struct nbd_lease){ .type = DHCP_OFFER, .addr = addr_of("10.0.3.50"),
				    .server_id = addr_of("10.0.3.1") };
	n = nbd_dhcp_build(p, sizeof p, htonl(CLIENT_XID), client_mac, 0, &offer, "box");
	v = built_opt(p, n, DHCP_OPT_TYPE, &vlen);
	report("dhcp build: REQUEST has option 53 = 3", v && vlen == 1 && v[0] == DHCP_REQUEST, "no type");
	v = built_opt(p, n, DHCP_OPT_REQUESTED_IP, &vlen);
	report("dhcp build: REQUEST names the offered address (option 50)",
	       v && vlen == 4 && !memcmp(v, &offer.addr, 4), "missing");
	v = built_opt(p, n, DHCP_OPT_SERVER_ID, &vlen);
	report("dhcp build: REQUEST names the offering server (option 54)",
	       v && vlen == 4 && !memcmp(v, &offer.server_id, 4), "missing");
	v = built_opt(p, n, DHCP_OPT_HOSTNAME, &vlen);
	report("dhcp build: the ip= host name goes in option 12", v && vlen == 3 && !memcmp(v, "box", 3),
	       "missing");
	report("dhcp build: a buffer too small gets nothing",
	       nbd_dhcp_build(p, AT_BOOTP + DHCP_MIN_LEN - 1, 1, client_mac, 0, NULL, NULL) == 0, "built");
}

/* Option overload (52): more options in file (1), sname (2), or both (3):
 * an ACK with its server id and netmask in file, its root-path in sname. */
static size_t overload_reply(uint8_t *p)
{
	size_t n = server_reply(p, O(53, 1, DHCP_ACK, 52, 1, 3, 255));
	memcpy(p + AT_FILE, "\x36\x04\x0a\x00\x03\x01\x01\x04\xff\xff\x00\x00\xff", 13);
	memcpy(p + AT_SNAME, "\x11\x05/boot\xff", 8);
	return n;
}

static void test_dhcp_parse(void)
{
	struct nbd_lease l;
	const char *why;
	why = parse_reply(O(OFFER_OPTS, 6, 8, 10, 0, 3, 53, 10, 0, 3, 54, 255), &l);
	report("dhcp parse: an OFFER with netmask, router, DNS, lease and server id",
	       !why && l.type == DHCP_OFFER && l.addr == addr_of("10.0.3.50") &&
		       l.netmask == addr_of("255.255.255.0") && l.router == addr_of("10.0.3.1") &&
		       l.server_id == addr_of("10.0.3.1") && l.lease_s == 3600 && l.ndns == 2 &&
		       l.dns[0] == addr_of("10.0.3.53") && l.dns[1] == addr_of("10.0.3.54"),
	       why ? why : "wrong fields");
	why = parse_ack_with(DHCP_OPT_ROOT_PATH, "nbd:10.0.3.1:10809:ext4", 23, &l);
	report("dhcp parse: an ACK with a root-path",
	       !why && l.type == DHCP_ACK && !strcmp(l.root_path, "nbd:10.0.3.1:10809:ext4"), why ? why : l.root_path);
	why = parse_ack_with(DHCP_OPT_ROOT_PATH, "10.0.3.1:10809/rootfs", 22, &l);
	report("dhcp parse: a root-path that counts its NUL", !why && !strcmp(l.root_path, "10.0.3.1:10809/rootfs"),
	       why ? why : l.root_path);
	static char longest[256];
	memset(longest, 'r', 255);
	why = parse_ack_with(DHCP_OPT_ROOT_PATH, longest, 255, &l);
	report("dhcp parse: a root-path of 255 bytes", !why && strlen(l.root_path) == 255, why ? why : "cut");
	why = parse_reply(O(ACK_OPTS, 6, 4, 10, 0, 3, 53, 255), &l);
	report("dhcp parse: one DNS server", !why && l.ndns == 1 && l.dns[0] == addr_of("10.0.3.53"),
	       why ? why : "wrong");
	why = parse_reply(O(ACK_OPTS, 6, 16, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 255), &l);
	report("dhcp parse: four DNS servers are cut to three",
	       !why && l.ndns == NBD_DNS_MAX && l.dns[2] == addr_of("3.3.3.3"), why ? why : "wrong");
	why = parse_ack_with(DHCP_OPT_HOSTNAME, "box-1", 6, &l);
	report("dhcp parse: a host name (its NUL dropped)", !why && !strcmp(l.hostname, "box-1"),
	       why ? why : l.hostname);
	why = parse_ack_with(DHCP_OPT_DOMAIN, "ex.lan.", 7, &l);
	report("dhcp parse: a domain name", !why && !strcmp(l.domain, "ex.lan."), why ? why : l.domain);
	why = parse_ack_with(DHCP_OPT_HOSTNAME, "a b_c", 5, &l);
	report("dhcp parse: a host name with bad characters is dropped, the reply kept",
	       !why && l.type == DHCP_ACK && !l.hostname[0], why ? why : l.hostname);
	why = parse_ack_with(DHCP_OPT_DOMAIN, "a\0b", 3, &l);
	report("dhcp parse: a domain with a NUL inside is dropped, the reply kept", !why && !l.domain[0],
	       why ? why : l.domain);
	why = parse_ack_with(DHCP_OPT_HOSTNAME, longest, 64, &l);
	report("dhcp parse: a host name of 64 bytes is dropped", !why && !l.hostname[0], why ? why : l.hostname);
	why = parse_reply(O(53, 1, DHCP_ACK, 54, 4, 10, 0, 3, 1, 255), &l);
	report("dhcp parse: no netmask: the classful one (10/8)", !why && l.netmask == addr_of("255.0.0.0"),
	       why ? why : "wrong");
	report("dhcp parse: classful netmasks of classes B and C",
	       classful_mask(addr_of("172.16.1.2")) == addr_of("255.255.0.0") &&
		       classful_mask(addr_of("192.168.1.2")) == addr_of("255.255.255.0") &&
		       classful_mask(addr_of("127.0.0.1")) == addr_of("255.0.0.0"), "wrong");
	why = parse_reply(O(53, 1, DHCP_NAK, 54, 4, 10, 0, 3, 1, 56, 4, 'g', 'o', 'n', 'e', 255), &l);
	report("dhcp parse: a NAK", !why && l.type == DHCP_NAK, why ? why : "wrong type");
	why = parse_reply(O(0, 0, ACK_OPTS, 0, 255, 17, 3, 'a', ' ', 'b'), &l);
	report("dhcp parse: pads are skipped and nothing after END is read", !why && l.type == DHCP_ACK,
	       why ? why : "refused");

	static uint8_t p[DHCP_PACKET_MAX];
	size_t n = overload_reply(p);
	why = nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, &l);
	report("dhcp parse: option overload: options in file and sname",
	       !why && l.server_id == addr_of("10.0.3.1") && l.netmask == addr_of("255.255.0.0") &&
		       !strcmp(l.root_path, "/boot"), why ? why : "missed");
	n = server_reply(p, O(54, 4, 10, 0, 3, 1, 52, 1, 2, 255));
	memcpy(p + AT_SNAME, "\x35\x01\x02\xff", 4);
	memcpy(p + AT_FILE, "\x35\x01\x06\xff", 4);
	why = nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, &l);
	report("dhcp parse: option overload 2 reads sname only", !why && l.type == DHCP_OFFER,
	       why ? why : "wrong");
	n = server_reply(p, O(ACK_OPTS, 255));
	memcpy(p + AT_FILE, "\x11\x03\x20\x20\x20\xff", 6);
	why = nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, &l);
	report("dhcp parse: without overload, file is a file name", !why && !l.root_path[0], why ? why : "read");

	n = server_reply(p, O(OFFER_OPTS, 255));
	memmove(p + IPV4_HDR_LEN + 4, p + IPV4_HDR_LEN, n - IPV4_HDR_LEN);
	memcpy(p + IPV4_HDR_LEN, "\x94\x04\0\0", 4); /* router alert */
	p[0] = 0x46;
	be16_put(p + 2, (uint16_t)(n + 4));
	why = nbd_dhcp_parse(p, n + 4, htonl(CLIENT_XID), client_mac, &l);
	report("dhcp parse: IPv4 options are skipped", !why && l.type == DHCP_OFFER, why ? why : "wrong");
	n = server_reply(p, O(OFFER_OPTS, 255));
	p[6] = 0x40;
	why = nbd_dhcp_parse(p, n + 100, htonl(CLIENT_XID), client_mac, &l);
	report("dhcp parse: don't-fragment, and bytes past the IPv4 length, are fine",
	       !why && l.type == DHCP_OFFER, why ? why : "refused");
}

struct dhcp_bad {
	const char *name;
	const uint8_t *opts;
	size_t olen;
	int at, width;  /* a field of the packet, 1, 2 or 4 bytes wide (width 0: none) ... */
	uint32_t val;   /* ... set to this, big-endian */
	size_t cut;     /* the packet's length, when not 0 */
	const char *errpart;
};

static const struct dhcp_bad dhcp_bad[] = {
	{ "wrong xid", O(OFFER_OPTS, 255), AT_XID, 4, CLIENT_XID + 1, 0, "not a reply to this client" },
	{ "wrong MAC", O(OFFER_OPTS, 255), AT_CHADDR + 5, 1, 0x57, 0, "not a reply to this client" },
	{ "a request (op 1)", O(OFFER_OPTS, 255), AT_OP, 1, BOOTP_REQUEST, 0, "not a reply to this client" },
	{ "a hardware address of 8 bytes", O(OFFER_OPTS, 255), AT_OP + 2, 1, 8, 0, "not a reply to this client" },
	{ "no magic cookie", O(OFFER_OPTS, 255), AT_MAGIC, 4, 0x63825364, 0, "without DHCP's magic cookie" },
	{ "shorter than BOOTP", O(OFFER_OPTS, 255), AT_UDP + 4, 2, UDP_HDR_LEN + 200, 0, "shorter than a BOOTP" },
	{ "a truncated option (code, no length)", O(53, 1, DHCP_OFFER, 54, 4, 10, 0, 3, 1, 1), 0, 0, 0, 0,
	  "runs past the end" },
	{ "an option length past the end", O(53, 1, DHCP_OFFER, 54, 4, 10, 0, 3, 1, 1, 5, 255, 255), 0, 0, 0, 0,
	  "runs past the end" },
	{ "a netmask of 3 bytes", O(53, 1, DHCP_OFFER, 54, 4, 10, 0, 3, 1, 1, 3, 255, 255, 255, 255), 0, 0, 0, 0,
	  "wrong length (netmask" },
	{ "a server id of 5 bytes", O(53, 1, DHCP_OFFER, 54, 5, 10, 0, 3, 1, 1, 255), 0, 0, 0, 0, "wrong length" },
	{ "a lease time of 2 bytes", O(OFFER_OPTS, 51, 2, 1, 1, 255), 0, 0, 0, 0, "wrong length" },
	{ "a router list of 6 bytes", O(OFFER_OPTS, 3, 6, 1, 2, 3, 4, 5, 6, 255), 0, 0, 0, 0,
	  "not a list of addresses" },
	{ "an empty DNS list", O(OFFER_OPTS, 6, 0, 255), 0, 0, 0, 0, "not a list of addresses" },
	{ "a message type of 2 bytes", O(53, 2, DHCP_OFFER, 0, 54, 4, 10, 0, 3, 1, 255), 0, 0, 0, 0,
	  "message type or overload option of the wrong length" },
	{ "a netmask that is not contiguous", O(OFFER_OPTS, 1, 4, 255, 0, 255, 0, 255), 0, 0, 0, 0,
	  "netmask that is not contiguous" },
	{ "no server id", O(53, 1, DHCP_OFFER, 1, 4, 255, 255, 255, 0, 255), 0, 0, 0, 0, "no server identifier" },
	{ "no message type (BOOTP)", O(54, 4, 10, 0, 3, 1, 255), 0, 0, 0, 0, "neither an offer" },
	{ "a DHCPDISCOVER's type", O(53, 1, DHCP_DISCOVER, 54, 4, 10, 0, 3, 1, 255), 0, 0, 0, 0, "neither an offer" },
	{ "yiaddr 0.0.0.0", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0, 0, "an address no host can have" },
	{ "yiaddr 255.255.255.255", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0xffffffff, 0, "an address no host can have" },
	{ "yiaddr 0.1.2.3", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0x00010203, 0, "an address no host can have" },
	{ "yiaddr 127.0.0.1", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0x7f000001, 0, "an address no host can have" },
	{ "yiaddr 224.0.0.251 (multicast)", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0xe00000fb, 0,
	  "an address no host can have" },
	{ "yiaddr 240.0.0.1 (class E)", O(OFFER_OPTS, 255), AT_YIADDR, 4, 0xf0000001, 0,
	  "an address no host can have" },
	{ "a root-path with a space", O(ACK_OPTS, 17, 5, 'a', ' ', 'b', 'c', 'd', 255), 0, 0, 0, 0,
	  "root-path (option 17) with spaces or unprintable" },
	{ "a root-path with a control byte", O(ACK_OPTS, 17, 4, 'a', '\n', 'b', 'c', 255), 0, 0, 0, 0,
	  "root-path (option 17) with spaces or unprintable" },
	{ "a root-path with a NUL inside", O(ACK_OPTS, 17, 4, 'a', 0, 'b', 'c', 255), 0, 0, 0, 0,
	  "root-path (option 17) with spaces or unprintable" },
	{ "a root-path with a byte above 0x7e", O(ACK_OPTS, 17, 4, 'a', 0x80, 'b', 'c', 255), 0, 0, 0, 0,
	  "root-path (option 17) with spaces or unprintable" },
	{ "an empty root-path", O(ACK_OPTS, 17, 1, 0, 255), 0, 0, 0, 0, "root-path (option 17) that is empty" },
	{ "an IP fragment (more fragments)", O(OFFER_OPTS, 255), 6, 1, 0x20, 0, "not a whole UDP datagram" },
	{ "an IP fragment (an offset)", O(OFFER_OPTS, 255), 6, 2, 1, 0, "not a whole UDP datagram" },
	{ "not UDP", O(OFFER_OPTS, 255), 9, 1, IPPROTO_TCP, 0, "not a whole UDP datagram" },
	{ "not IPv4", O(OFFER_OPTS, 255), 0, 1, 0x65, 0, "not an IPv4 packet" },
	{ "an IPv4 header shorter than 20 bytes", O(OFFER_OPTS, 255), 0, 1, 0x44, 0, "bad lengths" },
	{ "an IPv4 length past the packet", O(OFFER_OPTS, 255), 2, 2, 0x7fff, 0, "bad lengths" },
	{ "an IPv4 length too short for UDP", O(OFFER_OPTS, 255), 2, 2, IPV4_HDR_LEN + UDP_HDR_LEN - 1, 0,
	  "bad lengths" },
	{ "a packet cut short of its IPv4 length", O(OFFER_OPTS, 255), 0, 0, 0, 200, "bad lengths" },
	{ "a packet of 19 bytes", O(OFFER_OPTS, 255), 0, 0, 0, 19, "not an IPv4 packet" },
	{ "a UDP length past the IPv4 packet", O(OFFER_OPTS, 255), AT_UDP + 4, 2, 0x7fff, 0,
	  "UDP datagram with a bad length" },
	{ "a UDP length below its header", O(OFFER_OPTS, 255), AT_UDP + 4, 2, 7, 0, "UDP datagram with a bad length" },
	{ "to the DHCP server port", O(OFFER_OPTS, 255), AT_UDP + 2, 2, DHCP_SERVER_PORT, 0,
	  "not for the DHCP client port" },
};

/* The case's packet into p; its length. */
static size_t bad_reply(uint8_t *p, const struct dhcp_bad *t)
{
	size_t n = server_reply(p, t->opts, t->olen);
	for (int b = 0; b < t->width; b++)
		p[t->at + b] = (uint8_t)(t->val >> 8 * (t->width - 1 - b));
	return t->cut ? t->cut : n;
}

static void test_dhcp_refusals(void)
{
	static uint8_t p[DHCP_PACKET_MAX];
	for (size_t i = 0; i < sizeof dhcp_bad / sizeof dhcp_bad[0]; i++) {
		const struct dhcp_bad *t = &dhcp_bad[i];
		struct nbd_lease l;
		char name[128];
		size_t n = bad_reply(p, t);
		const char *why = nbd_dhcp_parse(p, n, htonl(CLIENT_XID), client_mac, &l);
		snprintf(name, sizeof name, "dhcp parse: refused: %s", t->name);
		report(name, why && strstr(why, t->errpart), why ? why : "accepted");
		/* only a reply to this client counts as "unusable" when DHCP gives up */
		static const char *const before[] = { "not a reply to this client", "shorter than a BOOTP",
			"UDP datagram with a bad length", "bad lengths", "not a whole UDP", "not an IPv4",
			"not for the DHCP client port" };
		bool ours = true;
		for (size_t k = 0; k < sizeof before / sizeof before[0]; k++)
			ours = ours && !strstr(t->errpart, before[k]);
		snprintf(name, sizeof name, "dhcp parse: %s is %s", t->name,
			 ours ? "a reply to this client" : "not a reply to this client");
		report(name, l.for_us == ours, "for_us wrong");
	}
}

/* ---- /init mode: modules.alias patterns and module names --------------------------- */

struct glob_case {
	const char *pattern, *name;
	bool match;
};

static const struct glob_case glob_cases[] = {
	{ "*", "", true },
	{ "*", "anything", true },
	{ "", "", true },
	{ "", "a", false },
	{ "fs-ext4", "fs-ext4", true },
	{ "fs-ext4", "fs-ext3", false },
	{ "fs-ext4", "fs-ext4x", false },
	{ "fs-ext?", "fs-ext4", true },
	{ "fs-ext?", "fs-ext", false },
	{ "crc32c*", "crc32c", true },
	{ "crc32c*", "crc32c-intel", true },
	{ "crc32c*", "crc32", false },
	{ "[a-z]x", "qx", true },
	{ "[a-z]x", "Qx", false },
	{ "[!0-9]x", "ax", true },
	{ "[!0-9]x", "5x", false },
	{ "[^0-9]x", "5x", false },
	{ "[]a]", "]", true },
	{ "[a-]", "-", true },
	{ "a[bc", "a[bc", true },
	{ "a[bc", "ab", false },
	{ "a*b*c", "aXXbYYbZZc", true },
	{ "a*b*c", "aXXbYYbZZ", false },
	{ "*ab", "aaab", true },
	{ "usb:v*p*d*dc*dsc*dp*ic*isc*ip*in*", "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip02in00", true },
	{ "usb:v*p*d*dc*dsc*dp*ic03isc*ip*in*", "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip02in00", true },
	{ "usb:v*p*d*dc*dsc*dp*ic03isc01ip01in*", "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip02in00", false },
	{ "pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", true },
	{ "pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00", false },
	{ "pci:v00001AF4d00001000sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true },
	{ "pci:v*d*sv*sd*bc02sc00i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true },
	{ "pci:v*d*sv*sd*bc02sc00i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc01sc00i00", false },
	{ "virtio:d00000001v*", "virtio:d00000001v00001AF4", true },
	{ "virtio:d00000001v*", "virtio:d00000002v00001AF4", false },
	{ "acpi*:PNP0A03:*", "acpi:PNP0A03:", true },
};

static void test_glob(void)
{
	for (size_t i = 0; i < sizeof glob_cases / sizeof glob_cases[0]; i++) {
		const struct glob_case *t = &glob_cases[i];
		char name[256];
		snprintf(name, sizeof name, "modules: '%s' %s '%s'", t->pattern,
			 t->match ? "matches" : "does not match", t->name);
		report(name, glob_match(t->pattern, t->name) == t->match, "wrong");
	}
	char many[200], name[4000];
	memset(many, '*', sizeof many - 1);
	many[sizeof many - 1] = 0;
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = 0;
	int64_t t0 = nbd_now_ms();
	bool ok = glob_match(many, name);
	strcpy(many + 100, "b");
	ok = ok && !glob_match(many, name);
	report("modules: 199 '*' against 3999 bytes, matching and not, at once",
	       ok && nbd_now_ms() - t0 < 1000, "slow or wrong");
}

struct modname_case {
	const char *path, *name;
};

static const struct modname_case modname_cases[] = {
	{ "kernel/fs/ext4/ext4.ko:", "ext4" },
	{ "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko", "ext4" },
	{ "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", "e1000e" },
	{ "kernel/arch/x86/crypto/crc32c-intel.ko", "crc32c_intel" },
	{ "kernel/drivers/block/nbd.ko.xz:", "nbd" },
	{ "updates/dkms/my-mod.ko.zst: kernel/a/b.ko", "my_mod" },
	{ "nbd.ko", "nbd" },
};

static void test_module_name(void)
{
	for (size_t i = 0; i < sizeof modname_cases / sizeof modname_cases[0]; i++) {
		const struct modname_case *t = &modname_cases[i];
		char out[64], name[200];
		module_name(t->path, strlen(t->path), out, sizeof out);
		snprintf(name, sizeof name, "modules: '%s' is module %s", t->path, t->name);
		report(name, !strcmp(out, t->name), out);
	}
	char small[5];
	module_name("kernel/x/longname.ko", 20, small, sizeof small);
	report("modules: a module name is cut to the buffer", !strcmp(small, "long"), small);
}

/* NAME.PARAM=VALUE words of the kernel command line become module NAME's
 * parameters ('-' and '_' alike in the name), in command-line order. */
static void test_module_params(void)
{
	static const struct { const char *cmdline, *module, *want; } cases[] = {
		{ "quiet nbd.nbds_max=4 e1000.debug=16 nbd.max_part=8 nbdx.y=1", "nbd", "nbds_max=4 max_part=8" },
		{ "quiet nbd.nbds_max=4", "e1000", "" },
		{ "crc32c-intel.foo=1 crc32c_intel.bar=2", "crc32c_intel", "foo=1 bar=2" },
		{ "nbd.flag nbd.=3 nbd", "nbd", "" }, /* no '=': not a parameter */
		{ "root=nbd:srv:10809 nbd.x=\"a b\"", "nbd", "x=\"a b\"" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char out[512], name[200];
		fmt(init_st.cmdline, sizeof init_st.cmdline, "%s", cases[i].cmdline);
		module_params(cases[i].module, out, sizeof out);
		snprintf(name, sizeof name, "modules: '%s' gives %s '%s'", cases[i].cmdline, cases[i].module,
			 cases[i].want);
		report(name, !strcmp(out, cases[i].want), out);
	}
	init_st.cmdline[0] = 0;
}

/* ---- TLS pieces that need no server ----------------------------------------------- */

#if NBDBOOT_TLS
static void test_ktls_layout(void)
{
	struct ktls_info ki;
	struct ktls_dir d = { .cipher = TLS_CIPHER_AES_GCM_128, .key_len = 16 };
	memset(d.key, 0xaa, 16);
	memcpy(d.iv, "\x01\x02\x03\x04", 4);
	size_t len = ktls_fill(&ki, &d, 0x0102030405060708ULL);
	report("ktls: AES-GCM-128 info has the kernel's 40-byte layout",
	       len == 40 && ki.version == 0x0303 && ki.cipher == 51 &&
		       be64_get(ki.rest) == 0x0102030405060708ULL && ki.rest[8] == 0xaa &&
		       !memcmp(ki.rest + 24, "\x01\x02\x03\x04", 4) &&
		       be64_get(ki.rest + 28) == 0x0102030405060708ULL,
	       "wrong layout");
	d.cipher = TLS_CIPHER_AES_GCM_256;
	d.key_len = 32;
	report("ktls: AES-GCM-256 info is 56 bytes with salt after the key",
	       ktls_fill(&ki, &d, 9) == 56 && !memcmp(ki.rest + 40, "\x01\x02\x03\x04", 4) &&
		       be64_get(ki.rest + 44) == 9,
	       "wrong layout");
	d.cipher = TLS_CIPHER_CHACHA20_POLY1305;
	memset(d.iv, 0x11, 12);
	report("ktls: ChaCha20-Poly1305 info is 56 bytes, 12-byte iv, no salt",
	       ktls_fill(&ki, &d, 7) == 56 && ki.rest[11] == 0x11 && ki.rest[12] == 0xaa &&
		       be64_get(ki.rest + 44) == 7,
	       "wrong layout");
}

static void test_pem_errors(void)
{
	char path[] = "/tmp/nbdboot-unit-pemXXXXXX";
	int fd = mkstemp(path);
	bool ok;
	if (fd < 0 || write(fd, "not a pem file\n", 15) != 15)
		abort();
	close(fd);
	tls.nanchors = 0;
	tls.pool_used = 0;
	ok = load_pem(path, PEM_ANCHORS) == -1 && strstr(nbd_last_error(), "has no certificate");
	report("tls: a CA file without certificates is refused", ok, nbd_last_error());
	fd = open(path, O_WRONLY | O_TRUNC);
	if (write(fd, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 58) != 58)
		abort();
	close(fd);
	ok = load_pem(path, PEM_ANCHORS) == -1 && strstr(nbd_last_error(), "cannot be decoded");
	report("tls: a garbage certificate is refused", ok, nbd_last_error());
	ok = load_pem("/nonexistent/ca.pem", PEM_ANCHORS) == -1 &&
	     strstr(nbd_last_error(), "unable to open /nonexistent/ca.pem") &&
	     nbd_last_error_class() == EXIT_USAGE;
	report("tls: a missing CA file is a usage error", ok, nbd_last_error());
	unlink(path);
}
#endif

#if NBDBOOT_TLS
/* A certificate skeleton: SEQUENCE { SEQUENCE { [0] version, [3] { SEQUENCE {
 * Extension... } } } }, with one subjectAltName holding the given names. */
static size_t der_cert(uint8_t *out, const uint8_t *names, size_t nlen, bool critical)
{
	uint8_t san[256], ext[300], exts[320], tbs[340];
	size_t n = 0, e = 0, x = 0, t = 0, o = 0;
	san[n++] = 0x04, san[n++] = (uint8_t)(nlen + 2), san[n++] = 0x30, san[n++] = (uint8_t)nlen;
	memcpy(san + n, names, nlen), n += nlen;
	ext[e++] = 0x30, ext[e++] = (uint8_t)(5 + (critical ? 3 : 0) + n);
	memcpy(ext + e, "\x06\x03\x55\x1d\x11", 5), e += 5;
	if (critical)
		memcpy(ext + e, "\x01\x01\xff", 3), e += 3;
	memcpy(ext + e, san, n), e += n;
	exts[x++] = 0xa3, exts[x++] = (uint8_t)(e + 2), exts[x++] = 0x30, exts[x++] = (uint8_t)e;
	memcpy(exts + x, ext, e), x += e;
	tbs[t++] = 0x30, tbs[t++] = (uint8_t)(x + 5);
	memcpy(tbs + t, "\xa0\x03\x02\x01\x02", 5), t += 5;
	memcpy(tbs + t, exts, x), t += x;
	out[o++] = 0x30, out[o++] = 0x81, out[o++] = (uint8_t)t;
	memcpy(out + o, tbs, t);
	return o + t;
}

static void test_der(void)
{
	static const uint8_t ip4[] = { 10, 0, 2, 2 }, names[] = {
		0x82, 0x08, 'n', 'b', 'd', '.', 't', 'e', 's', 't', /* dNSName */
		0x87, 0x04, 10, 0, 2, 2,                            /* iPAddress */
	};
	uint8_t cert[400], tag = 0x55;
	const uint8_t *p, *val = NULL;
	size_t len = 77, n;
	bool ok = true;
	n = der_cert(cert, names, sizeof names, false);
	report("der: an iPAddress SAN is found", nbd_cert_has_ip(cert, n, ip4, 4), "not found");
	report("der: another address is not", !nbd_cert_has_ip(cert, n, (const uint8_t *)"\x0a\0\2\3", 4),
	       "found");
	n = der_cert(cert, names, sizeof names, true);
	report("der: a critical subjectAltName is read too", nbd_cert_has_ip(cert, n, ip4, 4),
	       "not found");
	for (size_t cut = 0; cut < n; cut++)
		ok = ok && !nbd_cert_has_ip(cert, cut, ip4, 4);
	report("der: every truncation of the certificate is a clean 'no'", ok, "found in a cut");
	/* a length byte claiming more than is there: 0x84 (four length bytes) */
	p = cert;
	ok = !der_next(&p, cert + 3, &tag, &val, &len) && tag == 0x55 && val == NULL && len == 77 &&
	     p == cert;
	report("der: a failed element leaves tag, value and length untouched", ok, "outputs changed");
	static const uint8_t bad_ext[] = { 0x30, 0x0c, 0x30, 0x0a, 0xa3, 0x84, 0xff, 0xff, 0xff,
					   0xff, 0x30, 0x00, 0x00, 0x00 };
	report("der: a malformed extensions length is a clean 'no'",
	       !nbd_cert_has_ip(bad_ext, sizeof bad_ext, ip4, 4), "found");
	static const uint8_t bad_san[] = { 0x87, 0x09, 10, 0, 2, 2 };
	n = der_cert(cert, bad_san, sizeof bad_san, false);
	report("der: an iPAddress longer than its SAN is a clean 'no'",
	       !nbd_cert_has_ip(cert, n, ip4, 4), "found");
}

#endif

/* ---- Output: a failure on stdout counts, one on stderr does not ---------------- */

static void test_output_failures(void)
{
	int saved1 = dup(1), saved2 = dup(2), full = open("/dev/full", O_WRONLY);
	bool ok;
	fflush(stdout);
	memset(&output, 0, sizeof output);
	dup2(full, 2);
	say("a diagnostic nobody can read");
	ok = output.failed_errno == 0;
	dup2(full, 1);
	out("the result: %d\n", 42);
	out("more\n");
	dup2(saved1, 1);
	dup2(saved2, 2);
	report("output: a failed stderr write leaves the outcome alone", ok, "stderr failure counted");
	report("output: a failed stdout write is kept (the first errno)",
	       output.failed_errno == ENOSPC, strerror(output.failed_errno));
	memset(&output, 0, sizeof output);
	char big[5000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	dup2(full, 1);
	out("%s", big);
	dup2(saved1, 1);
	report("output: a line longer than out()'s buffer is a failure, never cut silently",
	       output.failed_errno == EMSGSIZE, strerror(output.failed_errno));
	memset(&output, 0, sizeof output);
	close(full);
	close(saved1);
	close(saved2);
}

/* ---- Netlink: the message bound and the reply parser -------------------------- */

/* Walk m's attributes (one level): count those of type t, 0 if malformed. */
static int nl_count(const uint8_t *p, size_t len, uint16_t t)
{
	int n = 0;
	for (size_t a = 0; a + 4 <= len;) {
		struct nl_attr at;
		memcpy(&at, p + a, sizeof at);
		if (at.len < 4 || at.len > len - a)
			return 0;
		n += (at.type & NLA_TYPE_MASK) == t;
		a += NL_ALIGN(at.len);
	}
	return n;
}

static void test_netlink_build(void)
{
	static struct attach a;
	static struct nbd_config cfg;
	static struct nlmsg m;
	config_defaults(&cfg);
	memset(cfg.host, 'h', NBD_HOST_MAX);
	cfg.host[NBD_HOST_MAX] = 0;
	strcpy(cfg.port, "65535");
	cfg.timeout = 30;
	cfg.dead_timeout = 60;
	memset(&a, 0, sizeof a);
	a.cfg = &cfg;
	a.index = 15;
	a.nfds = NBD_CONNS_MAX;
	for (unsigned i = 0; i < a.nfds; i++)
		a.fds[i] = (int)(100 + i);
	nl_connect_msg(&m, &a, 42);
	size_t hdr = sizeof(struct nl_hdr) + sizeof(struct genl_hdr);
	report("netlink: CONNECT with 64 connections and a 255-byte host fits the buffer",
	       !m.overflow && m.len <= sizeof m.buf && m.len > 1024, "overflow");
	struct nl_attr socks;
	size_t at = hdr + NL_ATTR_SPACE(4) + 5 * NL_ATTR_SPACE(8);
	memcpy(&socks, m.buf + at, sizeof socks);
	report("netlink: ... with all 64 socket items and the whole identifier",
	       (socks.type & NLA_TYPE_MASK) == NBD_ATTR_SOCKETS &&
		       nl_count(m.buf + at + 4, socks.len - 4u, NBD_SOCK_ITEM) == NBD_CONNS_MAX &&
		       nl_count(m.buf + hdr, m.len - hdr, NBD_ATTR_BACKEND_IDENTIFIER) == 1 &&
		       m.len == NL_MSG_MAX,
	       "attributes missing");
	static uint8_t big[NL_MSG_MAX];
	nl_start(&m, 42, NBD_CMD_CONNECT);
	nl_put(&m, 1, big, sizeof big - 64);
	size_t len = m.len;
	nl_put(&m, 2, big, 64);
	report("netlink: an attribute that does not fit is refused, nothing written past the end",
	       m.overflow && m.len == len, "accepted");
	report("netlink: a message that overflowed is never sent", nl_send(-1, &m) == -EMSGSIZE,
	       "sent");
	nl_start(&m, 42, NBD_CMD_CONNECT);
	nl_nest(&m, 1);
	nl_nest(&m, 2);
	nl_nest(&m, 3);
	report("netlink: nesting deeper than the buffer's bookkeeping is refused", m.overflow,
	       "accepted");
}

static void test_request_limit(void)
{
	static struct attach a;
	static struct nbd_config cfg;
	config_defaults(&cfg);
	memset(&a, 0, sizeof a);
	a.cfg = &cfg;
	a.ex.size = 1 << 20;
	a.ex.has_block_sizes = true;
	a.ex.min_block = 512;
	a.ex.pref_block = 4096;
	a.ex.max_block = 16384;
	report("request limit: a 16 KiB maximum is 16 KiB of max_sectors_kb",
	       choose_block_size(&a) == 0 && request_limit_kb(&a.ex) == 16, nbd_last_error());
	a.ex.max_block = 50000;
	report("request limit: an odd maximum rounds down to whole KiB",
	       request_limit_kb(&a.ex) == 48, "wrong");
	a.ex.max_block = NBD_BLOCK_MAX_ANY;
	report("request limit: no maximum, no limit", request_limit_kb(&a.ex) == 0, "wrong");
	a.ex.has_block_sizes = false;
	a.ex.max_block = 1024;
	report("request limit: no block sizes advertised, no limit", request_limit_kb(&a.ex) == 0,
	       "wrong");
	a.ex.has_block_sizes = true;
	a.ex.pref_block = 1024;
	a.ex.max_block = 2048;
	report("request limit: a maximum below one page is refused before attaching",
	       choose_block_size(&a) == -1 &&
		       strstr(nbd_last_error(), "the server takes requests of at most 2048 bytes"),
	       nbd_last_error());
}

/* A reply datagram: header, genl header, attributes. */
static size_t nl_reply(uint8_t *b, uint16_t type, const void *attrs, size_t alen)
{
	struct nl_hdr h = { .len = (uint32_t)(sizeof h + 4 + alen), .type = type };
	memcpy(b, &h, sizeof h);
	memset(b + sizeof h, 0, 4);
	memcpy(b + sizeof h + 4, attrs, alen);
	return NL_ALIGN(h.len);
}

static size_t nl_ack(uint8_t *b, int32_t e)
{
	struct nl_hdr h = { .len = sizeof h + 4 + sizeof h, .type = NLMSG_ERROR_TYPE };
	memcpy(b, &h, sizeof h);
	memcpy(b + sizeof h, &e, 4);
	memset(b + sizeof h + 4, 0, sizeof h);
	return h.len;
}

/* The reply walk with the one-attribute visitor, as nl_recv() uses it. */
static int nl_parse(const uint8_t *rx, size_t n, uint16_t want, uint32_t *out)
{
	struct nl_want w = { want, out };
	return nl_walk(rx, n, want_visit, &w);
}

/* attribute TYPE with LEN bytes of payload at b; its aligned size */
static size_t put_attr(uint8_t *b, uint16_t type, const void *data, size_t len)
{
	struct nl_attr at = { .len = (uint16_t)(4 + len), .type = type };
	memcpy(b, &at, 4);
	if (len)
		memcpy(b + 4, data, len);
	memset(b + 4 + len, 0, NL_ALIGN(4 + len) - 4 - len);
	return NL_ALIGN(4 + len);
}

static void test_netlink_monitor(void)
{
	uint8_t b[512], attrs[256], nest[128], item[64];
	size_t n, a, ni, ii;
	uint16_t fam = 0x21;
	uint32_t grp = 7, other = 3, idx = 2;
	uint8_t one = 1;
	struct nl_group g = { 0, 0 };
	struct nl_status st = { 2, -1 };
	/* GETFAMILY: id, then two groups, ours second */
	ii = put_attr(item, CTRL_ATTR_MCAST_GRP_NAME, "other", 6);
	ii += put_attr(item + ii, CTRL_ATTR_MCAST_GRP_ID, &other, 4);
	ni = put_attr(nest, 1 | NLA_F_NESTED_FLAG, item, ii);
	ii = put_attr(item, CTRL_ATTR_MCAST_GRP_ID, &grp, 4);
	ii += put_attr(item + ii, CTRL_ATTR_MCAST_GRP_NAME, NBD_GENL_MCAST_GROUP,
		       sizeof NBD_GENL_MCAST_GROUP);
	ni += put_attr(nest + ni, 2 | NLA_F_NESTED_FLAG, item, ii);
	a = put_attr(attrs, CTRL_ATTR_FAMILY_ID, &fam, 2);
	a += put_attr(attrs + a, CTRL_ATTR_MCAST_GROUPS | NLA_F_NESTED_FLAG, nest, ni);
	n = nl_reply(b, GENL_ID_CTRL, attrs, a);
	n += nl_ack(b + n, 0);
	report("netlink: the family's multicast group is found by name",
	       nl_walk(b, n, group_visit, &g) == 0 && g.family == 0x21 && g.group == 7, "wrong");
	/* STATUS: DEVICE_LIST > DEVICE_ITEM > INDEX, CONNECTED */
	ii = put_attr(item, NBD_DEVICE_INDEX, &idx, 4);
	ii += put_attr(item + ii, NBD_DEVICE_CONNECTED, &one, 1);
	ni = put_attr(nest, NBD_DEVICE_ITEM | NLA_F_NESTED_FLAG, item, ii);
	a = put_attr(attrs, NBD_ATTR_DEVICE_LIST | NLA_F_NESTED_FLAG, nest, ni);
	n = nl_reply(b, fam, attrs, a);
	report("netlink: STATUS says connected",
	       nl_walk(b, n, status_visit, &st) == 1 && st.connected == 1, "wrong");
	st.connected = -1;
	a = put_attr(attrs, NBD_ATTR_DEVICE_LIST | NLA_F_NESTED_FLAG, NULL, 0);
	n = nl_reply(b, fam, attrs, a);
	report("netlink: STATUS with an empty list: not there",
	       nl_walk(b, n, status_visit, &st) == 1 && st.connected == 0, "wrong");
	st = (struct nl_status){ 5, -1 };
	a = put_attr(attrs, NBD_ATTR_DEVICE_LIST | NLA_F_NESTED_FLAG, nest, ni);
	n = nl_reply(b, fam, attrs, a);
	report("netlink: STATUS about another device is malformed",
	       nl_walk(b, n, status_visit, &st) == -EBADMSG, "wrong");
	/* LINK_DEAD for our device, and for another */
	mon.index = 2;
	mon.link_dead = false;
	idx = 4;
	a = put_attr(attrs, NBD_ATTR_INDEX, &idx, 4);
	n = nl_reply(b, fam, attrs, a);
	b[16] = NBD_CMD_LINK_DEAD;
	nl_walk(b, n, linkdead_visit, NULL);
	report("netlink: LINK_DEAD for another device is ignored", !mon.link_dead, "wrong");
	idx = 2;
	a = put_attr(attrs, NBD_ATTR_INDEX, &idx, 4);
	n = nl_reply(b, fam, attrs, a);
	b[16] = NBD_CMD_STATUS;
	nl_walk(b, n, linkdead_visit, NULL);
	report("netlink: another command for our device is ignored", !mon.link_dead, "wrong");
	b[16] = NBD_CMD_LINK_DEAD;
	nl_walk(b, n, linkdead_visit, NULL);
	report("netlink: LINK_DEAD for our device is taken", mon.link_dead, "wrong");
	mon.link_dead = false;
	/* a RECONFIGURE message: index, one socket, the identifier */
	static struct nlmsg m;
	const uint8_t *v;
	size_t vlen;
	nl_start(&m, fam, NBD_CMD_RECONFIGURE);
	nl_u32(&m, NBD_ATTR_INDEX, 2);
	nl_sockets(&m, (int[]){ 9 }, 1);
	nl_put(&m, NBD_ATTR_BACKEND_IDENTIFIER, "nbdboot:h:1", 12);
	const uint8_t *body = m.buf + 20;
	size_t blen = m.len - 20;
	bool ok = !m.overflow && m.depth == 0 &&
		  nl_find(body, blen, NBD_ATTR_SOCKETS, &v, &vlen) == 1 &&
		  nl_find(v, vlen, NBD_SOCK_ITEM, &v, &vlen) == 1 &&
		  nl_find(v, vlen, NBD_SOCK_FD, &v, &vlen) == 1 && vlen == 4 && v[0] == 9 &&
		  nl_find(body, blen, NBD_ATTR_BACKEND_IDENTIFIER, &v, &vlen) == 1 &&
		  !strcmp((const char *)v, "nbdboot:h:1");
	report("netlink: RECONFIGURE carries the socket and the identifier", ok, "wrong");
}

static void test_netlink_parse(void)
{
	uint8_t b[256], attrs[16];
	struct nl_attr at = { .len = 8, .type = CTRL_ATTR_FAMILY_ID };
	uint32_t v = 0, id = 0x1234;
	size_t n;
	memcpy(attrs, &at, 4);
	memcpy(attrs + 4, &id, 4);
	n = nl_reply(b, 0x10, attrs, 8);
	n += nl_ack(b + n, 0);
	report("netlink parse: attribute taken, then the ACK",
	       nl_parse(b, n, CTRL_ATTR_FAMILY_ID, &v) == 0 && v == 0x1234, "wrong");
	n = nl_reply(b, 0x10, attrs, 8);
	report("netlink parse: without the ACK it asks for more",
	       nl_parse(b, n, CTRL_ATTR_FAMILY_ID, &v) == 1, "wrong");
	n = nl_ack(b, -EBUSY);
	report("netlink parse: an error reply is its errno", nl_parse(b, n, 0, NULL) == -EBUSY,
	       "wrong");
	n = nl_ack(b, 5);
	report("netlink parse: a positive error is malformed", nl_parse(b, n, 0, NULL) == -EBADMSG,
	       "wrong");
	n = nl_reply(b, 0x10, attrs, 8);
	((struct nl_hdr *)b)->len = 200;
	report("netlink parse: a message longer than the datagram is malformed",
	       nl_parse(b, n, 0, NULL) == -EBADMSG, "wrong");
	at.len = 40;
	memcpy(attrs, &at, 4);
	n = nl_reply(b, 0x10, attrs, 8);
	report("netlink parse: an attribute longer than its message is malformed",
	       nl_parse(b, n, CTRL_ATTR_FAMILY_ID, &v) == -EBADMSG, "wrong");
	at.len = 2;
	memcpy(attrs, &at, 4);
	n = nl_reply(b, 0x10, attrs, 8);
	report("netlink parse: an attribute shorter than its header is malformed",
	       nl_parse(b, n, CTRL_ATTR_FAMILY_ID, &v) == -EBADMSG, "wrong");
	n = nl_ack(b, 0);
	report("netlink parse: an ACK cut short is malformed", nl_parse(b, 18, 0, NULL) == -EBADMSG,
	       "wrong");
	(void)n;
	int sv[2];
	socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
	int64_t t0 = nbd_now_ms();
	int r = nl_recv(sv[0], t0 + 200, 0, NULL);
	report("netlink: a kernel that does not answer hits the deadline",
	       r == -ETIMEDOUT && nbd_now_ms() - t0 < 1500, "no deadline");
	close(sv[0]);
	close(sv[1]);
}

#if NBDBOOT_TLS
/* ---- The TLS proxy, against a BearSSL server over a socketpair ----------------- */

static int sock_read(void *ctx, unsigned char *buf, size_t len)
{
	ssize_t r = read(*(int *)ctx, buf, len);
	return r <= 0 ? -1 : (int)r;
}

static int sock_write(void *ctx, const unsigned char *buf, size_t len)
{
	ssize_t r = write(*(int *)ctx, buf, len);
	return r <= 0 ? -1 : (int)r;
}

/* A TLS server: answers "ping" with "pong", then stays silent (no
 * close_notify, no EOF): a dead network, as the proxy sees it. */
static void silent_server(int fd, const br_ec_private_key *sk)
{
	static br_ssl_server_context sc;
	static br_sslio_context io;
	static unsigned char iobuf[BR_SSL_BUFSIZE_BIDI];
	static unsigned char dummy[] = { 0x30, 0x00 };
	br_x509_certificate chain = { dummy, sizeof dummy };
	unsigned char ping[4];
	br_ssl_server_init_full_ec(&sc, &chain, 1, BR_KEYTYPE_EC, sk);
	br_ssl_engine_set_buffer(&sc.eng, iobuf, sizeof iobuf, 1);
	br_ssl_engine_inject_entropy(&sc.eng, "server entropy, a test only", 27);
	br_ssl_server_reset(&sc);
	br_sslio_init(&io, &sc.eng, sock_read, &fd, sock_write, &fd);
	if (br_sslio_read_all(&io, ping, 4) == 0 && !memcmp(ping, "ping", 4)) {
		br_sslio_write_all(&io, "pong", 4);
		br_sslio_flush(&io);
	}
	sleep(30);
	_exit(0);
}

static void test_proxy(void)
{
	static br_x509_knownkey_context kk;
	static unsigned char kbuf[BR_EC_KBUF_PRIV_MAX_SIZE], pbuf[BR_EC_KBUF_PUB_MAX_SIZE];
	br_hmac_drbg_context rng;
	br_ec_private_key sk;
	br_ec_public_key pk;
	int net[2], loc[2], status = 0;
	char buf[8] = "";
	struct rusage ru;
	pid_t srv, proxy;
	br_hmac_drbg_init(&rng, &br_sha256_vtable, "key seed", 8);
	br_ec_keygen(&rng.vtable, br_ec_get_default(), &sk, kbuf, BR_EC_secp256r1);
	br_ec_compute_pub(br_ec_get_default(), &pk, pbuf, &sk);
	socketpair(AF_UNIX, SOCK_STREAM, 0, net);
	socketpair(AF_UNIX, SOCK_STREAM, 0, loc);
	srv = fork();
	if (srv == 0) {
		close(net[0]);
		close(loc[0]);
		close(loc[1]);
		silent_server(net[1], &sk);
	}
	close(net[1]);
	/* the client engine as nbdboot sets it up, trusting the server's key */
	tls_engine_setup();
	br_x509_knownkey_init_ec(&kk, &pk, BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN);
	br_ssl_engine_set_x509(&tls.sc.eng, &kk.vtable);
	br_ssl_engine_inject_entropy(&tls.sc.eng, "client entropy, a test only", 27);
	br_ssl_client_reset(&tls.sc, NULL, 0);
	config_defaults(&C);
	tls.cfg = &C;
	fcntl(net[0], F_SETFL, O_NONBLOCK);
	struct nbd_conn c = { .fd = net[0], .deadline_ms = nbd_now_ms() + 5000, .tls_active = true };
	bool hs = tls_run(&c, BR_SSL_SENDAPP, "test handshake") == 0;
	report("proxy: test handshake with a BearSSL server", hs, nbd_last_error());
	proxy = fork();
	if (proxy == 0) {
		close(loc[1]);
		tls_proxy_loop(net[0], loc[0]);
		_exit(0);
	}
	close(net[0]);
	close(loc[0]);
	bool ok = write(loc[1], "ping", 4) == 4;
	struct pollfd pf = { .fd = loc[1], .events = POLLIN };
	ok = ok && poll(&pf, 1, 5000) == 1 && read(loc[1], buf, 4) == 4 && !memcmp(buf, "pong", 4);
	report("proxy: carries the kernel's bytes to the server and back", ok, buf);
	close(loc[1]); /* the kernel lets go while the server is silent */
	int64_t t0 = nbd_now_ms(), took;
	pid_t w = 0;
	while (nbd_now_ms() - t0 < NBD_PROXY_LINGER_MS + 3000 &&
	       (w = wait4(proxy, &status, WNOHANG, &ru)) == 0)
		usleep(20000);
	took = nbd_now_ms() - t0;
	if (w != proxy) {
		kill(proxy, SIGKILL);
		wait4(proxy, &status, 0, &ru);
	}
	long cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
		      (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
	char why[128];
	snprintf(why, sizeof why, "exited %s after %lld ms, %ld ms of CPU", w == proxy ? "yes" : "no",
		 (long long)took, cpu_ms);
	report("proxy: the kernel hangs up, the server is silent: it leaves after the linger time",
	       w == proxy && took >= NBD_PROXY_LINGER_MS - 500 && took < NBD_PROXY_LINGER_MS + 2000,
	       why);
	report("proxy: ... and never busy-loops while it waits", cpu_ms < 200, why);
	kill(srv, SIGKILL);
	waitpid(srv, NULL, 0);
}
#endif

/* ---- Formatting: nbdboot's own printf against libc's ------------------------ */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void fmt_case(const char *name, const char *f, ...)
{
	char mine[128], libc[128], why[300];
	va_list ap, aq;
	va_start(ap, f);
	va_copy(aq, ap);
	int n1 = vfmt(mine, sizeof mine, f, ap);
	int n2 = vsnprintf(libc, sizeof libc, f, aq);
	va_end(aq);
	va_end(ap);
	snprintf(why, sizeof why, "'%s' (%d) vs libc '%s' (%d)", mine, n1, libc, n2);
	report(name, n1 == n2 && !strcmp(mine, libc), why);
}
#pragma GCC diagnostic pop

static void test_fmt(void)
{
	char small[8];
	fmt_case("fmt: strings and precision", "a%sb%.*sc%.3s", "xy", 2, "12345", "abcdef");
	fmt_case("fmt: signed", "%d %d %i %lld %lld", 0, -42, 7, (long long)INT64_MIN, 123456789012LL);
	fmt_case("fmt: unsigned and hex", "%u %x %llu %zu %lu", 4000000000u, 0xbeefu,
		 (unsigned long long)UINT64_MAX, (size_t)17, 99ul);
	fmt_case("fmt: zero padding", "%016llx %03lld %05u", 0x1234ULL, 7LL, 42u);
	fmt_case("fmt: width and left", "[%6s][%-6s][%4d][%-4u]", "ab", "cd", -3, 5u);
	fmt_case("fmt: chars and percent", "%c%c 100%% %%-escape", 'o', 'k');
	int n = fmt(small, sizeof small, "%s", "truncated text");
	report("fmt: truncates to the buffer and returns the full length",
	       n == 14 && !strcmp(small, "truncat"), small);
}

int main(void)
{
	const char *rpath = getenv("RESULTS");
	signal(SIGPIPE, SIG_IGN);
	if (rpath)
		results = fopen(rpath, "a");
	test_args();
	test_args_flags();
	test_uri_tls();
	test_sanitise();
	test_fmt();
	test_go_success();
	test_client_flags_not_offered();
	test_unknown_info_skipped();
	test_go_fallback();
	test_go_error_is_not_fallback();
	test_nonfixed_uses_export_name();
	test_export_name_refused();
	test_oldstyle();
	test_bad_greetings();
	test_bad_replies();
	test_stall();
	test_error_replies();
	test_unknown_then_list();
	test_tls_refusals();
	test_probe_disconnects();
	test_list();
	test_cmdline();
	test_cmdline_dhcp_root();
	test_print_env();
	test_output_failures();
	test_netlink_build();
	test_netlink_parse();
	test_netlink_monitor();
	test_failover_args();
	test_request_limit();
	test_ip();
	test_bootif();
	test_boot();
	test_dhcp_build();
	test_dhcp_parse();
	test_dhcp_refusals();
	test_glob();
	test_module_name();
	test_module_params();
#if NBDBOOT_TLS
	test_ktls_layout();
	test_pem_errors();
	test_der();
	test_proxy();
#endif
	printf("unit: %d passed, %d failed\n", passed, failed);
	if (results)
		fclose(results);
	return failed ? 1 : 0;
}
