/*
 * timeit - run a command and print how long it took, for bench/attach.
 *
 *   timeit [-q] LABEL COMMAND [ARGS...]
 *
 * Prints one line on stdout: "TIMEIT LABEL <ns> rc=<status>", where <ns> is
 * CLOCK_MONOTONIC nanoseconds from just before fork() to the return of
 * waitpid() for the child, and <status> the child's exit status (128+N when
 * killed by signal N, 127 when exec failed).  -q sends the command's stdout
 * and stderr to /dev/null (so a slow console does not count), set up before
 * the clock starts.  Static musl build:
 *   musl-gcc -Os -static -s -o timeit bench/timeit.c
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long long t0, t1;
	int status, rc, quiet = 0, devnull = -1;
	pid_t pid;

	if (argc > 1 && strcmp(argv[1], "-q") == 0) {
		quiet = 1;
		argv++;
		argc--;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: timeit [-q] LABEL COMMAND [ARGS...]\n");
		return 2;
	}
	if (quiet && (devnull = open("/dev/null", O_WRONLY)) < 0) {
		perror("timeit: /dev/null");
		return 2;
	}
	fflush(stdout);
	t0 = now_ns();
	pid = fork();
	if (pid < 0) {
		perror("timeit: fork");
		return 2;
	}
	if (pid == 0) {
		if (quiet) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execvp(argv[2], argv + 2);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			perror("timeit: waitpid");
			return 2;
		}
	}
	t1 = now_ns();
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("TIMEIT %s %lld rc=%d\n", argv[1], t1 - t0, rc);
	return rc;
}
