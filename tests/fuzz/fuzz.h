/*
 * fuzz.h - what the libFuzzer harnesses in tests/fuzz/ share.  Each harness
 * includes nbdboot.c first (with NBDBOOT_NO_MAIN), then this.
 *
 * A violated property is a finding like a crash: PROPERTY prints which one
 * and aborts, and libFuzzer keeps the input as a crash artifact.
 */
#ifndef NBDBOOT_FUZZ_H
#define NBDBOOT_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROPERTY(cond, ...)                                                      \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "\nfuzz: property violated (%s:%d): ",   \
				__FILE__, __LINE__);                             \
			fprintf(stderr, __VA_ARGS__);                            \
			fprintf(stderr, "\n");                                   \
			abort();                                                 \
		}                                                                \
	} while (0)

/* A string field ends inside its buffer. */
#define TERMINATED(field) (memchr((field), 0, sizeof(field)) != NULL)

/* A copy of n bytes with a NUL after them, in a buffer of exactly n + 1
 * bytes, so ASan sees any read past the string. */
static inline char *fuzz_string(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		abort();
	if (n)
		memcpy(s, data, n);
	s[n] = 0;
	return s;
}

#endif
