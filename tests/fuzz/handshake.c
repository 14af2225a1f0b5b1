/*
 * handshake - libFuzzer target for the client side of NBD negotiation:
 * everything the server says is the input.
 *
 * Input: one byte choosing what the client asks (value % 6):
 *   0 default export with GO          3 probe (GO, then NBD_CMD_DISC)
 *   1 export "disk" with GO           4 list exports (nbd_list)
 *   2 export "disk" with EXPORT_NAME  5 TLS (STARTTLS, CA tests/fuzz/ca.pem)
 * then the server's bytes.  They are queued whole on a socketpair, followed
 * by EOF, before the client starts; the client end is non-blocking like a
 * real connection's, with a 3 s deadline.  No fork per input.
 *
 * Properties:
 *   - asking for TLS never succeeds: no input can finish a TLS handshake
 *     without the key of tests/fuzz/ca.pem (there is none), so success
 *     would mean the session went on in plaintext;
 *   - with TLS asked, the client sends nothing after STARTTLS but TLS
 *     records;
 *   - the client never waits: with the whole answer and EOF queued, the call
 *     returns within 1000 ms;
 *   - a failure records a server error (never a usage error: the CA file
 *     loads), one line of printable ASCII (server text is sanitised);
 *   - a success describes a sane export (size, flags, block sizes), and the
 *     oldstyle protocol is not accepted for a named export;
 *   - listed names and descriptions fit NBD_STRING_MAX.
 *
 * The CA file is $NBDBOOT_FUZZ_CA, else tests/fuzz/ca.pem found from the
 * executable's place in build/fuzz/.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

enum { M_DEFAULT, M_NAMED, M_EXPORT_NAME, M_PROBE, M_LIST, M_TLS, M_COUNT };

#define WAIT_MAX_MS   1000
#define DEADLINE_MS   3000
#define SOCKBUF       (4 << 20)
#define SENT_MAX      65536
#define TLS_RECORD_MAX (16384 + 2048)

static char ca_path[PATH_MAX];

static void find_ca(const char *argv0)
{
	const char *env = getenv("NBDBOOT_FUZZ_CA");
	char exe[PATH_MAX];
	ssize_t n;
	if (env && *env) {
		snprintf(ca_path, sizeof ca_path, "%s", env);
	} else if ((n = readlink("/proc/self/exe", exe, sizeof exe - 1)) > 0) {
		exe[n] = 0; /* ROOT/build/fuzz/handshake */
		for (int up = 0; up < 3; up++)
			if (strrchr(exe, '/'))
				*strrchr(exe, '/') = 0;
		snprintf(ca_path, sizeof ca_path, "%s/tests/fuzz/ca.pem", exe);
	}
	if (ca_path[0] != '/' || access(ca_path, R_OK)) {
		fprintf(stderr, "%s: the test CA '%s' is not readable: set NBDBOOT_FUZZ_CA to the "
				"absolute path of tests/fuzz/ca.pem\n", argv0, ca_path);
		exit(1);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	signal(SIGPIPE, SIG_IGN);
	find_ca((*argv)[0]);
	return 0;
}

/* ---- the scripted server's end ------------------------------------------------- */

static bool queue_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t r = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r <= 0)
			return false;
		p += r;
		len -= (size_t)r;
	}
	return true;
}

static size_t drain(int fd, uint8_t *buf, size_t size)
{
	size_t n = 0;
	ssize_t r;
	uint8_t junk[4096];
	while ((r = recv(fd, n < size ? buf + n : junk, n < size ? size - n : sizeof junk,
			 MSG_DONTWAIT)) > 0)
		n += (size_t)r;
	return n;
}

/* ---- properties ---------------------------------------------------------------- */

static void list_entry(const char *name, const char *desc, void *arg)
{
	(void)arg;
	PROPERTY(strlen(name) <= NBD_STRING_MAX && strlen(desc) <= NBD_STRING_MAX,
		 "listed a name of %zu or a description of %zu bytes", strlen(name), strlen(desc));
}

static void check_error(void)
{
	const char *m = nbd_last_error();
	PROPERTY(m[0], "failed without an error message");
	/* The configuration is valid (and the CA file loads): whatever the server
	 * sends, the failure is the server's, never a usage or kernel error. */
	PROPERTY(nbd_last_error_class() == EXIT_SERVER, "failure of class %d: %s",
		 nbd_last_error_class(), m);
	for (const char *p = m; *p; p++)
		PROPERTY(*p >= 0x20 && *p < 0x7f, "byte 0x%02x at %zu of the error message '%s'",
			 (unsigned char)*p, (size_t)(p - m), m);
}

static void check_export(const struct nbd_export *ex, const struct nbd_config *cfg)
{
	PROPERTY(ex->size <= NBD_SIZE_MAX, "accepted size %llu", (unsigned long long)ex->size);
	PROPERTY(!ex->flags || (ex->flags & NBD_FLAG_HAS_FLAGS), "flags 0x%x without HAS_FLAGS",
		 ex->flags);
	PROPERTY(!cfg->name[0] || ex->how != HS_OLDSTYLE, "oldstyle accepted for a named export");
	PROPERTY(!cfg->no_optgo || ex->how != HS_FIXED_GO, "GO used although EXPORT_NAME was asked");
	if (ex->has_block_sizes) {
		uint32_t min = ex->min_block, pref = ex->pref_block, max = ex->max_block;
		bool pow2_min = min && !(min & (min - 1)), pow2_pref = pref && !(pref & (pref - 1));
		PROPERTY(pow2_min && min <= 65536 && pow2_pref && pref >= 512 && pref >= min &&
				 (max == 0xffffffffu || (max >= pref && max % min == 0)),
			 "accepted block sizes %u/%u/%u", min, pref, max);
	}
}

/* After the 4 client-flag bytes and the STARTTLS option, only TLS records. */
static void check_tls_wire(const uint8_t *sent, size_t n)
{
	size_t at = 4 + NBD_OPT_HDR_LEN;
	if (n == 0)
		return; /* refused before sending anything */
	PROPERTY(n >= at && be64_get(sent + 4) == NBD_IHAVEOPT &&
			 be32_get(sent + 12) == NBD_OPT_STARTTLS && be32_get(sent + 16) == 0,
		 "with TLS asked, the first option sent is not STARTTLS");
	while (at < n) {
		PROPERTY(n - at >= 5 && sent[at] >= 20 && sent[at] <= 23 && sent[at + 1] == 3,
			 "with TLS asked, byte %zu of what the client sent does not start a TLS record "
			 "(0x%02x): plaintext after STARTTLS", at, sent[at]);
		size_t len = be16_get(sent + at + 3);
		PROPERTY(len <= TLS_RECORD_MAX && n - at - 5 >= len,
			 "with TLS asked, a TLS record of %zu bytes at %zu is cut or too long", len, at);
		at += 5 + len;
	}
}

/* ---- one run ------------------------------------------------------------------- */

static int socket_pair(int sv[2])
{
	int big = SOCKBUF;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		perror("handshake: socketpair");
		abort();
	}
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_config cfg;
	static uint8_t sent[SENT_MAX];
	struct nbd_export ex;
	int sv[2], rc;
	if (size < 1)
		return 0;
	int mode = data[0] % M_COUNT;

	socket_pair(sv);
	if (!queue_all(sv[1], data + 1, size - 1)) {
		close(sv[0]);
		close(sv[1]);
		return -1; /* larger than the socket holds: not a useful input */
	}
	shutdown(sv[1], SHUT_WR);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);

	config_defaults(&cfg);
	strcpy(cfg.host, "localhost");
	if (mode == M_NAMED || mode == M_EXPORT_NAME)
		strcpy(cfg.name, "disk");
	cfg.no_optgo = mode == M_EXPORT_NAME;
	if (mode == M_TLS) {
		cfg.tls = true;
		snprintf(cfg.cacert, sizeof cfg.cacert, "%s", ca_path);
	}
	nbd_error_clear();
	struct nbd_conn c = { .fd = sv[0], .deadline_ms = nbd_now_ms() + DEADLINE_MS };
	int64_t t0 = nbd_now_ms();
	if (mode == M_LIST)
		rc = nbd_list(&c, &cfg, list_entry, NULL);
	else
		rc = nbd_negotiate(&c, &cfg, &ex, mode == M_PROBE);
	int64_t took = nbd_now_ms() - t0;
	size_t nsent = drain(sv[1], sent, sizeof sent);
	close(sv[0]);
	close(sv[1]);

	PROPERTY(took < WAIT_MAX_MS, "mode %d took %lld ms although the server's whole answer "
		 "and EOF were queued (rc %d, error '%s')", mode, (long long)took, rc,
		 nbd_last_error());
	PROPERTY(rc == 0 || rc == -1, "returned %d", rc);
	if (mode == M_TLS) {
		PROPERTY(rc != 0, "TLS was asked and negotiation succeeded: no input can complete a "
			 "TLS handshake with the test CA, so this went on without TLS");
		PROPERTY(nsent <= sizeof sent, "the client sent %zu bytes", nsent);
		check_tls_wire(sent, nsent);
	}
	if (rc)
		check_error();
	else if (mode != M_LIST)
		check_export(&ex, &cfg);
	return 0;
}
