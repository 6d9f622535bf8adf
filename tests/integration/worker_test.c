/*
 * provider-worker integration: the real aiproxy-provider-worker against
 * the mock upstream, with this test playing the gateway: a req socket
 * listening as AI_PROXY_WORKER_URL, a pull socket for stream chunks, a pub
 * socket as the control URL and a sub socket listening as
 * AI_PROXY_USAGE_URL.  Each test starts its own mock and worker (in its
 * own forked check process), on free loopback ports.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "buf.h"
#include "harness.h"
#include "models.h"
#include "proto.h"

#define AKEY        "test-anthropic-key"
#define OKEY        "test-openai-key"
#define CLAUDE_M    "claude-sonnet-4-5-20250929"
#define OPENAI_M    "gpt-4o-mini-2024-07-18"
#define WORKER_ID   "wt1"
#define WAIT_MS     5000
#define ENV_MAX     32
#define MAX_PENDING 256

/* ---- the fixture ---- */

struct wt {
	struct h_mock mock;
	bool mock_up;
	struct hproc worker;
	struct hproc worker2; /* a second worker, when a test wants one */
	char log_path2[PATH_MAX];
	char *dir;
	char worker_url[64], stream_url[64], control_url[64], usage_url[64];
	nng_socket req, pull, pub, sub;
	atomic_int req_pipes, pub_pipes, sub_pipes;
	struct model_table *models;
	char log_path[PATH_MAX];
	int rid_next;
};

static struct wt T;

static bool
contains(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static void
pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)ev;
	atomic_fetch_add((atomic_int *)arg, 1);
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
url_free_port(char *out, size_t n)
{
	int port = h_free_port();

	ck_assert_int_gt(port, 0);
	snprintf(out, n, "tcp://127.0.0.1:%d", port);
}

/* Listens on a free port: one found free may be taken before the listen
 * (another test, a connection's source port), so a few tries. */
static void
listen_free(nng_socket s, char *url, size_t n)
{
	int rv = NNG_EADDRINUSE;

	for (int i = 0; i < 5 && rv == NNG_EADDRINUSE; i++) {
		url_free_port(url, n);
		rv = nng_listen(s, url, NULL, 0);
	}
	ck_assert_msg(rv == 0, "listen %s: %s", url, nng_strerror(rv));
}

static void
sockets_open(void)
{
	ck_assert_int_eq(nng_req0_open(&T.req), 0);
	nng_socket_set_ms(T.req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	ck_assert_int_eq(nng_pull0_open(&T.pull), 0);
	nng_socket_set_int(T.pull, NNG_OPT_RECVBUF, 8192);
	ck_assert_int_eq(nng_pub0_open(&T.pub), 0);
	ck_assert_int_eq(nng_sub0_open(&T.sub), 0);
	nng_socket_set_int(T.sub, NNG_OPT_RECVBUF, 8192);
	ck_assert_int_eq(nng_socket_set(T.sub, NNG_OPT_SUB_SUBSCRIBE,
			     PROTO_TOPIC_USAGE, strlen(PROTO_TOPIC_USAGE)),
	    0);
	nng_pipe_notify(T.req, NNG_PIPE_EV_ADD_POST, pipe_added, &T.req_pipes);
	nng_pipe_notify(T.pub, NNG_PIPE_EV_ADD_POST, pipe_added, &T.pub_pipes);
	nng_pipe_notify(T.sub, NNG_PIPE_EV_ADD_POST, pipe_added, &T.sub_pipes);
	listen_free(T.req, T.worker_url, sizeof(T.worker_url));
	listen_free(T.pull, T.stream_url, sizeof(T.stream_url));
	listen_free(T.pub, T.control_url, sizeof(T.control_url));
	listen_free(T.sub, T.usage_url, sizeof(T.usage_url));
}

/* env: "NAME=value" entries; an entry of extra replaces the default of
 * the same name. */
static void
env_put(char **env, int *n, const char *entry)
{
	size_t nl = strcspn(entry, "=");

	for (int i = 0; i < *n; i++) {
		if (strncmp(env[i], entry, nl + 1) == 0) {
			free(env[i]);
			env[i] = strdup(entry);
			return;
		}
	}
	ck_assert_int_lt(*n, ENV_MAX - 1);
	env[(*n)++] = strdup(entry);
	env[*n] = NULL;
}

static void env_putf(char **env, int *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
env_putf(char **env, int *n, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	env_put(env, n, line);
}

static int
worker_spawn_as(struct hproc *proc, char *log_path, size_t log_len,
    const char *id, const char *flag, const char *const *extra)
{
	char *env[ENV_MAX] = {NULL};
	char *bin = h_bin_path("aiproxy-provider-worker");
	char *models = NULL;
	int n = 0, rv;

	ck_assert_msg(bin != NULL, "aiproxy-provider-worker not built");
	ck_assert_int_ge(
	    asprintf(&models, "%s/config/models.json", h_source_dir()), 0);
	env_putf(env, &n, "AI_PROXY_WORKER_URL=%s", T.worker_url);
	env_putf(env, &n, "AI_PROXY_CONTROL_URL=%s", T.control_url);
	env_putf(env, &n, "AI_PROXY_USAGE_URL=%s", T.usage_url);
	env_putf(env, &n, "AI_PROXY_WORKER_ID=%s", id);
	env_putf(env, &n, "AI_PROXY_STATE_DIR=%s", T.dir);
	env_putf(env, &n, "AI_PROXY_MODELS_FILE=%s", models);
	env_putf(env, &n, "AI_PROXY_WORKER_CONCURRENCY=%d", 512);
	env_putf(env, &n, "CLAUDE_API_KEY=%s", AKEY);
	env_putf(env, &n, "OPENAI_API_KEY=%s", OKEY);
	env_putf(env, &n, "CLAUDE_BASE_URL=%s",
	    T.mock_up ? T.mock.url : "http://127.0.0.1:9");
	env_putf(env, &n, "OPENAI_BASE_URL=%s",
	    T.mock_up ? T.mock.url : "http://127.0.0.1:9");
	env_putf(env, &n, "LOG_LEVEL=%s", "info");
	/* No breaker, retry or report in the way of these tests (the
	 * resilience tests have their own). */
	env_putf(env, &n, "AI_PROXY_MAX_RETRIES=0");
	env_putf(env, &n, "CIRCUIT_BREAKER_FAILURE_THRESHOLD=1000");
	env_putf(env, &n, "CIRCUIT_BREAKER_MIN_VOLUME=100000");
	env_putf(env, &n, "AI_PROXY_STREAM_URL=tcp://127.0.0.1:9");
	for (int i = 0; extra != NULL && extra[i] != NULL; i++)
		env_put(env, &n, extra[i]);
	snprintf(log_path, log_len, "%s/worker-%s.log", T.dir, id);
	{
		char flagbuf[8];
		char *const argv[] = {bin, flagbuf, NULL};

		snprintf(flagbuf, sizeof(flagbuf), "%s", flag);

		rv = h_proc_start(
		    proc, "provider-worker", argv, env, log_path, NULL);
	}
	for (int i = 0; i < n; i++)
		free(env[i]);
	free(models);
	free(bin);
	return rv;
}

static int
worker_spawn(const char *const *extra)
{
	return worker_spawn_as(
	    &T.worker, T.log_path, sizeof(T.log_path), WORKER_ID, "-d", extra);
}

/* Waits until the worker dialed our req, pub and sub sockets. */
static void
worker_wait_connected(void)
{
	int64_t end = now_ms() + WAIT_MS;

	while (atomic_load(&T.req_pipes) < 1 || atomic_load(&T.pub_pipes) < 1 ||
	       atomic_load(&T.sub_pipes) < 1) {
		ck_assert_msg(h_proc_alive(&T.worker),
		    "the worker died; log %s", T.log_path);
		ck_assert_msg(now_ms() < end,
		    "the worker did not connect (req %d pub %d sub %d)",
		    atomic_load(&T.req_pipes), atomic_load(&T.pub_pipes),
		    atomic_load(&T.sub_pipes));
		nng_msleep(5);
	}
}

/* Starts the mock (when with_mock), the sockets and one worker. */
static void
wt_start(bool with_mock, const char *const *extra)
{
	char *path, err[256];

	T.dir = h_tmpdir("worker");
	ck_assert_ptr_nonnull(T.dir);
	if (with_mock) {
		ck_assert_int_eq(h_mock_start(&T.mock, NULL, NULL), 0);
		T.mock_up = true;
	}
	ck_assert_int_ge(
	    asprintf(&path, "%s/config/models.json", h_source_dir()), 0);
	ck_assert_msg(
	    models_load(path, &T.models, err, sizeof(err)) == 0, "%s", err);
	free(path);
	sockets_open();
	ck_assert_int_eq(worker_spawn(extra), 0);
	worker_wait_connected();
}

static void
wt_setup(void)
{
	memset(&T, 0, sizeof(T));
	T.rid_next = 1;
}

/* The worker's log holds no sanitizer report. */
static void
assert_log_sane(void)
{
	size_t n = 0;
	char *log = h_read_file(T.log_path, &n);

	if (log == NULL)
		return;
	ck_assert_msg(!contains(log, n, "Sanitizer") &&
			  !contains(log, n, "runtime error"),
	    "sanitizer report in %s", T.log_path);
	free(log);
}

static void
wt_teardown(void)
{
	if (T.worker.pid > 0) {
		int st = h_proc_stop(&T.worker, SIGTERM, WAIT_MS);

		/* Every test ends with a clean stop (leaks fail it under
		 * ASan). */
		ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		    "worker exit status %d; log %s", st, T.log_path);
	}
	assert_log_sane();
	if (T.worker2.pid > 0) {
		int st = h_proc_stop(&T.worker2, SIGTERM, WAIT_MS);

		ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		    "worker2 exit status %d; log %s", st, T.log_path2);
	}
	if (T.mock_up)
		h_mock_stop(&T.mock);
	nng_close(T.req);
	nng_close(T.pull);
	nng_close(T.pub);
	nng_close(T.sub);
	models_free(T.models);
	if (T.dir != NULL) {
		if (getenv("AIPROXY_KEEP_TMP") == NULL)
			h_rmtree(T.dir);
		free(T.dir);
	}
}

/* ---- requests ---- */

struct wt_req {
	struct msg_chat_req m;
	char body[4096];
};

/* A chat_req for prov with the user text (fault directives go in it). */
static void
req_init(struct wt_req *r, const char *prov, bool stream, const char *text)
{
	bool claude = strcmp(prov, "claude") == 0;
	int n;

	memset(r, 0, sizeof(*r));
	snprintf(r->m.request_id, sizeof(r->m.request_id), "wt-%d-%d",
	    (int)getpid(), T.rid_next++);
	snprintf(r->m.provider, sizeof(r->m.provider), "%s", prov);
	snprintf(
	    r->m.model, sizeof(r->m.model), "%s", claude ? CLAUDE_M : OPENAI_M);
	snprintf(r->m.api, sizeof(r->m.api), "%s",
	    claude ? "messages" : "chat_completions");
	r->m.stream = stream;
	if (stream)
		snprintf(r->m.stream_url, sizeof(r->m.stream_url), "%s",
		    T.stream_url);
	r->m.deadline_ms = 10000;
	snprintf(r->m.subject_type, sizeof(r->m.subject_type), "user");
	snprintf(r->m.subject_id, sizeof(r->m.subject_id), "u-1");
	snprintf(r->m.ip, sizeof(r->m.ip), "127.0.0.1");
	n = snprintf(r->body, sizeof(r->body),
	    "{\"model\":\"%s\",\"max_tokens\":64,\"messages\":[{\"role\":"
	    "\"user\",\"content\":\"%s\"}]%s}",
	    r->m.model, text,
	    !stream  ? ""
	    : claude ? ",\"stream\":true"
		     : ",\"stream\":true,\"stream_options\":{\"include_usage\":"
		       "true}");
	ck_assert(n > 0 && (size_t)n < sizeof(r->body));
	r->m.payload = r->body;
	r->m.payload_len = strlen(r->body);
}

struct pending {
	nng_ctx ctx;
	nng_aio *aio;
	int64_t t0;
};

static void
call_start(const struct msg_chat_req *m, struct pending *p)
{
	char *enc;
	size_t len;
	nng_msg *msg;

	ck_assert_int_eq(msg_chat_req_encode(m, &enc, &len), 0);
	ck_assert_int_eq(nng_msg_alloc(&msg, 0), 0);
	ck_assert_int_eq(nng_msg_append(msg, enc, len), 0);
	free(enc);
	ck_assert_int_eq(nng_ctx_open(&p->ctx, T.req), 0);
	ck_assert_int_eq(nng_aio_alloc(&p->aio, NULL, NULL), 0);
	nng_aio_set_timeout(p->aio, WAIT_MS);
	nng_aio_set_msg(p->aio, msg);
	p->t0 = now_ms();
	nng_ctx_send(p->ctx, p->aio);
	nng_aio_wait(p->aio);
	ck_assert_int_eq(nng_aio_result(p->aio), 0);
	/* Long enough for the slowest case (a stop after 5 s of grace);
	 * the tests assert the time they expect themselves. */
	nng_aio_set_timeout(p->aio, 15000);
	nng_ctx_recv(p->ctx, p->aio);
}

struct wt_res {
	char *raw; /* the reply; resp.payload points into it */
	size_t raw_len;
	struct msg_chat_resp resp;
	int64_t elapsed_ms;
	struct buf stream; /* chunk payloads, concatenated */
	char last_chunk[8192];
	struct msg_usage_event usage;
};

static void
call_finish(struct pending *p, struct wt_res *r)
{
	nng_msg *msg;
	int rv;

	nng_aio_wait(p->aio);
	rv = nng_aio_result(p->aio);
	ck_assert_msg(rv == 0, "no chat_resp: %s", nng_strerror(rv));
	msg = nng_aio_get_msg(p->aio);
	r->elapsed_ms = now_ms() - p->t0;
	r->raw_len = nng_msg_len(msg);
	r->raw = malloc(r->raw_len + 1);
	ck_assert_ptr_nonnull(r->raw);
	memcpy(r->raw, nng_msg_body(msg), r->raw_len);
	r->raw[r->raw_len] = '\0';
	nng_msg_free(msg);
	nng_aio_free(p->aio);
	nng_ctx_close(p->ctx);
	rv = msg_chat_resp_decode(r->raw, r->raw_len, &r->resp);
	ck_assert_msg(rv == 0, "bad chat_resp (%d): %.300s", rv, r->raw);
}

/* Receives n chunks of request_id: seq 0..n-1 in arrival order. */
static void
chunks_collect(
    const char *request_id, int64_t from, int64_t n, struct wt_res *r)
{
	nng_socket_set_ms(T.pull, NNG_OPT_RECVTIMEO, WAIT_MS);
	for (int64_t i = from; i < n; i++) {
		struct msg_stream_chunk c;
		char *buf = NULL;
		size_t len;
		int rv;

		rv = nng_recv(T.pull, &buf, &len, NNG_FLAG_ALLOC);
		ck_assert_msg(rv == 0, "chunk %lld of %lld: %s", (long long)i,
		    (long long)n, nng_strerror(rv));
		ck_assert_int_eq(msg_stream_chunk_decode(buf, len, &c), 0);
		ck_assert_str_eq(c.request_id, request_id);
		ck_assert_msg(c.seq == i, "chunk seq %lld arrived as #%lld",
		    (long long)c.seq, (long long)i);
		ck_assert_int_eq(
		    buf_append(&r->stream, c.payload, c.payload_len), 0);
		ck_assert_uint_lt(c.payload_len, sizeof(r->last_chunk));
		memcpy(r->last_chunk, c.payload, c.payload_len);
		r->last_chunk[c.payload_len] = '\0';
		nng_free(buf, len);
	}
}

/* The next usage event (any request); -ETIMEDOUT when none came. */
static int
usage_next(int timeout_ms, struct msg_usage_event *ret)
{
	const char *body;
	size_t len, blen;
	char *buf = NULL;
	int rv;

	nng_socket_set_ms(T.sub, NNG_OPT_RECVTIMEO, timeout_ms);
	if ((rv = nng_recv(T.sub, &buf, &len, NNG_FLAG_ALLOC)) != 0)
		return rv == NNG_ETIMEDOUT ? -ETIMEDOUT : -EIO;
	ck_assert_int_eq(
	    proto_topic_strip(PROTO_TOPIC_USAGE, buf, len, &body, &blen), 0);
	ck_assert_int_eq(msg_usage_event_decode(body, blen, ret), 0);
	nng_free(buf, len);
	return 0;
}

static void
res_init(struct wt_res *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->stream, 64u << 20);
}

static void
res_free(struct wt_res *r)
{
	free(r->raw);
	buf_free(&r->stream);
}

/* One whole call: the reply, every chunk, the usage event. */
static void
chat(const struct wt_req *q, struct wt_res *r)
{
	struct pending p;

	res_init(r);
	call_start(&q->m, &p);
	call_finish(&p, r);
	chunks_collect(q->m.request_id, 0, r->resp.chunks, r);
	ck_assert_msg(usage_next(WAIT_MS, &r->usage) == 0,
	    "no usage event for %s", q->m.request_id);
	ck_assert_str_eq(r->usage.request_id, q->m.request_id);
}

/* ---- expectations from the mock's documented formula ---- */

struct expect {
	int64_t input, output;
};

/* One user message of plain ASCII text: input = T/4 + 1; the reply is
 * "Mock reply to: " + the first 48 bytes; output = its words. */
static struct expect
expect_of(const char *text)
{
	char reply[128];
	struct expect e;
	bool in_word = false;

	e.input = (int64_t)strlen(text) / 4 + 1;
	snprintf(reply, sizeof(reply), "Mock reply to: %.48s", text);
	e.output = 0;
	for (const char *p = reply; *p != '\0'; p++) {
		if (*p != ' ' && !in_word)
			e.output++;
		in_word = *p != ' ';
	}
	return e;
}

static int64_t
cost_of(const char *model, int64_t in, int64_t out, int64_t cr, int64_t cw)
{
	const struct model *m = models_lookup(T.models, model);
	struct model_usage u = {
	    .input = in, .output = out, .cache_read = cr, .cache_write_5m = cw};

	ck_assert_ptr_nonnull(m);
	return models_cost(m, &u);
}

/* Replaces the per-request parts of a mock answer (ids "...mock<n>",
 * "created":<unix>) so two answers to one request compare equal. */
static char *
normalize(const char *in, size_t n)
{
	struct buf b;
	size_t i = 0;

	buf_init(&b, 64u << 20);
	while (i < n) {
		if (i + 4 <= n && memcmp(in + i, "mock", 4) == 0 && i + 4 < n &&
		    in[i + 4] >= '0' && in[i + 4] <= '9') {
			buf_append_str(&b, "mock#");
			i += 4;
			while (i < n && in[i] >= '0' && in[i] <= '9')
				i++;
		} else if (i + 10 <= n &&
			   memcmp(in + i, "\"created\":", 10) == 0) {
			buf_append_str(&b, "\"created\":#");
			i += 10;
			while (i < n && in[i] >= '0' && in[i] <= '9')
				i++;
		} else {
			buf_append(&b, in + i, 1);
			i++;
		}
	}
	return buf_steal(&b, NULL);
}

/* The mock's answer to the same body, fetched directly. */
static char *
mock_direct(const struct wt_req *q, size_t *ret_len)
{
	bool claude = strcmp(q->m.provider, "claude") == 0;
	const char *hc[] = {"x-api-key: " AKEY, "anthropic-version: 2023-06-01",
	    "content-type: application/json", NULL};
	const char *ho[] = {"Authorization: Bearer " OKEY,
	    "content-type: application/json", NULL};
	char url[256];
	struct h_resp resp;
	char *out;

	snprintf(url, sizeof(url), "%s%s", T.mock.url,
	    claude ? "/v1/messages" : "/v1/chat/completions");
	ck_assert_int_eq(h_http("POST", url, claude ? hc : ho, q->body,
			     strlen(q->body), WAIT_MS, &resp),
	    0);
	ck_assert_int_eq(resp.status, 200);
	out = normalize(resp.body, resp.body_len);
	*ret_len = strlen(out);
	h_resp_free(&resp);
	return out;
}

/* The mock's log entry of the request with this x-request-id, once its
 * outcome is no longer "pending" (or want_outcome when given).  Caller
 * decrefs. */
static json_t *
mock_entry(const char *request_id, const char *want_outcome)
{
	int64_t end = now_ms() + WAIT_MS;
	char url[256];

	snprintf(url, sizeof(url), "%s/_mock/requests", T.mock.url);
	for (;;) {
		struct h_resp resp;
		json_t *arr, *e, *found = NULL;
		size_t i;

		ck_assert_int_eq(
		    h_http("GET", url, NULL, NULL, 0, WAIT_MS, &resp), 0);
		arr = json_loads(resp.body, 0, NULL);
		h_resp_free(&resp);
		ck_assert(json_is_array(arr));
		json_array_foreach(arr, i, e) {
			const char *rid = json_string_value(json_object_get(
			    json_object_get(e, "headers"), "x-request-id"));
			const char *oc =
			    json_string_value(json_object_get(e, "outcome"));

			if (rid == NULL || strcmp(rid, request_id) != 0 ||
			    oc == NULL)
				continue;
			if (want_outcome != NULL ? strcmp(oc, want_outcome) == 0
						 : strcmp(oc, "pending") != 0)
				found = json_incref(e);
		}
		json_decref(arr);
		if (found != NULL)
			return found;
		ck_assert_msg(now_ms() < end,
		    "mock has no entry for %s with outcome %s", request_id,
		    want_outcome ? want_outcome : "(final)");
		nng_msleep(10);
	}
}

static const char *
hdr_of(json_t *entry, const char *name)
{
	return json_string_value(
	    json_object_get(json_object_get(entry, "headers"), name));
}

static void
check_usage_event(
    const struct wt_res *r, const struct wt_req *q, const char *status)
{
	const struct msg_usage_event *u = &r->usage;

	ck_assert_str_eq(u->request_id, q->m.request_id);
	ck_assert_str_eq(u->status, status);
	/* The usage sender's stream: "<worker id>:<journal epoch>". */
	ck_assert_int_eq(
	    strncmp(u->worker_id, WORKER_ID ":", strlen(WORKER_ID ":")), 0);
	ck_assert_str_eq(u->provider, q->m.provider);
	ck_assert_str_eq(u->model, q->m.model);
	ck_assert_str_eq(u->subject_type, "user");
	ck_assert_str_eq(u->subject_id, "u-1");
	ck_assert_str_eq(u->ip, "127.0.0.1");
	ck_assert_int_eq(strncmp(u->event_id, "evt_", 4), 0);
	ck_assert_int_ge(u->seq, 1);
	ck_assert_int_eq(u->input_tokens, r->resp.input_tokens);
	ck_assert_int_eq(u->output_tokens, r->resp.output_tokens);
	ck_assert_int_eq(u->cache_read_tokens, r->resp.cache_read_tokens);
	ck_assert_int_eq(u->cache_write_tokens, r->resp.cache_write_tokens);
	ck_assert_int_eq(u->cost_micro_usd, r->resp.cost_micro_usd);
	ck_assert_int_eq(u->http_status, r->resp.status);
	ck_assert_int_le(u->upstream_ms, u->total_ms + 1);
	ck_assert(!u->cached);
}

static void
assert_log_clean(void)
{
	size_t n = 0;
	char *log = h_read_file(T.log_path, &n);

	ck_assert_ptr_nonnull(log);
	ck_assert_msg(!contains(log, n, AKEY) && !contains(log, n, OKEY),
	    "a key in the worker log %s", T.log_path);
	ck_assert(!contains(log, n, "Bearer"));
	free(log);
}

/* ---- non-streamed calls ---- */

static const char hello[] = "Hello there, how are you today?";

static void
nonstream(const char *prov)
{
	struct expect e = expect_of(hello);
	struct wt_req q;
	struct wt_res r;
	char *direct, *got;
	size_t dlen;
	json_t *entry, *body;

	wt_start(true, NULL);
	req_init(&q, prov, false, hello);
	if (strcmp(prov, "claude") == 0)
		snprintf(q.m.anthropic_beta, sizeof(q.m.anthropic_beta),
		    "prompt-caching-2024-07-31");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 200);
	ck_assert_str_eq(r.resp.error_code, "");
	ck_assert_int_eq(r.resp.upstream_status, 200);
	ck_assert_str_eq(r.resp.request_id, q.m.request_id);
	ck_assert_str_eq(r.resp.provider, prov);
	ck_assert_str_eq(r.resp.model, q.m.model);
	ck_assert_int_eq(r.resp.chunks, 0);
	ck_assert_int_eq(r.resp.input_tokens, e.input);
	ck_assert_int_eq(r.resp.output_tokens, e.output);
	ck_assert_int_eq(r.resp.cache_read_tokens, 0);
	ck_assert_int_eq(
	    r.resp.cost_micro_usd, cost_of(q.m.model, e.input, e.output, 0, 0));
	ck_assert_int_eq(strncmp(r.resp.upstream_request_id, "req_", 4), 0);
	/* The payload is the upstream body: the same bytes as a direct
	 * fetch, once the per-request ids are masked. */
	direct = mock_direct(&q, &dlen);
	got = normalize(r.resp.payload, r.resp.payload_len);
	ck_assert_str_eq(got, direct);
	body = json_loadb(r.resp.payload, r.resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(body);
	json_decref(body);
	check_usage_event(&r, &q, "ok");
	ck_assert_int_eq(r.usage.seq, 1);
	/* What the upstream saw. */
	entry = mock_entry(q.m.request_id, "completed");
	ck_assert_str_eq(hdr_of(entry, "content-type"), "application/json");
	if (strcmp(prov, "claude") == 0) {
		ck_assert_str_eq(hdr_of(entry, "x-api-key"), "<ok>");
		ck_assert_str_eq(hdr_of(entry, "authorization"), "<missing>");
		ck_assert_str_eq(
		    hdr_of(entry, "anthropic-version"), "2023-06-01");
		ck_assert_str_eq(hdr_of(entry, "anthropic-beta"),
		    "prompt-caching-2024-07-31");
	} else {
		ck_assert_str_eq(hdr_of(entry, "authorization"), "<ok>");
		ck_assert_str_eq(hdr_of(entry, "x-api-key"), "<missing>");
		ck_assert_ptr_null(hdr_of(entry, "anthropic-version"));
	}
	json_decref(entry);
	assert_log_clean();
	free(direct);
	free(got);
	res_free(&r);
}

START_TEST(test_nonstream_claude)
{
	nonstream("claude");
	/* By hand: 31 bytes -> 8 input tokens; "Mock reply to: Hello there,
	 * how are you today?" is 9 words; sonnet 4.5 at 3 / 15 USD per 1M:
	 * 8*3 + 9*15 = 159 micro-USD. */
	ck_assert_int_eq(cost_of(CLAUDE_M, 8, 9, 0, 0), 159);
	ck_assert_int_eq(expect_of(hello).input, 8);
	ck_assert_int_eq(expect_of(hello).output, 9);
}
END_TEST

START_TEST(test_nonstream_openai)
{
	nonstream("openai");
}
END_TEST

START_TEST(test_cache_tokens)
{
	const char *text =
	    "cached please [[mock:cache-read=100;cache-write=40]]";
	struct expect e = expect_of(text);
	struct wt_req q;
	struct wt_res r;

	wt_start(true, NULL);
	req_init(&q, "claude", false, text);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 200);
	ck_assert_int_eq(r.resp.input_tokens, e.input);
	ck_assert_int_eq(r.resp.cache_read_tokens, 100);
	ck_assert_int_eq(r.resp.cache_write_tokens, 40);
	ck_assert_int_eq(r.resp.cost_micro_usd,
	    cost_of(CLAUDE_M, e.input, e.output, 100, 40));
	check_usage_event(&r, &q, "ok");
	res_free(&r);

	/* OpenAI: prompt_tokens includes the cached ones; input excludes
	 * them. */
	req_init(&q, "openai", true, "cached too [[mock:cache-read=50]]");
	e = expect_of("cached too [[mock:cache-read=50]]");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 200);
	ck_assert_int_eq(r.resp.input_tokens, e.input);
	ck_assert_int_eq(r.resp.cache_read_tokens, 50);
	ck_assert_int_eq(
	    r.resp.cost_micro_usd, cost_of(OPENAI_M, e.input, e.output, 50, 0));
	check_usage_event(&r, &q, "ok");
	res_free(&r);
}
END_TEST

/* ---- streams ---- */

static void
stream(const char *prov)
{
	/* Spaced events, so that they arrive as many chunks. */
	static const char text[] = "Hello there, how are you today? "
				   "[[mock:chunk-delay-ms=5]]";
	struct expect e = expect_of(text);
	struct wt_req q;
	struct wt_res r;
	char *direct, *got;
	size_t dlen;

	wt_start(true, NULL);
	req_init(&q, prov, true, text);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 200);
	ck_assert_str_eq(r.resp.error_code, "");
	ck_assert_int_gt(r.resp.chunks, 5);
	ck_assert_uint_eq(r.resp.payload_len, 0);
	ck_assert_int_eq(r.resp.input_tokens, e.input);
	ck_assert_int_eq(r.resp.output_tokens, e.output);
	ck_assert_int_eq(
	    r.resp.cost_micro_usd, cost_of(q.m.model, e.input, e.output, 0, 0));
	/* Byte-faithful: the chunks concatenate to the mock's own stream. */
	direct = mock_direct(&q, &dlen);
	got = normalize(r.stream.data, r.stream.len);
	ck_assert_str_eq(got, direct);
	if (strcmp(prov, "openai") == 0)
		ck_assert(r.stream.len > 14 &&
			  strcmp(r.stream.data + r.stream.len - 14,
			      "data: [DONE]\n\n") == 0);
	else
		ck_assert(contains(
		    r.stream.data, r.stream.len, "event: message_stop\n"));
	check_usage_event(&r, &q, "ok");
	assert_log_clean();
	free(direct);
	free(got);
	res_free(&r);
}

START_TEST(test_stream_claude)
{
	stream("claude");
}
END_TEST

START_TEST(test_stream_openai)
{
	stream("openai");
}
END_TEST

/* ---- upstream errors ---- */

struct err_case {
	const char *prov;
	const char *fault;
	int status;
	const char *code;
	int upstream;
	int64_t retry_after_ms;
	const char *body_has; /* in the provider's error body */
};

static const struct err_case err_cases[] = {
    {"claude", "status=429;retry-after=7", 429, "upstream_rate_limited", 429,
	7000, "rate_limit_error"},
    {"openai", "status=429;retry-after-ms=1500", 429, "upstream_rate_limited",
	429, 1500, "rate_limit_exceeded"},
    {"claude", "status=529", 503, "upstream_unavailable", 529, 0,
	"overloaded_error"},
    {"openai", "status=503", 503, "upstream_unavailable", 503, 0,
	"server_error"},
    {"claude", "status=500", 502, "upstream_error", 500, 0, "api_error"},
    {"openai", "status=500", 502, "upstream_error", 500, 0, "server_error"},
    {"claude", "status=400", 400, "upstream_bad_request", 400, 0,
	"invalid_request_error"},
    {"openai", "status=404", 404, "upstream_bad_request", 404, 0,
	"model_not_found"},
    {"claude", "status=504", 504, "upstream_timeout", 504, 0, "timeout_error"},
    {"claude", "status=403", 502, "upstream_auth", 403, 0, "permission_error"},
};

START_TEST(test_upstream_errors)
{
	char text[256];
	struct wt_req q;
	struct wt_res r;

	wt_start(true, NULL);
	for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		const struct err_case *c = &err_cases[i];

		/* Streamed or not, an error answer sends no chunk. */
		snprintf(text, sizeof(text), "fail [[mock:%s]]", c->fault);
		req_init(&q, c->prov, i % 2 == 1, text);
		chat(&q, &r);
		ck_assert_msg(r.resp.status == c->status, "%s %s: %lld",
		    c->prov, c->fault, (long long)r.resp.status);
		ck_assert_str_eq(r.resp.error_code, c->code);
		ck_assert_int_eq(r.resp.upstream_status, c->upstream);
		ck_assert_int_eq(r.resp.retry_after_ms, c->retry_after_ms);
		ck_assert_int_eq(r.resp.chunks, 0);
		ck_assert_msg(
		    contains(r.resp.payload, r.resp.payload_len, c->body_has),
		    "%s: payload %.*s", c->fault, (int)r.resp.payload_len,
		    r.resp.payload);
		ck_assert_int_eq(r.resp.cost_micro_usd, 0);
		ck_assert(strlen(r.resp.error_message) > 0);
		check_usage_event(&r, &q, "error");
		res_free(&r);
	}
}
END_TEST

START_TEST(test_bad_key)
{
	static const char *const env[] = {
	    "CLAUDE_API_KEY=wrong-anthropic-key-1234",
	    "OPENAI_API_KEY=wrong-openai-key-5678", NULL};
	const char *provs[] = {"claude", "openai"};
	struct wt_req q;
	struct wt_res r;
	size_t n;
	char *log;

	wt_start(true, env);
	for (int i = 0; i < 2; i++) {
		req_init(&q, provs[i], i == 1, hello);
		chat(&q, &r);
		ck_assert_int_eq(r.resp.status, 502);
		ck_assert_str_eq(r.resp.error_code, "upstream_auth");
		ck_assert_int_eq(r.resp.upstream_status, 401);
		/* The provider's 401 body, as it came, and no key in it. */
		ck_assert(contains(r.resp.payload, r.resp.payload_len,
		    i == 0 ? "authentication_error" : "invalid_api_key"));
		ck_assert(!contains(r.resp.payload, r.resp.payload_len,
		    "wrong-anthropic-key-1234"));
		ck_assert(!contains(r.resp.payload, r.resp.payload_len,
		    "wrong-openai-key-5678"));
		ck_assert(!contains(r.raw, r.raw_len, "wrong-"));
		check_usage_event(&r, &q, "error");
		res_free(&r);
	}
	log = h_read_file(T.log_path, &n);
	ck_assert_ptr_nonnull(log);
	ck_assert(!contains(log, n, "wrong-anthropic-key-1234"));
	ck_assert(!contains(log, n, "wrong-openai-key-5678"));
	free(log);
}
END_TEST

START_TEST(test_timeout)
{
	struct wt_req q;
	struct wt_res r;

	wt_start(true, NULL);
	req_init(&q, "claude", false, "slow [[mock:latency-ms=3000]]");
	q.m.deadline_ms = 300;
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 504);
	ck_assert_str_eq(r.resp.error_code, "upstream_timeout");
	ck_assert_int_eq(r.resp.upstream_status, 0);
	ck_assert_int_ge(r.elapsed_ms, 250);
	ck_assert_int_lt(r.elapsed_ms, 2000);
	check_usage_event(&r, &q, "error");
	res_free(&r);

	/* A stream that stalls after its first events: chunks, then the
	 * error event, 502. */
	req_init(&q, "openai", true, "stall [[mock:stall-after=2]]");
	q.m.deadline_ms = 500;
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_stream_error");
	ck_assert_int_ge(r.resp.chunks, 2);
	ck_assert(strncmp(r.last_chunk, "data: {\"error\":", 15) == 0 ||
		  strncmp(r.last_chunk, "\n\ndata: {\"error\":", 17) == 0);
	check_usage_event(&r, &q, "error");
	res_free(&r);
}
END_TEST

START_TEST(test_unreachable)
{
	char env1[128], env2[128];
	const char *env[] = {env1, env2, NULL};
	int port = h_free_port();
	struct wt_req q;
	struct wt_res r;

	/* Nobody listens there. */
	snprintf(
	    env1, sizeof(env1), "CLAUDE_BASE_URL=http://127.0.0.1:%d", port);
	snprintf(
	    env2, sizeof(env2), "OPENAI_BASE_URL=http://127.0.0.1:%d", port);
	wt_start(false, env);
	req_init(&q, "claude", true, hello);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_unreachable");
	ck_assert_int_eq(r.resp.upstream_status, 0);
	ck_assert_int_eq(r.resp.chunks, 0);
	ck_assert_int_lt(r.elapsed_ms, 2000);
	check_usage_event(&r, &q, "error");
	res_free(&r);
}
END_TEST

START_TEST(test_drop_after)
{
	struct wt_req q;
	struct wt_res r;

	wt_start(true, NULL);
	req_init(&q, "claude", true, "drop me [[mock:drop-after=3]]");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_stream_error");
	ck_assert_int_eq(r.resp.upstream_status, 200);
	ck_assert_int_ge(r.resp.chunks, 2);
	/* The stream: the first events as sent, then our error event. */
	ck_assert(strncmp(r.stream.data, "event: message_start\n", 21) == 0);
	ck_assert_str_eq(r.last_chunk,
	    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
	    "\"api_error\",\"message\":\"the connection to the provider "
	    "broke\"}}\n\n");
	/* message_start was seen: its input tokens are billed. */
	ck_assert_int_eq(r.resp.input_tokens,
	    expect_of("drop me [[mock:drop-after=3]]").input);
	ck_assert_int_gt(r.resp.cost_micro_usd, 0);
	check_usage_event(&r, &q, "error");
	res_free(&r);

	req_init(&q, "openai", true, "drop me [[mock:drop-after=2]]");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_stream_error");
	ck_assert_str_eq(r.last_chunk,
	    "data: {\"error\":{\"message\":\"the connection to the provider "
	    "broke\",\"type\":\"server_error\",\"param\":null,\"code\":"
	    "\"upstream_error\"}}\n\n");
	/* Cut before the usage chunk: nothing to bill. */
	ck_assert_int_eq(r.resp.input_tokens, 0);
	check_usage_event(&r, &q, "error");
	res_free(&r);
}
END_TEST

START_TEST(test_error_event_after)
{
	struct wt_req q;
	struct wt_res r;

	wt_start(true, NULL);
	req_init(&q, "claude", true, "err [[mock:error-event-after=3]]");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_stream_error");
	ck_assert_str_eq(r.resp.error_message, "Overloaded");
	/* The provider's own error event ended the stream: no second one. */
	ck_assert(contains(r.stream.data, r.stream.len, "overloaded_error"));
	ck_assert(!contains(r.stream.data, r.stream.len, "api_error"));
	check_usage_event(&r, &q, "error");
	res_free(&r);
}
END_TEST

/* ---- cancel ---- */

static void
publish_cancel(const char *request_id)
{
	struct msg_cancel c;
	char *enc, *wrapped;
	size_t len, wlen;

	memset(&c, 0, sizeof(c));
	snprintf(c.request_id, sizeof(c.request_id), "%s", request_id);
	ck_assert_int_eq(msg_cancel_encode(&c, &enc, &len), 0);
	ck_assert_int_eq(
	    proto_topic_wrap(PROTO_TOPIC_CTL, enc, len, &wrapped, &wlen), 0);
	ck_assert_int_eq(nng_send(T.pub, wrapped, wlen, 0), 0);
	free(enc);
	free(wrapped);
}

START_TEST(test_cancel)
{
	struct wt_req q;
	struct wt_res r;
	struct pending p;
	json_t *entry;
	int64_t t0;

	wt_start(true, NULL);
	req_init(&q, "claude", true, "long one [[mock:chunk-delay-ms=200]]");
	res_init(&r);
	call_start(&q.m, &p);
	/* Streaming has begun: the first chunk is here. */
	chunks_collect(q.m.request_id, 0, 1, &r);
	t0 = now_ms();
	publish_cancel(q.m.request_id);
	call_finish(&p, &r);
	ck_assert_int_lt(now_ms() - t0, 1000);
	ck_assert_int_eq(r.resp.status, 499);
	ck_assert_str_eq(r.resp.error_code, "cancelled");
	ck_assert_int_ge(r.resp.chunks, 1);
	chunks_collect(q.m.request_id, 1, r.resp.chunks, &r);
	/* No error event is added for a client that is gone. */
	ck_assert(!contains(r.stream.data, r.stream.len, "api_error"));
	ck_assert_int_eq(usage_next(WAIT_MS, &r.usage), 0);
	check_usage_event(&r, &q, "aborted");
	/* Tokens seen so far (message_start) are billed. */
	ck_assert_int_gt(r.usage.input_tokens, 0);
	/* The upstream saw the connection close. */
	entry = mock_entry(q.m.request_id, "client_closed");
	json_decref(entry);
	res_free(&r);

	/* A cancel for an unknown id is harmless. */
	publish_cancel("no-such-request");
	req_init(&q, "openai", false, hello);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 200);
	res_free(&r);
}
END_TEST

/* ---- many calls at once ---- */

START_TEST(test_concurrent)
{
	enum { N = 200 };
	static struct wt_req q[N];
	static struct pending p[N];
	static struct wt_res r[N];
	bool seen[N];
	int64_t t0, elapsed, seqs[N];

	wt_start(true, NULL);
	t0 = now_ms();
	for (int i = 0; i < N; i++) {
		req_init(&q[i], i % 2 ? "openai" : "claude", false,
		    "parallel [[mock:latency-ms=500]]");
		res_init(&r[i]);
		call_start(&q[i].m, &p[i]);
	}
	for (int i = 0; i < N; i++) {
		call_finish(&p[i], &r[i]);
		ck_assert_int_eq(r[i].resp.status, 200);
		ck_assert_str_eq(r[i].resp.request_id, q[i].m.request_id);
	}
	elapsed = now_ms() - t0;
	/* Each waits 500 ms upstream; together they take about as long as
	 * one: no call blocks another. */
	ck_assert_int_ge(elapsed, 500);
	ck_assert_msg(
	    elapsed < 2000, "%d calls took %lld ms", N, (long long)elapsed);
	/* Exactly one usage event per call, sequence numbers distinct. */
	memset(seen, 0, sizeof(seen));
	for (int k = 0; k < N; k++) {
		struct msg_usage_event u;
		const char *dash;
		long idx;

		ck_assert_int_eq(usage_next(WAIT_MS, &u), 0);
		/* request ids are "wt-<pid>-<n>", n from 1 */
		dash = strrchr(u.request_id, '-');
		ck_assert_ptr_nonnull(dash);
		idx = strtol(dash + 1, NULL, 10) - 1;
		ck_assert(idx >= 0 && idx < N);
		ck_assert_msg(!seen[idx], "two events for %s", u.request_id);
		seen[idx] = true;
		ck_assert_str_eq(u.status, "ok");
		ck_assert_int_eq(u.cost_micro_usd, r[idx].resp.cost_micro_usd);
		/* Journaled by several threads: distinct, in any order. */
		ck_assert_int_gt(u.seq, 0);
		for (int j = 0; j < k; j++)
			ck_assert_int_ne(seqs[j], u.seq);
		seqs[k] = u.seq;
	}
	/* And nothing more. */
	{
		struct msg_usage_event extra;

		ck_assert_int_eq(usage_next(200, &extra), -ETIMEDOUT);
	}
	for (int i = 0; i < N; i++)
		res_free(&r[i]);
}
END_TEST

/* ---- other messages ---- */

static int
raw_call(const void *buf, size_t len, char **ret, size_t *ret_len)
{
	struct pending p;
	nng_msg *msg;
	int rv;

	ck_assert_int_eq(nng_msg_alloc(&msg, 0), 0);
	ck_assert_int_eq(nng_msg_append(msg, buf, len), 0);
	ck_assert_int_eq(nng_ctx_open(&p.ctx, T.req), 0);
	ck_assert_int_eq(nng_aio_alloc(&p.aio, NULL, NULL), 0);
	nng_aio_set_timeout(p.aio, WAIT_MS);
	nng_aio_set_msg(p.aio, msg);
	nng_ctx_send(p.ctx, p.aio);
	nng_aio_wait(p.aio);
	ck_assert_int_eq(nng_aio_result(p.aio), 0);
	nng_ctx_recv(p.ctx, p.aio);
	nng_aio_wait(p.aio);
	if ((rv = nng_aio_result(p.aio)) == 0) {
		msg = nng_aio_get_msg(p.aio);
		*ret_len = nng_msg_len(msg);
		*ret = malloc(*ret_len + 1);
		memcpy(*ret, nng_msg_body(msg), *ret_len);
		(*ret)[*ret_len] = '\0';
		nng_msg_free(msg);
	}
	nng_aio_free(p.aio);
	nng_ctx_close(p.ctx);
	return rv;
}

static void
expect_bad_request(const void *buf, size_t len)
{
	struct msg_ack a;
	char *reply;
	size_t rlen;

	ck_assert_int_eq(raw_call(buf, len, &reply, &rlen), 0);
	ck_assert_msg(msg_ack_decode(reply, rlen, &a) == 0, "%s", reply);
	ck_assert(!a.ok);
	ck_assert_str_eq(a.code, "bad_request");
	free(reply);
}

START_TEST(test_ping_status_bad)
{
	struct msg_ping ping = {.ts_us = 4242};
	struct msg_pong pong;
	struct msg_status_req sq;
	struct msg_status_resp sr;
	struct wt_req q;
	char *enc, *reply;
	size_t len, rlen;
	json_t *doc;

	wt_start(true, NULL);
	snprintf(ping.request_id, sizeof(ping.request_id), "ping-1");
	ck_assert_int_eq(msg_ping_encode(&ping, &enc, &len), 0);
	ck_assert_int_eq(raw_call(enc, len, &reply, &rlen), 0);
	free(enc);
	ck_assert_int_eq(msg_pong_decode(reply, rlen, &pong), 0);
	ck_assert_str_eq(pong.daemon, "provider-worker");
	ck_assert_int_eq(pong.pid, T.worker.pid);
	ck_assert_int_eq(pong.ts_us, 4242);
	ck_assert_str_eq(pong.request_id, "ping-1");
	free(reply);

	/* Garbage, a truncated chat_req, a message a worker never takes:
	 * answered, counted, survived. */
	expect_bad_request("garbage", 7);
	req_init(&q, "claude", false, hello);
	ck_assert_int_eq(msg_chat_req_encode(&q.m, &enc, &len), 0);
	expect_bad_request(enc, len - 3);
	free(enc);
	ck_assert_int_eq(msg_pong_encode(&pong, &enc, &len), 0);
	expect_bad_request(enc, len);
	free(enc);

	memset(&sq, 0, sizeof(sq));
	snprintf(sq.what, sizeof(sq.what), "health");
	ck_assert_int_eq(msg_status_req_encode(&sq, &enc, &len), 0);
	ck_assert_int_eq(raw_call(enc, len, &reply, &rlen), 0);
	free(enc);
	ck_assert_int_eq(msg_status_resp_decode(reply, rlen, &sr), 0);
	ck_assert_str_eq(sr.daemon, "provider-worker");
	ck_assert_str_eq(sr.state, "up");
	doc = json_loadb(sr.payload, sr.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "worker_id")), WORKER_ID);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "in_flight")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(
			     json_object_get(doc, "totals"), "bad_messages")),
	    3);
	ck_assert(json_is_true(
	    json_object_get(json_object_get(doc, "providers"), "claude")));
	json_decref(doc);
	free(reply);
	ck_assert(h_proc_alive(&T.worker));
}
END_TEST

START_TEST(test_refusals)
{
	static const char *const env[] = {"OPENAI_API_KEY=", NULL};
	struct wt_req q;
	struct wt_res r;

	wt_start(true, env);
	req_init(&q, "claude", false, hello);
	snprintf(q.m.model, sizeof(q.m.model), "claude-unknown-1");
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 400);
	ck_assert_str_eq(r.resp.error_code, "unknown_model");
	check_usage_event(&r, &q, "error");
	res_free(&r);

	req_init(&q, "claude", false, hello);
	snprintf(q.m.model, sizeof(q.m.model), "%s", OPENAI_M);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 400);
	ck_assert_str_eq(r.resp.error_code, "model_provider_mismatch");
	res_free(&r);

	/* Only the Claude key is set. */
	req_init(&q, "openai", false, hello);
	chat(&q, &r);
	ck_assert_int_eq(r.resp.status, 503);
	ck_assert_str_eq(r.resp.error_code, "provider_not_configured");
	res_free(&r);

	/* Nothing reached the upstream. */
	{
		char url[256];
		struct h_resp resp;

		snprintf(url, sizeof(url), "%s/_mock/requests", T.mock.url);
		ck_assert_int_eq(
		    h_http("GET", url, NULL, NULL, 0, WAIT_MS, &resp), 0);
		ck_assert_str_eq(resp.body, "[]");
		h_resp_free(&resp);
	}
}
END_TEST

/* ---- life cycle ---- */

static void
expect_exit_0(int64_t max_ms)
{
	int64_t t0 = now_ms();
	int st = h_proc_stop(&T.worker, SIGTERM, 15000);

	ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	    "exit status %d; log %s", st, T.log_path);
	ck_assert_int_lt(now_ms() - t0, max_ms);
}

START_TEST(test_sigterm_idle)
{
	wt_start(true, NULL);
	expect_exit_0(2000);
	assert_log_clean();
}
END_TEST

START_TEST(test_sigterm_in_flight_finishes)
{
	struct wt_req q;
	struct wt_res r;
	struct pending p;

	wt_start(true, NULL);
	req_init(&q, "openai", false, "almost done [[mock:latency-ms=800]]");
	res_init(&r);
	call_start(&q.m, &p);
	/* The call is at the upstream before the signal. */
	json_decref(mock_entry(q.m.request_id, "pending"));
	kill(T.worker.pid, SIGTERM);
	call_finish(&p, &r);
	ck_assert_int_eq(r.resp.status, 200);
	ck_assert_int_eq(usage_next(WAIT_MS, &r.usage), 0);
	check_usage_event(&r, &q, "ok");
	expect_exit_0(3000);
	res_free(&r);
}
END_TEST

START_TEST(test_sigterm_aborts_after_grace)
{
	struct wt_req q;
	struct wt_res r;
	struct pending p;
	int64_t t0;

	wt_start(true, NULL);
	req_init(&q, "claude", true, "stuck [[mock:stall-after=2]]");
	q.m.deadline_ms = 60000;
	res_init(&r);
	call_start(&q.m, &p);
	chunks_collect(q.m.request_id, 0, 1, &r);
	t0 = now_ms();
	kill(T.worker.pid, SIGTERM);
	call_finish(&p, &r);
	/* About 5 s of grace, then the abort. */
	ck_assert_int_ge(now_ms() - t0, 4500);
	ck_assert_int_eq(r.resp.status, 502);
	ck_assert_str_eq(r.resp.error_code, "upstream_stream_error");
	chunks_collect(q.m.request_id, 1, r.resp.chunks, &r);
	ck_assert(
	    contains(r.last_chunk, strlen(r.last_chunk), "event: error\n"));
	ck_assert_int_eq(usage_next(WAIT_MS, &r.usage), 0);
	check_usage_event(&r, &q, "aborted");
	expect_exit_0(3000);
	res_free(&r);
}
END_TEST

START_TEST(test_no_keys_is_fatal)
{
	static const char *const env[] = {
	    "CLAUDE_API_KEY=", "OPENAI_API_KEY=", NULL};
	int64_t end;
	size_t n;
	char *log;
	int st;

	T.dir = h_tmpdir("worker");
	ck_assert_int_eq(h_mock_start(&T.mock, NULL, NULL), 0);
	T.mock_up = true;
	sockets_open();
	ck_assert_int_eq(worker_spawn(env), 0);
	end = now_ms() + WAIT_MS;
	while (h_proc_alive(&T.worker)) {
		ck_assert_msg(now_ms() < end, "the worker runs without keys");
		nng_msleep(5);
	}
	st = h_proc_stop(&T.worker, SIGTERM, 100);
	ck_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
	log = h_read_file(T.log_path, &n);
	ck_assert_ptr_nonnull(log);
	ck_assert(contains(log, n, "CLAUDE_API_KEY"));
	ck_assert(contains(log, n, "OPENAI_API_KEY"));
	free(log);

	/* -n says so too; with one key the configuration is fine. */
	ck_assert_int_eq(worker_spawn_as(&T.worker, T.log_path,
			     sizeof(T.log_path), "n1", "-n", env),
	    0);
	end = now_ms() + WAIT_MS;
	while (h_proc_alive(&T.worker)) {
		ck_assert(now_ms() < end);
		nng_msleep(5);
	}
	st = h_proc_stop(&T.worker, SIGTERM, 100);
	ck_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
	log = h_read_file(T.log_path, &n);
	ck_assert(contains(log, n, "CLAUDE_API_KEY") &&
		  contains(log, n, "OPENAI_API_KEY"));
	free(log);
	{
		static const char *const one[] = {"CLAUDE_API_KEY=", NULL};

		ck_assert_int_eq(worker_spawn_as(&T.worker, T.log_path,
				     sizeof(T.log_path), "n2", "-n", one),
		    0);
	}
	end = now_ms() + WAIT_MS;
	while (h_proc_alive(&T.worker)) {
		ck_assert(now_ms() < end);
		nng_msleep(5);
	}
	st = h_proc_stop(&T.worker, SIGTERM, 100);
	ck_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

START_TEST(test_two_workers_two_gateways)
{
	enum { N = 40 };
	static struct wt_req q[N];
	static struct pending p[N];
	static struct wt_res r[N];
	int64_t end, count[2] = {0, 0}, seqsum[2] = {0, 0};
	char url2[64];
	nng_socket pull2;
	struct wt_req a, b;
	struct wt_res ra, rb;

	wt_start(true, NULL);
	/* A second worker joins the same gateway: nothing else changes. */
	ck_assert_int_eq(worker_spawn_as(&T.worker2, T.log_path2,
			     sizeof(T.log_path2), "wt2", "-d", NULL),
	    0);
	end = now_ms() + WAIT_MS;
	while (atomic_load(&T.req_pipes) < 2 || atomic_load(&T.pub_pipes) < 2 ||
	       atomic_load(&T.sub_pipes) < 2) {
		ck_assert_msg(
		    now_ms() < end, "the second worker did not connect");
		nng_msleep(5);
	}
	for (int i = 0; i < N; i++) {
		req_init(&q[i], i % 2 ? "openai" : "claude", false,
		    "shared [[mock:latency-ms=300]]");
		res_init(&r[i]);
		call_start(&q[i].m, &p[i]);
	}
	for (int i = 0; i < N; i++) {
		call_finish(&p[i], &r[i]);
		ck_assert_int_eq(r[i].resp.status, 200);
	}
	/* Both carried calls; each numbers its own events from 1. */
	for (int k = 0; k < N; k++) {
		struct msg_usage_event u;
		int w;

		ck_assert_int_eq(usage_next(WAIT_MS, &u), 0);
		w = strncmp(u.worker_id, "wt2:", 4) == 0;
		ck_assert(w == 1 || strncmp(u.worker_id, WORKER_ID ":",
					strlen(WORKER_ID ":")) == 0);
		count[w]++;
		seqsum[w] += u.seq;
	}
	ck_assert_int_gt(count[0], 0);
	ck_assert_int_gt(count[1], 0);
	ck_assert_int_eq(seqsum[0], count[0] * (count[0] + 1) / 2);
	ck_assert_int_eq(seqsum[1], count[1] * (count[1] + 1) / 2);
	for (int i = 0; i < N; i++)
		res_free(&r[i]);

	/* Two gateways (two stream URLs): each stream goes to its own. */
	url_free_port(url2, sizeof(url2));
	ck_assert_int_eq(nng_pull0_open(&pull2), 0);
	ck_assert_int_eq(nng_listen(pull2, url2, NULL, 0), 0);
	req_init(&a, "claude", true, hello);
	req_init(&b, "openai", true, hello);
	snprintf(b.m.stream_url, sizeof(b.m.stream_url), "%s", url2);
	chat(&a, &ra);
	ck_assert_int_eq(ra.resp.status, 200);
	{
		/* b's chunks come on pull2: swap it in for the collection. */
		nng_socket keep = T.pull;

		T.pull = pull2;
		chat(&b, &rb);
		T.pull = keep;
	}
	ck_assert_int_eq(rb.resp.status, 200);
	ck_assert(contains(rb.stream.data, rb.stream.len, "data: [DONE]"));
	ck_assert(contains(ra.stream.data, ra.stream.len, "message_stop"));
	res_free(&ra);
	res_free(&rb);
	nng_close(pull2);
}
END_TEST

static Suite *
worker_suite(void)
{
	Suite *s = suite_create("provider_worker");
	TCase *tc;

	tc = tcase_create("chat");
	tcase_add_checked_fixture(tc, wt_setup, wt_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_nonstream_claude);
	tcase_add_test(tc, test_nonstream_openai);
	tcase_add_test(tc, test_cache_tokens);
	tcase_add_test(tc, test_stream_claude);
	tcase_add_test(tc, test_stream_openai);
	suite_add_tcase(s, tc);

	tc = tcase_create("failures");
	tcase_add_checked_fixture(tc, wt_setup, wt_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_upstream_errors);
	tcase_add_test(tc, test_bad_key);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_unreachable);
	tcase_add_test(tc, test_drop_after);
	tcase_add_test(tc, test_error_event_after);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_refusals);
	suite_add_tcase(s, tc);

	tc = tcase_create("daemon");
	tcase_add_checked_fixture(tc, wt_setup, wt_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_ping_status_bad);
	tcase_add_test(tc, test_two_workers_two_gateways);
	tcase_add_test(tc, test_sigterm_idle);
	tcase_add_test(tc, test_sigterm_in_flight_finishes);
	tcase_add_test(tc, test_sigterm_aborts_after_grace);
	tcase_add_test(tc, test_no_keys_is_fatal);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(worker_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
