/*
 * iobench - O_DIRECT reads or writes on a block device, for bench/throughput.
 *
 *   iobench DEV seqread|seqwrite|randread|randwrite BLOCKSIZE TOTAL_MIB THREADS
 *
 * THREADS threads share TOTAL_MIB in BLOCKSIZE requests, in equal parts.  Sequential: each
 * thread goes through its own contiguous region, one after the other from the
 * start of DEV.  Random: each thread picks block-aligned offsets anywhere on
 * DEV from its own xorshift generator (fixed seeds, so every run does the same
 * I/O).  Writes are of a fixed pseudo-random pattern and end with one
 * fdatasync(), which the time includes.  Prints one line on stdout:
 *   IOBENCH <mode> bs=<bs> threads=<n> mib=<m> ns=<elapsed> rc=<0|1>
 * with CLOCK_MONOTONIC nanoseconds from before the first thread starts to
 * after the last one (and the sync) is done; rc=1 when any request failed or
 * came up short (the reason goes to stderr).  Exit status: rc, or 2 for a
 * usage error.  Static musl build:
 *   musl-gcc -O2 -static -s -pthread -o iobench bench/iobench.c
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64

static int fd;
static int writing, random_io;
static uint64_t bs, per_thread, dev_blocks; /* per_thread: requests */

struct worker {
	pthread_t tid;
	unsigned idx;
	uint64_t seed;
	unsigned char *buf; /* bs bytes, 4096-aligned for O_DIRECT */
	int failed;
};

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	uint64_t i;

	for (i = 0; i < per_thread; i++) {
		uint64_t blk = random_io ? xorshift(&w->seed) % dev_blocks : w->idx * per_thread + i;
		off_t off = (off_t)(blk * bs);
		ssize_t n = writing ? pwrite(fd, w->buf, bs, off) : pread(fd, w->buf, bs, off);

		if (n != (ssize_t)bs) {
			fprintf(stderr, "iobench: %s at %lld: %s\n", writing ? "write" : "read",
				(long long)off, n < 0 ? strerror(errno) : "short transfer");
			w->failed = 1;
			break;
		}
	}
	return NULL;
}

static int number(const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 10);
	return *s && !*end && !errno && *v >= min && *v <= max;
}

int main(int argc, char **argv)
{
	static struct worker w[MAX_THREADS];
	uint64_t mib, threads, total;
	off_t dev_size;
	const char *mode = argc > 2 ? argv[2] : "";
	long long t0, t1;
	unsigned t;
	int rc = 0;

	writing = !strcmp(mode, "seqwrite") || !strcmp(mode, "randwrite");
	random_io = !strcmp(mode, "randread") || !strcmp(mode, "randwrite");
	if (argc != 6 || !(writing || random_io || !strcmp(mode, "seqread")) ||
	    !number(argv[3], 512, 64 << 20, &bs) || (bs & (bs - 1)) ||
	    !number(argv[4], 1, 1 << 20, &mib) || !number(argv[5], 1, MAX_THREADS, &threads)) {
		fprintf(stderr, "usage: iobench DEV seqread|seqwrite|randread|randwrite "
				"BLOCKSIZE(power of two) TOTAL_MIB THREADS(1..%d)\n", MAX_THREADS);
		return 2;
	}
	total = mib << 20;
	per_thread = total / bs / threads;
	fd = open(argv[1], (writing ? O_RDWR : O_RDONLY) | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || (dev_size = lseek(fd, 0, SEEK_END)) < 0) {
		fprintf(stderr, "iobench: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	dev_blocks = (uint64_t)dev_size / bs;
	if (per_thread * threads * bs != total || dev_blocks == 0 ||
	    (!random_io && per_thread * threads > dev_blocks)) {
		fprintf(stderr, "iobench: %" PRIu64 " MiB do not divide into %" PRIu64 "-byte blocks "
			"over %" PRIu64 " threads, or do not fit %s (%" PRIu64 " bytes)\n", mib, bs,
			threads, argv[1], (uint64_t)dev_size);
		return 2;
	}

	for (t = 0; t < threads; t++) { /* outside the clock: seeds, buffers, the write pattern */
		uint64_t i;

		w[t].idx = t;
		w[t].seed = 0x9e3779b97f4a7c15ULL * (t + 1);
		if (posix_memalign((void **)&w[t].buf, 4096, bs)) {
			fprintf(stderr, "iobench: out of memory\n");
			return 1;
		}
		for (i = 0; i < bs; i++) /* reads overwrite it */
			w[t].buf[i] = (unsigned char)(xorshift(&w[t].seed) >> 32);
	}
	t0 = now_ns();
	for (t = 0; t < threads; t++) {
		if (pthread_create(&w[t].tid, NULL, run, &w[t])) {
			fprintf(stderr, "iobench: pthread_create failed\n");
			return 1; /* the threads already started die with the process */
		}
	}
	for (t = 0; t < threads; t++) {
		pthread_join(w[t].tid, NULL);
		rc |= w[t].failed;
	}
	if (writing && !rc && fdatasync(fd) < 0) {
		fprintf(stderr, "iobench: fdatasync: %s\n", strerror(errno));
		rc = 1;
	}
	t1 = now_ns();
	printf("IOBENCH %s bs=%" PRIu64 " threads=%" PRIu64 " mib=%" PRIu64 " ns=%lld rc=%d\n", mode,
	       bs, threads, mib, t1 - t0, rc);
	return rc;
}
