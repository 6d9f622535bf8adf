/*
 * aiproxy-nngping: the floor of one nng req/rep round trip between two
 * processes on this machine, the cost every hop between aiproxy's daemons
 * pays before doing any work.  A forked child answers on a rep socket
 * with blocking calls (the cheapest nng can do); the parent times n
 * round trips of a 300-byte message and prints the median and p99.
 *
 *   aiproxy-nngping [-n count] [-u url]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#define WARMUP 200

static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int
cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

static int
echo_server(const char *url)
{
	nng_socket s;
	char *buf;
	size_t len;

	if (nng_rep0_open(&s) != 0 || nng_listen(s, url, NULL, 0) != 0)
		return 1;
	for (;;) {
		if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0)
			break;
		if (nng_send(s, buf, len, NNG_FLAG_ALLOC) != 0)
			nng_free(buf, len);
	}
	nng_close(s);
	return 0;
}

int
main(int argc, char *argv[])
{
	const char *url = "tcp://127.0.0.1:47311";
	char msg[300], *buf;
	long long *lat, t;
	nng_socket s;
	size_t len;
	pid_t pid;
	long n = 5000;
	int o, rv = 1;

	while ((o = getopt(argc, argv, "n:u:")) != -1) {
		switch (o) {
		case 'n':
			n = strtol(optarg, NULL, 10);
			break;
		case 'u':
			url = optarg;
			break;
		default:
			fprintf(stderr, "usage: aiproxy-nngping [-n count] "
					"[-u url]\n");
			return 2;
		}
	}
	if (n < 10 || n > 1000000) {
		fprintf(stderr, "aiproxy-nngping: -n 10..1000000\n");
		return 2;
	}
	if ((pid = fork()) < 0)
		return 1;
	if (pid == 0)
		_exit(echo_server(url));
	if ((lat = calloc((size_t)n, sizeof(*lat))) == NULL)
		goto out;
	memset(msg, 'x', sizeof(msg));
	if (nng_req0_open(&s) != 0)
		goto out;
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
	/* The dial retries until the child listens. */
	for (int i = 0; i < 100; i++) {
		if (nng_dial(s, url, NULL, 0) == 0)
			break;
		usleep(20000);
	}
	for (long i = 0; i < n + WARMUP; i++) {
		t = now_us();
		if (nng_send(s, msg, sizeof(msg), 0) != 0 ||
		    nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0) {
			fprintf(stderr, "aiproxy-nngping: no echo\n");
			goto close;
		}
		nng_free(buf, len);
		if (i >= WARMUP)
			lat[i - WARMUP] = now_us() - t;
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_ll);
	printf("%lld %lld\n", lat[n / 2], lat[n * 99 / 100]);
	rv = 0;
close:
	nng_close(s);
out:
	free(lat);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return rv;
}
