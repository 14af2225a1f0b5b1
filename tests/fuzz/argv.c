/*
 * argv - libFuzzer target for the command line (nbd_parse_args).
 * Input: the arguments after argv[0], separated by NUL bytes (at most 64;
 * the rest of the input is ignored).
 *
 * Properties: on success the configuration passes nbd_config_check and its
 * names end inside their buffers; on failure an error is recorded.
 */
#define NBDBOOT_NO_MAIN
#include "../../nbdboot.c"
#include "fuzz.h"

#define ARGS_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct nbd_config cfg;
	char *argv[ARGS_MAX + 1];
	int argc = 0;
	for (const uint8_t *p = data, *end = data + size; p < end && argc < ARGS_MAX;) {
		const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
		size_t n = nul ? (size_t)(nul - p) : (size_t)(end - p);
		argv[argc++] = fuzz_string(p, n); /* each its own buffer, for ASan */
		p += n + 1;
	}
	argv[argc] = NULL;

	nbd_error_clear();
	int rc = nbd_parse_args(&cfg, argc, argv);
	if (rc) {
		PROPERTY(rc == -1, "nbd_parse_args returned %d", rc);
		PROPERTY(nbd_last_error()[0], "failed without an error message");
	} else {
		PROPERTY(TERMINATED(cfg.host) && TERMINATED(cfg.port) && TERMINATED(cfg.unix_path) &&
				 TERMINATED(cfg.name) && TERMINATED(cfg.device) &&
				 TERMINATED(cfg.cacert) && TERMINATED(cfg.cert) && TERMINATED(cfg.key) &&
				 TERMINATED(cfg.tlshostname) && TERMINATED(cfg.cmdline_file),
			 "a name is not terminated inside its buffer");
		PROPERTY(nbd_config_check(&cfg) == 0, "parsed, but nbd_config_check says: %s",
			 nbd_last_error());
	}
	/* -v is a config field: nothing program-wide to reset */
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	return 0;
}
