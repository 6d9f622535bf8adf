/*
 * The curl engine in-process, against a tiny loopback HTTP server of this
 * test: a large stream to a gateway that reads late (the transfer pauses,
 * nothing is lost or reordered), a stream cut inside an event, a silent
 * upstream (deadline), a JSON answer to a stream request, a body over the
 * bound, a key echoed in an error body (scrubbed), cancels and aborts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/supplemental/util/platform.h>

#include "buf.h"
#include "clock.h"
#include "pw_engine.h"
#include "pw_unit.h"

#define KEY     "sk-engine-test-key-0123456789"
#define WAIT_MS 10000

/* ---- the upstream ---- */

enum srv_mode {
	SRV_SSE,      /* 200 text/event-stream, srv.body, chunked */
	SRV_SSE_CUT,  /* as SSE, then the connection drops mid-body */
	SRV_SILENT,   /* reads the request, never answers */
	SRV_JSON,     /* 200 application/json, srv.body */
	SRV_HUGE,     /* 200 application/json, 17 MiB */
	SRV_ECHO_401, /* 401 quoting the x-api-key it got */
};

static struct srv {
	int lfd;
	int port;
	pthread_t th;
	atomic_bool stop;
	atomic_int mode;
	atomic_int conns;
	char *body;
	size_t body_len;
} S;

static bool
srv_write(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

		if (w <= 0)
			return false;
		c += w;
		n -= (size_t)w;
	}
	return true;
}

static bool
srv_chunk(int fd, const char *p, size_t n)
{
	char hdr[32];

	snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
	return srv_write(fd, hdr, strlen(hdr)) && srv_write(fd, p, n) &&
	       srv_write(fd, "\r\n", 2);
}

/* Reads the request (headers and Content-Length body); copies the
 * x-api-key value into key. */
static bool
srv_read_request(int fd, char *key, size_t keylen)
{
	char buf[65536], *end, *h;
	size_t len = 0, need;
	long clen = 0;

	key[0] = '\0';
	for (;;) {
		ssize_t r;

		if (len == sizeof(buf) - 1)
			return false;
		r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (r <= 0)
			return false;
		len += (size_t)r;
		buf[len] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
	}
	for (h = buf; h < end; h = strstr(h, "\r\n") + 2) {
		if (strncasecmp(h, "content-length:", 15) == 0)
			clen = strtol(h + 15, NULL, 10);
		if (strncasecmp(h, "x-api-key:", 10) == 0) {
			const char *v = h + 10 + strspn(h + 10, " ");
			size_t vl = strcspn(v, "\r");

			snprintf(key, keylen, "%.*s", (int)vl, v);
		}
	}
	need = (size_t)(end + 4 - buf) + (size_t)clen;
	while (len < need) {
		char skip[4096];
		ssize_t r = recv(fd, skip, sizeof(skip), 0);

		if (r <= 0)
			return false;
		len += (size_t)r;
	}
	return true;
}

static void
srv_handle(int fd)
{
	static const char sse_hdr[] =
	    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	    "Transfer-Encoding: chunked\r\nrequest-id: req_engine1\r\n\r\n";
	char key[256], out[1024];
	enum srv_mode mode = (enum srv_mode)atomic_load(&S.mode);

	if (!srv_read_request(fd, key, sizeof(key)))
		return;
	switch (mode) {
	case SRV_SSE:
	case SRV_SSE_CUT:
		if (!srv_write(fd, sse_hdr, sizeof(sse_hdr) - 1))
			return;
		for (size_t off = 0; off < S.body_len; off += 4096) {
			size_t n =
			    S.body_len - off < 4096 ? S.body_len - off : 4096;

			if (!srv_chunk(fd, S.body + off, n))
				return;
		}
		if (mode == SRV_SSE)
			srv_write(fd, "0\r\n\r\n", 5);
		/* SRV_SSE_CUT: closed without the last chunk. */
		return;
	case SRV_SILENT: {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		/* Until the client gives up (or the test ends). */
		while (!atomic_load(&S.stop) && poll(&p, 1, 50) >= 0) {
			char b[64];

			if ((p.revents & (POLLIN | POLLHUP)) != 0 &&
			    recv(fd, b, sizeof(b), 0) <= 0)
				return;
		}
		return;
	}
	case SRV_JSON:
		snprintf(out, sizeof(out),
		    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n",
		    S.body_len);
		srv_write(fd, out, strlen(out));
		srv_write(fd, S.body, S.body_len);
		return;
	case SRV_HUGE: {
		static char zeros[65536];
		size_t total = 17u << 20;

		memset(zeros, ' ', sizeof(zeros));
		snprintf(out, sizeof(out),
		    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n",
		    total);
		srv_write(fd, out, strlen(out));
		for (size_t off = 0; off < total; off += sizeof(zeros))
			if (!srv_write(fd, zeros, sizeof(zeros)))
				return;
		return;
	}
	case SRV_ECHO_401: {
		char body[1024];

		snprintf(body, sizeof(body),
		    "{\"type\":\"error\",\"error\":{\"type\":"
		    "\"authentication_error\",\"message\":\"bad key %s, "
		    "again: %s\"}}",
		    key, key);
		snprintf(out, sizeof(out),
		    "HTTP/1.1 401 Unauthorized\r\nContent-Type: "
		    "application/json\r\nContent-Length: %zu\r\n\r\n",
		    strlen(body));
		srv_write(fd, out, strlen(out));
		srv_write(fd, body, strlen(body));
		return;
	}
	}
}

static void *
srv_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&S.stop)) {
		struct pollfd p = {.fd = S.lfd, .events = POLLIN};
		int fd;

		if (poll(&p, 1, 50) <= 0)
			continue;
		if ((fd = accept(S.lfd, NULL, NULL)) < 0)
			continue;
		atomic_fetch_add(&S.conns, 1);
		srv_handle(fd);
		close(fd);
	}
	return NULL;
}

static void
srv_start(enum srv_mode mode)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int one = 1;

	atomic_store(&S.mode, mode);
	S.lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(S.lfd, 0);
	setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(S.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(S.lfd, 16), 0);
	ck_assert_int_eq(getsockname(S.lfd, (struct sockaddr *)&a, &alen), 0);
	S.port = ntohs(a.sin_port);
	ck_assert_int_eq(pthread_create(&S.th, NULL, srv_main, NULL), 0);
}

static void
srv_stop(void)
{
	atomic_store(&S.stop, true);
	pthread_join(S.th, NULL);
	close(S.lfd);
	free(S.body);
}

/* ---- the engine and its results ---- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int status;
	char code[64];
	char word[16];
	int64_t chunks;
	struct pw_usage usage;
	long http;
	char *payload;
	size_t payload_len;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static struct pw_engine *E;
static nng_socket PULL;
static char url[128], stream_url[64];

static void
on_done(void *arg, struct pw_call *c)
{
	(void)arg;
	ck_assert_ptr_null(c->ctx);
	pthread_mutex_lock(&R.mu);
	R.status = c->out.status;
	snprintf(R.code, sizeof(R.code), "%s", c->out.code);
	snprintf(R.word, sizeof(R.word), "%s", c->status_word);
	R.chunks = c->chunks;
	R.usage = c->usage;
	R.http = c->http_status;
	free(R.payload);
	R.payload = malloc(c->body.len + 1);
	memcpy(
	    R.payload, c->body.data != NULL ? c->body.data : "", c->body.len);
	R.payload[c->body.len] = '\0';
	R.payload_len = c->body.len;
	R.done++;
	pthread_cond_broadcast(&R.cv);
	pthread_mutex_unlock(&R.mu);
}

static void
wait_done(int n)
{
	int64_t end = clock_mono_ms() + WAIT_MS;

	pthread_mutex_lock(&R.mu);
	while (R.done < n) {
		pthread_mutex_unlock(&R.mu);
		ck_assert_msg(clock_mono_ms() < end, "no result");
		nng_msleep(2);
		pthread_mutex_lock(&R.mu);
	}
	pthread_mutex_unlock(&R.mu);
}

static void
setup(enum srv_mode mode, size_t pause_high)
{
	struct pw_engine_opts o;

	memset(&S, 0, sizeof(S));
	srv_start(mode);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/messages", S.port);
	snprintf(
	    stream_url, sizeof(stream_url), "inproc://pwe-%d", (int)getpid());
	ck_assert_int_eq(nng_pull0_open(&PULL), 0);
	nng_socket_set_int(PULL, NNG_OPT_RECVBUF, 1);
	ck_assert_int_eq(nng_listen(PULL, stream_url, NULL, 0), 0);
	memset(&o, 0, sizeof(o));
	o.url[PW_PROV_CLAUDE] = url;
	o.key[PW_PROV_CLAUDE] = KEY;
	o.push_sendbuf = 1;
	o.pause_high = pause_high;
	o.pause_low = pause_high / 4;
	ck_assert_int_eq(pw_engine_new(&o, on_done, NULL, &E), 0);
}

static void
teardown(void)
{
	pw_engine_free(E);
	nng_close(PULL);
	srv_stop();
	free(R.payload);
	R.payload = NULL;
}

static struct pw_call *
call_make(const char *rid, bool stream, int64_t deadline_ms)
{
	static const char payload[] = "{\"model\":\"m\"}";
	struct pw_call *c = pw_call_new();

	ck_assert_ptr_nonnull(c);
	snprintf(c->req.request_id, sizeof(c->req.request_id), "%s", rid);
	snprintf(c->req.provider, sizeof(c->req.provider), "claude");
	snprintf(c->req.model, sizeof(c->req.model), "m");
	snprintf(c->req.api, sizeof(c->req.api), "messages");
	c->req.stream = stream;
	if (stream)
		snprintf(c->req.stream_url, sizeof(c->req.stream_url), "%s",
		    stream_url);
	c->req.deadline_ms = deadline_ms;
	c->req.payload = payload;
	c->req.payload_len = sizeof(payload) - 1;
	c->prov = PW_PROV_CLAUDE;
	c->t_recv_us = clock_mono_us();
	return c;
}

/* Receives chunks of rid (seq from, in order) until the call is done and
 * all its chunks are in. */
static void
chunks_read(const char *rid, struct buf *out)
{
	int64_t seq = 0, end = clock_mono_ms() + WAIT_MS;

	nng_socket_set_ms(PULL, NNG_OPT_RECVTIMEO, 50);
	for (;;) {
		struct msg_stream_chunk m;
		char *b = NULL;
		size_t len;
		int done, rv;

		pthread_mutex_lock(&R.mu);
		done = R.done > 0 && seq == R.chunks;
		pthread_mutex_unlock(&R.mu);
		if (done)
			return;
		ck_assert_msg(clock_mono_ms() < end, "chunks missing at %lld",
		    (long long)seq);
		rv = nng_recv(PULL, &b, &len, NNG_FLAG_ALLOC);
		if (rv == NNG_ETIMEDOUT)
			continue;
		ck_assert_int_eq(rv, 0);
		ck_assert_int_eq(msg_stream_chunk_decode(b, len, &m), 0);
		ck_assert_str_eq(m.request_id, rid);
		ck_assert_int_eq(m.seq, seq);
		seq++;
		ck_assert_int_eq(buf_append(out, m.payload, m.payload_len), 0);
		nng_free(b, len);
	}
}

/* An Anthropic stream of about size bytes: message_start (input 11),
 * text deltas, message_delta (output 22), message_stop. */
static void
body_make(size_t size)
{
	struct buf b;
	char text[1001];

	buf_init(&b, size + 65536);
	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	buf_append_str(&b,
	    "event: message_start\ndata: {\"type\":\"message_start\","
	    "\"message\":{\"usage\":{\"input_tokens\":11,\"output_tokens\":"
	    "1}}}\n\n");
	for (int i = 0; b.len < size; i++) {
		text[i % 1000] = (char)('a' + i % 26); /* no two alike */
		buf_printf(&b,
		    "event: content_block_delta\ndata: {\"type\":"
		    "\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		    "\"text_delta\",\"text\":\"%s\"}}\n\n",
		    text);
	}
	buf_append_str(&b,
	    "event: message_delta\ndata: {\"type\":\"message_delta\","
	    "\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
	    "{\"output_tokens\":22}}\n\nevent: message_stop\ndata: "
	    "{\"type\":\"message_stop\"}\n\n");
	S.body = buf_steal(&b, &S.body_len);
}

START_TEST(test_big_stream_slow_reader)
{
	struct pw_engine_stats st;
	struct buf got;
	int64_t end;

	setup(SRV_SSE, 64u << 10);
	body_make(4u << 20);
	pw_engine_submit(E, call_make("big-1", true, WAIT_MS));
	/* Nobody reads yet: the queue fills and the transfer pauses. */
	end = clock_mono_ms() + WAIT_MS;
	do {
		ck_assert_msg(clock_mono_ms() < end, "never paused");
		nng_msleep(2);
		pw_engine_stats(E, &st);
	} while (st.pauses == 0);
	buf_init(&got, 64u << 20);
	chunks_read("big-1", &got);
	/* Every byte, in order. */
	ck_assert_uint_eq(got.len, S.body_len);
	ck_assert(memcmp(got.data, S.body, S.body_len) == 0);
	ck_assert_int_eq(R.status, 200);
	ck_assert_str_eq(R.word, "ok");
	ck_assert_int_eq(R.usage.tokens.input, 11);
	ck_assert_int_eq(R.usage.tokens.output, 22);
	pw_engine_stats(E, &st);
	ck_assert_uint_eq(st.chunks_dropped, 0);
	ck_assert_uint_gt(st.pauses, 0);
	ck_assert_uint_eq(st.active, 0);
	buf_free(&got);
	teardown();
}
END_TEST

START_TEST(test_stream_cut_inside_event)
{
	static const char part[] =
	    "event: message_start\ndata: {\"type\":\"message_start\","
	    "\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}"
	    "\n\nevent: content_block_delta\ndata: {\"type\":\"conte";
	static const char tail[] =
	    "\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
	    "\"api_error\",\"message\":\"the connection to the provider "
	    "broke\"}}\n\n";
	struct buf got;

	setup(SRV_SSE_CUT, 0);
	S.body = strdup(part);
	S.body_len = strlen(part);
	pw_engine_submit(E, call_make("cut-1", true, WAIT_MS));
	buf_init(&got, 1u << 20);
	chunks_read("cut-1", &got);
	ck_assert_int_eq(R.status, 502);
	ck_assert_str_eq(R.code, "upstream_stream_error");
	ck_assert_str_eq(R.word, "error");
	/* The bytes as sent, then an error event on its own. */
	ck_assert_uint_eq(got.len, strlen(part) + strlen(tail));
	ck_assert(memcmp(got.data, part, strlen(part)) == 0);
	ck_assert_str_eq(got.data + strlen(part), tail);
	ck_assert_int_eq(R.usage.tokens.input, 5);
	buf_free(&got);
	teardown();
}
END_TEST

START_TEST(test_silent_upstream_deadline)
{
	int64_t t0;

	setup(SRV_SILENT, 0);
	t0 = clock_mono_ms();
	pw_engine_submit(E, call_make("slow-1", false, 300));
	wait_done(1);
	ck_assert_int_ge(clock_mono_ms() - t0, 250);
	ck_assert_int_lt(clock_mono_ms() - t0, 3000);
	ck_assert_int_eq(R.status, 504);
	ck_assert_str_eq(R.code, "upstream_timeout");
	ck_assert_int_eq(R.http, 0);
	teardown();
}
END_TEST

START_TEST(test_json_answer_to_stream)
{
	setup(SRV_JSON, 0);
	S.body = strdup("{\"type\":\"message\",\"usage\":{\"input_tokens\":3,"
			"\"output_tokens\":4}}");
	S.body_len = strlen(S.body);
	pw_engine_submit(E, call_make("json-1", true, WAIT_MS));
	wait_done(1);
	ck_assert_int_eq(R.status, 502);
	ck_assert_str_eq(R.code, "upstream_error");
	ck_assert_int_eq(R.chunks, 0);
	ck_assert_str_eq(R.payload, S.body);
	/* Its usage is still billed. */
	ck_assert_int_eq(R.usage.tokens.output, 4);
	teardown();
}
END_TEST

START_TEST(test_body_too_large)
{
	setup(SRV_HUGE, 0);
	pw_engine_submit(E, call_make("huge-1", false, WAIT_MS));
	wait_done(1);
	ck_assert_int_eq(R.status, 502);
	ck_assert_str_eq(R.code, "upstream_response_too_large");
	teardown();
}
END_TEST

START_TEST(test_key_scrubbed)
{
	setup(SRV_ECHO_401, 0);
	pw_engine_submit(E, call_make("key-1", false, WAIT_MS));
	wait_done(1);
	ck_assert_int_eq(R.status, 502);
	ck_assert_str_eq(R.code, "upstream_auth");
	ck_assert_int_eq(R.http, 401);
	/* The server did get the key (it quotes it twice)... */
	ck_assert_ptr_nonnull(strstr(R.payload, "bad key [redacted], again: "
						"[redacted]"));
	/* ...the reply never carries it. */
	ck_assert_ptr_null(strstr(R.payload, KEY));
	teardown();
}
END_TEST

START_TEST(test_cancel_and_abort)
{
	int64_t end;

	setup(SRV_SILENT, 0);
	/* A cancel that comes before its call still ends it, and the call
	 * never reaches the upstream. */
	pw_engine_cancel(E, "early-1");
	pw_engine_submit(E, call_make("early-1", false, WAIT_MS));
	wait_done(1);
	ck_assert_int_eq(R.status, 499);
	ck_assert_str_eq(R.code, "cancelled");
	ck_assert_str_eq(R.word, "aborted");
	ck_assert_int_eq(atomic_load(&S.conns), 0);

	/* A call at the upstream, cancelled. */
	pw_engine_submit(E, call_make("late-1", false, WAIT_MS));
	end = clock_mono_ms() + WAIT_MS;
	while (atomic_load(&S.conns) < 1) {
		ck_assert(clock_mono_ms() < end);
		nng_msleep(2);
	}
	pw_engine_cancel(E, "late-1");
	wait_done(2);
	ck_assert_int_eq(R.status, 499);
	ck_assert_str_eq(R.word, "aborted");

	/* Stop: a call in flight ends as "stopping", and so does one that
	 * comes after. */
	pw_engine_submit(E, call_make("stop-1", false, WAIT_MS));
	pw_engine_abort_all(E);
	wait_done(3);
	ck_assert_int_eq(R.status, 503);
	ck_assert_str_eq(R.code, "worker_stopping");
	ck_assert_str_eq(R.word, "aborted");
	pw_engine_submit(E, call_make("stop-2", false, WAIT_MS));
	wait_done(4);
	ck_assert_str_eq(R.code, "worker_stopping");
	teardown();
}
END_TEST

START_TEST(test_free_with_calls_in_flight)
{
	setup(SRV_SILENT, 0);
	pw_engine_submit(E, call_make("left-1", false, WAIT_MS));
	pw_engine_submit(E, call_make("left-2", true, WAIT_MS));
	/* Freeing ends them (done called, nothing leaked: ASan). */
	teardown();
	ck_assert_int_eq(R.done, 2);
	ck_assert_str_eq(R.word, "aborted");
}
END_TEST

Suite *
pw_engine_suite(void)
{
	Suite *s = suite_create("pw_engine");
	TCase *tc = tcase_create("engine");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_big_stream_slow_reader);
	tcase_add_test(tc, test_stream_cut_inside_event);
	tcase_add_test(tc, test_silent_upstream_deadline);
	tcase_add_test(tc, test_json_answer_to_stream);
	tcase_add_test(tc, test_body_too_large);
	tcase_add_test(tc, test_key_scrubbed);
	tcase_add_test(tc, test_cancel_and_abort);
	tcase_add_test(tc, test_free_with_calls_in_flight);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	return pw_unit_run(pw_engine_suite());
}
