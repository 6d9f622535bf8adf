/*
 * Daemon lifecycle: every daemon starts with a private environment (free
 * loopback ports for every nng URL, its own state folder), answers a ping
 * over nng, stops with exit 0 on SIGTERM/SIGINT, checks its configuration
 * with -n, names a bad or unknown variable, reads -f env files.  Plus the
 * thin ratelimiter's and accountant's answers, the accountant's usage
 * ledger, and the aiproxy-ctl tool.
 *
 * The gateway and the provider-worker are covered when their binaries are
 * built (a note is printed otherwise).
 *
 * Everything lives under one folder per run, removed at the end unless a
 * test failed (the daemons' logs are kept for reading then).
 */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/req.h>
#include <sqlite3.h>

#include "cfg.h"
#include "clock.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"

#define T_ENV_MAX      40
#define T_ENV_LEN      (PATH_MAX + 64)
#define T_ARGS_MAX     8
#define T_READY_MS     10000 /* start-up, generous for sanitizer builds */
#define T_STOP_MS      5000  /* a clean stop must take less */
#define T_CALL_MS      2000
#define T_POLL_CALL_MS 250
#define T_RUN_MS       10000 /* -n runs and tool runs */
#define T_RUNNING_MAX  8

extern char **environ;

/* Root folder of this run (made in main, outlives forked tests). */
static char t_root[PATH_MAX];

/* Processes to kill if a test fails (CK_FORK=no runs the teardown). */
static struct hproc *t_running[T_RUNNING_MAX];

struct t_env {
	char s[T_ENV_MAX][T_ENV_LEN];
	char *v[T_ENV_MAX + 1];
	int n;
};

/* One daemon under test, with its private environment. */
struct t_dmn {
	const char *name; /* "ratelimiter" */
	char bin[PATH_MAX];
	char dir[PATH_MAX];
	char state_dir[PATH_MAX];
	char log[PATH_MAX];
	struct hproc proc;
	bool running;
	int http_port;
	char worker_url[64];
	char stream_url[64];
	char control_url[64];
	char gateway_url[64];
	char rl_url[64];
	char acct_url[64];
	char usage_url[64];
	struct t_env env;
};

/* ---- small helpers ---- */

static void
t_nap_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void
t_env_add(struct t_env *e, const char *fmt, ...)
{
	va_list ap;
	int n;

	ck_assert_int_lt(e->n, T_ENV_MAX);
	va_start(ap, fmt);
	n = vsnprintf(e->s[e->n], T_ENV_LEN, fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && n < T_ENV_LEN);
	e->v[e->n] = e->s[e->n];
	e->n++;
	e->v[e->n] = NULL;
}

/* snprintf into out, asserting nothing was cut. */
static void __attribute__((format(printf, 3, 4)))
t_path(char *out, size_t outlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, outlen, fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && (size_t)n < outlen);
}

/* Removes NAME=... from e. */
static void
t_env_del(struct t_env *e, const char *name)
{
	size_t nlen = strlen(name);
	int k = 0;

	for (int i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], name, nlen) == 0 && e->v[i][nlen] == '=')
			continue;
		if (k != i)
			memcpy(e->s[k], e->s[i], T_ENV_LEN);
		e->v[k] = e->s[k];
		k++;
	}
	e->v[k] = NULL;
	e->n = k;
}

/* Adds or replaces a "NAME=value" entry (the first match would win). */
static void __attribute__((format(printf, 2, 3)))
t_env_set(struct t_env *e, const char *fmt, ...)
{
	char entry[T_ENV_LEN], name[T_ENV_LEN];
	const char *eq;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(entry, sizeof(entry), fmt, ap);
	va_end(ap);
	ck_assert(n > 0 && n < T_ENV_LEN);
	eq = strchr(entry, '=');
	ck_assert_ptr_nonnull(eq);
	memcpy(name, entry, (size_t)(eq - entry));
	name[eq - entry] = '\0';
	t_env_del(e, name);
	t_env_add(e, "%s", entry);
}

/* A new folder under the run's root. */
static void
t_mkdtemp(const char *prefix, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/%s-XXXXXX", t_root, prefix);

	ck_assert(n > 0 && (size_t)n < outlen);
	ck_assert_ptr_nonnull(mkdtemp(out));
}

static void
t_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_msg(f != NULL, "cannot write %s", path);
	ck_assert_int_ge(fputs(text, f), 0);
	ck_assert_int_eq(fclose(f), 0);
}

static bool
t_file_contains(const char *path, const char *needle)
{
	size_t len;
	char *buf = h_read_file(path, &len);
	bool found = buf != NULL && memmem(buf, len, needle, strlen(needle));

	free(buf);
	return found;
}

static void
t_tcp_url(char *out, size_t outlen)
{
	int port = h_free_port();

	ck_assert_int_gt(port, 0);
	snprintf(out, outlen, "tcp://127.0.0.1:%d", port);
}

static void
t_register(struct hproc *p)
{
	for (int i = 0; i < T_RUNNING_MAX; i++) {
		if (t_running[i] == NULL) {
			t_running[i] = p;
			return;
		}
	}
	ck_abort_msg("too many processes");
}

static void
t_unregister(struct hproc *p)
{
	for (int i = 0; i < T_RUNNING_MAX; i++)
		if (t_running[i] == p)
			t_running[i] = NULL;
}

static void
t_teardown(void)
{
	for (int i = 0; i < T_RUNNING_MAX; i++) {
		if (t_running[i] != NULL && t_running[i]->pid > 0)
			h_proc_stop(t_running[i], SIGKILL, 1000);
		t_running[i] = NULL;
	}
}

/* ---- daemons ---- */

/*
 * Prepares daemon "aiproxy-<name>" with a private environment.  Returns
 * false (after printing a note) when the binary is not built.
 */
static bool
t_dmn_init(struct t_dmn *d, const char *name)
{
	char bin_name[64];
	char *bin;

	memset(d, 0, sizeof(*d));
	d->name = name;
	snprintf(bin_name, sizeof(bin_name), "aiproxy-%s", name);
	if ((bin = h_bin_path(bin_name)) == NULL) {
		printf("note: %s is not built, its checks are skipped\n",
		    bin_name);
		return false;
	}
	snprintf(d->bin, sizeof(d->bin), "%s", bin);
	free(bin);
	t_mkdtemp(name, d->dir, sizeof(d->dir));
	/* Nested and missing: the daemon creates it. */
	t_path(d->state_dir, sizeof(d->state_dir), "%s/state/nested", d->dir);
	t_path(d->log, sizeof(d->log), "%s/%s.log", d->dir, name);
	d->http_port = h_free_port();
	ck_assert_int_gt(d->http_port, 0);
	t_tcp_url(d->worker_url, sizeof(d->worker_url));
	t_tcp_url(d->stream_url, sizeof(d->stream_url));
	t_tcp_url(d->control_url, sizeof(d->control_url));
	t_tcp_url(d->gateway_url, sizeof(d->gateway_url));
	t_tcp_url(d->rl_url, sizeof(d->rl_url));
	t_tcp_url(d->acct_url, sizeof(d->acct_url));
	t_tcp_url(d->usage_url, sizeof(d->usage_url));

	t_env_add(&d->env, "AI_PROXY_HOST=127.0.0.1");
	t_env_add(&d->env, "AI_PROXY_PORT=%d", d->http_port);
	t_env_add(&d->env, "AI_PROXY_WORKER_URL=%s", d->worker_url);
	t_env_add(&d->env, "AI_PROXY_STREAM_URL=%s", d->stream_url);
	t_env_add(&d->env, "AI_PROXY_CONTROL_URL=%s", d->control_url);
	t_env_add(&d->env, "AI_PROXY_GATEWAY_URL=%s", d->gateway_url);
	t_env_add(&d->env, "AI_PROXY_RATELIMITER_URL=%s", d->rl_url);
	t_env_add(&d->env, "AI_PROXY_ACCOUNTANT_URL=%s", d->acct_url);
	t_env_add(&d->env, "AI_PROXY_USAGE_URL=%s", d->usage_url);
	t_env_add(&d->env, "AI_PROXY_STATE_DIR=%s", d->state_dir);
	t_env_add(&d->env, "AI_PROXY_MODELS_FILE=%s/config/models.json",
	    h_source_dir());
	t_env_add(&d->env, "LOG_LEVEL=debug");
	/* Workers need a key; nothing here ever reaches a provider. */
	t_env_add(&d->env, "CLAUDE_API_KEY=test-anthropic-key");
	t_env_add(&d->env, "OPENAI_API_KEY=test-openai-key");
	t_env_add(
	    &d->env, "CLAUDE_BASE_URL=http://127.0.0.1:%d", h_free_port());
	t_env_add(
	    &d->env, "OPENAI_BASE_URL=http://127.0.0.1:%d", h_free_port());
	return true;
}

/* Starts the daemon with "-d" and args (NULL-terminated, may be NULL). */
static void
t_dmn_start(struct t_dmn *d, char *const *args)
{
	char *argv[T_ARGS_MAX + 3];
	int n = 0, rv;

	argv[n++] = d->bin;
	argv[n++] = "-d";
	for (int i = 0; args != NULL && args[i] != NULL; i++) {
		ck_assert_int_lt(n, T_ARGS_MAX + 1);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	rv = h_proc_start(&d->proc, d->name, argv, d->env.v, d->log, NULL);
	ck_assert_msg(rv == 0, "start %s: %s", d->bin, strerror(-rv));
	d->running = true;
	t_register(&d->proc);
}

/* Waits for a process that ends by itself; returns its exit code. */
static int
t_wait_exit(struct hproc *p, const char *what)
{
	int status;

	status = h_proc_stop(p, 0, T_RUN_MS);
	t_unregister(p);
	ck_assert_msg(status >= 0, "%s: wait failed", what);
	ck_assert_msg(WIFEXITED(status), "%s did not exit by itself", what);
	return WEXITSTATUS(status);
}

/* Runs the daemon with args (e.g. "-n") and returns its exit code. */
static int
t_dmn_run(struct t_dmn *d, char *const *args)
{
	t_dmn_start(d, args);
	d->running = false;
	return t_wait_exit(&d->proc, d->name);
}

/* Sends sig and asserts a clean exit 0 within T_STOP_MS. */
static void
t_dmn_stop(struct t_dmn *d, int sig)
{
	int64_t t0 = clock_mono_ms();
	int status;

	ck_assert(d->running);
	status = h_proc_stop(&d->proc, sig, T_STOP_MS);
	t_unregister(&d->proc);
	d->running = false;
	ck_assert_msg(clock_mono_ms() - t0 < T_STOP_MS,
	    "%s took %lld ms to stop", d->name,
	    (long long)(clock_mono_ms() - t0));
	ck_assert_msg(
	    status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "%s: status %#x after signal %d (log %s)", d->name, status, sig,
	    d->log);
}

/* ---- nng calls ---- */

/*
 * Sends request m of type t to url and decodes the reply into *ret
 * (its type in *ret_type).  The reply's payload is borrowed from *ret_buf,
 * which the caller frees.  Returns 0 or the transport error.
 */
static int
t_call(const char *url, enum msg_type t, const void *m, int timeout_ms,
    union proto_msg *ret, enum msg_type *ret_type, char **ret_buf)
{
	char *req = NULL, *rep = NULL;
	size_t req_len = 0, rep_len = 0;
	enum msg_type rt;
	int rv;

	ck_assert_int_eq(proto_msg_encode(t, m, &req, &req_len), 0);
	rv = nngx_call(url, req, req_len, timeout_ms, &rep, &rep_len);
	free(req);
	if (rv != 0)
		return rv;
	ck_assert_int_eq(proto_peek_type(rep, rep_len, &rt), 0);
	ck_assert_int_eq(proto_msg_decode(rt, rep, rep_len, ret), 0);
	*ret_type = rt;
	*ret_buf = rep;
	return 0;
}

/* Sends the bytes of a string and expects an ack ok=false "bad_request". */
static void
t_expect_bad_request(const char *url, const char *bytes)
{
	size_t len = strlen(bytes);
	struct msg_ack ack;
	char *rep = NULL;
	size_t rep_len = 0;
	int rv;

	rv = nngx_call(url, bytes, len, T_CALL_MS, &rep, &rep_len);
	ck_assert_msg(rv == 0, "no answer to a bad request: %s", strerror(-rv));
	ck_assert_int_eq(msg_ack_decode(rep, rep_len, &ack), 0);
	ck_assert(!ack.ok);
	ck_assert_str_eq(ack.code, "bad_request");
	ck_assert_str_eq(ack.request_id, "");
	ck_assert(ack.message[0] != '\0');
	free(rep);
}

static void
t_check_pong(const struct msg_pong *pong, const struct msg_ping *ping,
    const char *daemon, pid_t pid)
{
	ck_assert_str_eq(pong->request_id, ping->request_id);
	ck_assert_int_eq(pong->ts_us, ping->ts_us);
	ck_assert_str_eq(pong->daemon, daemon);
	ck_assert_int_eq(pong->pid, pid);
}

/* Pings url until the daemon answers (it may still be starting). */
static void
t_wait_pong(struct t_dmn *d, const char *url, const char *daemon)
{
	int64_t deadline = clock_mono_ms() + T_READY_MS;
	struct msg_ping ping;
	union proto_msg r;
	enum msg_type rt;
	char *buf = NULL;
	int rv;

	memset(&ping, 0, sizeof(ping));
	snprintf(ping.request_id, sizeof(ping.request_id), "req_ping_%d",
	    (int)d->proc.pid);
	ping.ts_us = clock_real_us();
	for (;;) {
		ck_assert_msg(h_proc_alive(&d->proc), "%s died (log %s)",
		    d->name, d->log);
		rv =
		    t_call(url, MSG_PING, &ping, T_POLL_CALL_MS, &r, &rt, &buf);
		if (rv == 0)
			break;
		ck_assert_msg(clock_mono_ms() < deadline,
		    "%s: no pong on %s: %s (log %s)", d->name, url,
		    strerror(-rv), d->log);
	}
	ck_assert_int_eq(rt, MSG_PONG);
	t_check_pong(&r.pong, &ping, daemon, d->proc.pid);
	free(buf);
}

/* ---- ratelimiter ---- */

START_TEST(ratelimiter_pings_and_stops_on_sigterm)
{
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.rl_url, "ratelimiter");
	t_dmn_stop(&d, SIGTERM);
	ck_assert(t_file_contains(d.log, "\"msg\":\"stopped\""));
}
END_TEST

START_TEST(ratelimiter_stops_on_sigint)
{
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.rl_url, "ratelimiter");
	t_dmn_stop(&d, SIGINT);
}
END_TEST

START_TEST(ratelimiter_answers_each_message)
{
	struct msg_limit_check check = {
	    .request_id = "req_check_1",
	    .subject_type = "user",
	    .subject_id = "user-1",
	    .ip = "127.0.0.1",
	    .provider = "claude",
	    .model = "claude-3-5-haiku-20241022",
	    .reserve_micro_usd = 1000,
	    .threat = 0,
	};
	struct msg_limit_settle settle = {
	    .request_id = "req_check_1",
	    .subject_type = "user",
	    .subject_id = "user-1",
	    .reservation_id = "res_1",
	    .reserved_micro_usd = 1000,
	    .actual_micro_usd = 400,
	};
	struct msg_quota_req quota = {
	    .request_id = "req_quota_1",
	    .subject_type = "session",
	    .subject_id = "sess-1",
	};
	struct msg_status_req status = {
	    .request_id = "req_status_1", .what = "health"};
	union proto_msg r;
	enum msg_type rt;
	json_t *doc;
	char *buf;
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	t_env_set(&d.env, "AI_PROXY_RATE_LIMIT_PER_MINUTE=42");
	t_env_set(&d.env, "AI_PROXY_RATE_LIMIT_PER_HOUR=420");
	t_env_set(&d.env, "AI_PROXY_COST_LIMIT_DAILY=2.5");
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.rl_url, "ratelimiter");

	/* limit_check: allowed, one of the configured limit used. */
	ck_assert_int_eq(
	    t_call(d.rl_url, MSG_LIMIT_CHECK, &check, T_CALL_MS, &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_LIMIT_VERDICT);
	ck_assert_str_eq(r.limit_verdict.request_id, "req_check_1");
	ck_assert(r.limit_verdict.allow);
	ck_assert_str_eq(r.limit_verdict.code, "ok");
	ck_assert_int_eq(r.limit_verdict.limit, 42);
	ck_assert_int_eq(r.limit_verdict.remaining, 41);
	/* GCRA: one emission interval (60 s / 42) until full, rounded up. */
	ck_assert_int_eq(r.limit_verdict.reset_s, 2);
	ck_assert_int_eq(r.limit_verdict.retry_after_s, 0);
	ck_assert(!r.limit_verdict.degraded);
	free(buf);

	/* limit_settle: acknowledged. */
	ck_assert_int_eq(t_call(d.rl_url, MSG_LIMIT_SETTLE, &settle, T_CALL_MS,
			     &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_ACK);
	ck_assert(r.ack.ok);
	ck_assert_str_eq(r.ack.code, "ok");
	ck_assert_str_eq(r.ack.request_id, "req_check_1");
	free(buf);

	/* quota_req: the limits from the configuration, nothing used. */
	ck_assert_int_eq(
	    t_call(d.rl_url, MSG_QUOTA_REQ, &quota, T_CALL_MS, &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_QUOTA_RESP);
	ck_assert_str_eq(r.quota_resp.request_id, "req_quota_1");
	ck_assert_int_eq(r.quota_resp.minute_limit, 42);
	ck_assert_int_eq(r.quota_resp.minute_used, 0);
	ck_assert_int_eq(r.quota_resp.hour_limit, 420);
	ck_assert_int_eq(r.quota_resp.hour_used, 0);
	ck_assert_int_eq(r.quota_resp.cost_limit_micro_usd, 2500000);
	ck_assert_int_eq(r.quota_resp.cost_used_micro_usd, 0);
	ck_assert_int_eq(r.quota_resp.cost_reserved_micro_usd, 0);
	free(buf);

	/* Bad requests: answered, counted, never fatal. */
	t_expect_bad_request(d.rl_url, "garbage");
	t_expect_bad_request(d.rl_url, "");
	/* A ping without ts_us; a ping of protocol version 2. */
	t_expect_bad_request(
	    d.rl_url, "{\"v\":1,\"type\":\"ping\",\"request_id\":\"x\"}\n");
	t_expect_bad_request(d.rl_url,
	    "{\"v\":2,\"type\":\"ping\",\"request_id\":\"\",\"ts_us\":1}\n");
	/* Well-formed, but not a message the ratelimiter serves. */
	t_expect_bad_request(d.rl_url,
	    "{\"v\":1,\"type\":\"cancel\",\"request_id\":\"req_1\"}\n");

	/* status_req: up, with the placeholder note and the counters. */
	ck_assert_int_eq(
	    t_call(d.rl_url, MSG_STATUS_REQ, &status, T_CALL_MS, &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_STATUS_RESP);
	ck_assert_str_eq(r.status_resp.request_id, "req_status_1");
	ck_assert_str_eq(r.status_resp.daemon, "ratelimiter");
	ck_assert_str_eq(r.status_resp.state, "up");
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "backend")), "memory");
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "limits")), "enforced");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "per_minute")), 42);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "bad_requests")), 5);
	json_decref(doc);
	free(buf);

	/* Still alive and answering after all that. */
	t_wait_pong(&d, d.rl_url, "ratelimiter");
	t_dmn_stop(&d, SIGTERM);
	ck_assert(t_file_contains(d.log, "\"msg\":\"bad request\""));
}
END_TEST

START_TEST(ratelimiter_reports_redis_backend)
{
	struct msg_status_req status = {.request_id = "", .what = "health"};
	union proto_msg r;
	enum msg_type rt;
	json_t *doc;
	char *buf;
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	t_env_set(&d.env, "REDIS_ENABLED=true");
	t_env_set(&d.env, "REDIS_URL=redis://127.0.0.1:%d", h_free_port());
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.rl_url, "ratelimiter");
	ck_assert_int_eq(
	    t_call(d.rl_url, MSG_STATUS_REQ, &status, T_CALL_MS, &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_STATUS_RESP);
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "backend")), "redis");
	json_decref(doc);
	free(buf);
	t_dmn_stop(&d, SIGTERM);
}
END_TEST

/* ---- accountant ---- */

START_TEST(accountant_pings_and_stops_on_sigterm)
{
	struct t_dmn d;
	struct stat st;
	char path[PATH_MAX];

	ck_assert(t_dmn_init(&d, "accountant"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.acct_url, "accountant");
	/* The (missing, nested) state folder and the ledger were created. */
	t_path(path, sizeof(path), "%s/aiproxy.db", d.state_dir);
	ck_assert_int_eq(stat(path, &st), 0);
	t_dmn_stop(&d, SIGTERM);
	ck_assert(t_file_contains(d.log, "\"msg\":\"stopped\""));
}
END_TEST

START_TEST(accountant_answers_status_and_analytics)
{
	struct msg_status_req status = {.request_id = "req_s", .what = "x"};
	struct msg_analytics_req an = {
	    .request_id = "req_an",
	    .subject_type = "user",
	    .subject_id = "user-1",
	    .days = 7,
	    .provider = "",
	};
	union proto_msg r;
	enum msg_type rt;
	json_t *doc;
	char *buf;
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "accountant"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.acct_url, "accountant");

	ck_assert_int_eq(t_call(d.acct_url, MSG_ANALYTICS_REQ, &an, T_CALL_MS,
			     &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_ANALYTICS_RESP);
	ck_assert_str_eq(r.analytics_resp.request_id, "req_an");
	ck_assert_int_eq(r.analytics_resp.status, 200);
	doc = json_loadb(
	    r.analytics_resp.payload, r.analytics_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	/* An empty ledger: nothing yet, one series entry per day asked. */
	ck_assert_int_eq(json_integer_value(json_object_get(
			     json_object_get(doc, "totals"), "requests")),
	    0);
	ck_assert_int_eq(json_array_size(json_object_get(doc, "series")), 7);
	json_decref(doc);
	free(buf);

	t_expect_bad_request(d.acct_url, "\n\n\n");
	/* A quota_req is the ratelimiter's business. */
	t_expect_bad_request(d.acct_url,
	    "{\"v\":1,\"type\":\"quota_req\",\"request_id\":\"\","
	    "\"subject_type\":\"user\",\"subject_id\":\"u\"}\n");

	ck_assert_int_eq(t_call(d.acct_url, MSG_STATUS_REQ, &status, T_CALL_MS,
			     &r, &rt, &buf),
	    0);
	ck_assert_int_eq(rt, MSG_STATUS_RESP);
	ck_assert_str_eq(r.status_resp.daemon, "accountant");
	ck_assert_str_eq(r.status_resp.state, "up");
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert_str_eq(
	    json_string_value(json_object_get(doc, "ledger")), "sqlite");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "events_received")), 0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "bad_requests")), 2);
	json_decref(doc);
	free(buf);
	t_dmn_stop(&d, SIGTERM);
}
END_TEST

static atomic_int t_pub_pipes;

static void
t_on_pub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)arg;
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&t_pub_pipes, 1);
}

static void
t_usage_fill(
    struct msg_usage_event *ev, const char *rid, const char *eid, int64_t seq)
{
	memset(ev, 0, sizeof(*ev));
	snprintf(ev->request_id, sizeof(ev->request_id), "%s", rid);
	snprintf(ev->event_id, sizeof(ev->event_id), "%s", eid);
	ev->seq = seq;
	snprintf(ev->worker_id, sizeof(ev->worker_id), "w7");
	ev->ts_ms = clock_real_ms();
	snprintf(ev->subject_type, sizeof(ev->subject_type), "user");
	snprintf(ev->subject_id, sizeof(ev->subject_id), "user-\xc3\xa9");
	snprintf(ev->ip, sizeof(ev->ip), "127.0.0.1");
	snprintf(ev->provider, sizeof(ev->provider), "claude");
	snprintf(ev->model, sizeof(ev->model), "claude-3-5-haiku-20241022");
	ev->input_tokens = 120 + seq;
	ev->output_tokens = 30;
	ev->cache_read_tokens = 5;
	ev->cache_write_tokens = 7;
	ev->cost_micro_usd = 1234;
	ev->cached = false;
	snprintf(ev->status, sizeof(ev->status), "ok");
	ev->http_status = 200;
	ev->upstream_ms = 12;
	ev->total_ms = 15;
}

static void
t_publish(nng_socket pub, const char *topic, const char *body, size_t len)
{
	char *wrapped;
	size_t wrapped_len;

	ck_assert_int_eq(
	    proto_topic_wrap(topic, body, len, &wrapped, &wrapped_len), 0);
	ck_assert_int_eq(nng_send(pub, wrapped, wrapped_len, 0), 0);
	free(wrapped);
}

static void
t_publish_usage(nng_socket pub, const struct msg_usage_event *ev)
{
	char *buf;
	size_t len;

	ck_assert_int_eq(msg_usage_event_encode(ev, &buf, &len), 0);
	t_publish(pub, PROTO_TOPIC_USAGE, buf, len);
	free(buf);
}

static json_t *
t_status_payload(const char *url, const char *daemon)
{
	struct msg_status_req status = {.request_id = "", .what = "health"};
	union proto_msg r;
	enum msg_type rt;
	json_t *doc;
	char *buf;

	ck_assert_int_eq(
	    t_call(url, MSG_STATUS_REQ, &status, T_CALL_MS, &r, &rt, &buf), 0);
	ck_assert_int_eq(rt, MSG_STATUS_RESP);
	ck_assert_str_eq(r.status_resp.daemon, daemon);
	doc = json_loadb(
	    r.status_resp.payload, r.status_resp.payload_len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	free(buf);
	return doc;
}

/* Polls the accountant's status until events_received reaches n. */
static json_t *
t_wait_events(struct t_dmn *d, int64_t n)
{
	int64_t deadline = clock_mono_ms() + T_READY_MS;
	json_t *doc;

	for (;;) {
		doc = t_status_payload(d->acct_url, "accountant");
		if (json_integer_value(
			json_object_get(doc, "events_received")) >= n)
			return doc;
		json_decref(doc);
		ck_assert_msg(clock_mono_ms() < deadline,
		    "accountant: fewer than %lld events (log %s)", (long long)n,
		    d->log);
		t_nap_ms(10);
	}
}

/* The ledger row of ev, read back from the accountant's SQLite file. */
static void
t_check_ledger_row(sqlite3 *db, const struct msg_usage_event *ev)
{
	static const char *const q =
	    "SELECT request_id, worker_id, subject_id, model, status, "
	    "input_tokens, cache_write_tokens, cost_micro_usd, cached "
	    "FROM usage_events WHERE event_id = ?";
	sqlite3_stmt *st;

	ck_assert_int_eq(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	sqlite3_bind_text(st, 1, ev->event_id, -1, SQLITE_STATIC);
	ck_assert_msg(
	    sqlite3_step(st) == SQLITE_ROW, "no row for %s", ev->event_id);
	ck_assert_str_eq(
	    (const char *)sqlite3_column_text(st, 0), ev->request_id);
	ck_assert_str_eq(
	    (const char *)sqlite3_column_text(st, 1), ev->worker_id);
	ck_assert_str_eq(
	    (const char *)sqlite3_column_text(st, 2), ev->subject_id);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 3), ev->model);
	ck_assert_str_eq((const char *)sqlite3_column_text(st, 4), ev->status);
	ck_assert_int_eq(sqlite3_column_int64(st, 5), ev->input_tokens);
	ck_assert_int_eq(sqlite3_column_int64(st, 6), ev->cache_write_tokens);
	ck_assert_int_eq(sqlite3_column_int64(st, 7), ev->cost_micro_usd);
	ck_assert_int_eq(sqlite3_column_int64(st, 8), 0);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* Polls the status until events_committed reaches n. */
static void
t_wait_committed(struct t_dmn *d, int64_t n)
{
	int64_t deadline = clock_mono_ms() + T_READY_MS;
	json_t *doc;

	for (;;) {
		doc = t_status_payload(d->acct_url, "accountant");
		if (json_integer_value(
			json_object_get(doc, "events_committed")) >= n) {
			json_decref(doc);
			return;
		}
		json_decref(doc);
		ck_assert_msg(clock_mono_ms() < deadline,
		    "accountant: fewer than %lld events committed (log %s)",
		    (long long)n, d->log);
		t_nap_ms(10);
	}
}

START_TEST(accountant_ledgers_usage_events)
{
	static const char *const bad_version =
	    "{\"v\":9,\"type\":\"usage_event\"}\n";
	struct msg_usage_event ev1, ev2;
	struct msg_cancel cancel = {.request_id = "req_other"};
	nng_socket pub;
	char path[PATH_MAX];
	char *buf;
	size_t len;
	int64_t deadline;
	json_t *doc;
	sqlite3 *db;
	sqlite3_stmt *st;
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "accountant"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.acct_url, "accountant");
	t_path(path, sizeof(path), "%s/aiproxy.db", d.state_dir);

	/* Play a worker: a pub socket dialing the accountant's usage URL. */
	atomic_store(&t_pub_pipes, 0);
	ck_assert_int_eq(nng_pub0_open(&pub), 0);
	ck_assert_int_eq(
	    nng_pipe_notify(pub, NNG_PIPE_EV_ADD_POST, t_on_pub_pipe, NULL), 0);
	ck_assert_int_eq(
	    nng_dial(pub, d.usage_url, NULL, NNG_FLAG_NONBLOCK), 0);
	deadline = clock_mono_ms() + T_READY_MS;
	while (atomic_load(&t_pub_pipes) == 0) {
		ck_assert_msg(clock_mono_ms() < deadline,
		    "the accountant's usage socket never accepted a dial");
		t_nap_ms(5);
	}

	t_usage_fill(&ev1, "req_usage_1", "evt_1", 1);
	t_publish_usage(pub, &ev1);
	t_wait_committed(&d, 1);

	/* Rejected: garbage under the topic, a wrong version.  Ignored (not
	 * subscribed): another topic.  Then one more good event. */
	t_publish(pub, PROTO_TOPIC_USAGE, "garbage", 7);
	t_publish(pub, PROTO_TOPIC_USAGE, bad_version, strlen(bad_version));
	ck_assert_int_eq(msg_cancel_encode(&cancel, &buf, &len), 0);
	t_publish(pub, PROTO_TOPIC_CTL, buf, len);
	free(buf);
	t_usage_fill(&ev2, "req_usage_2", "evt_2", 2);
	t_publish_usage(pub, &ev2);

	doc = t_wait_events(&d, 2);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "events_received")), 2);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "events_rejected")), 2);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(doc, "ledger_errors")), 0);
	json_decref(doc);
	ck_assert_int_eq(nng_close(pub), 0);

	/* Exactly two rows, each the event's fields. */
	t_wait_committed(&d, 2);
	ck_assert_int_eq(
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(
		db, "SELECT count(*) FROM usage_events", -1, &st, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	ck_assert_int_eq(sqlite3_column_int64(st, 0), 2);
	sqlite3_finalize(st);
	t_check_ledger_row(db, &ev1);
	t_check_ledger_row(db, &ev2);
	sqlite3_close(db);

	t_dmn_stop(&d, SIGINT);
	/* Each event logged at debug with its request id. */
	ck_assert(t_file_contains(d.log, "\"request_id\":\"req_usage_1\""));
	ck_assert(t_file_contains(d.log, "\"request_id\":\"req_usage_2\""));
}
END_TEST

/* ---- configuration (every daemon) ---- */

static const char *const t_daemons[] = {
    "ratelimiter", "accountant", "gateway", "provider-worker"};
#define T_NDAEMONS ((int)(sizeof(t_daemons) / sizeof(t_daemons[0])))

START_TEST(check_flag_accepts_a_valid_env)
{
	char *args[] = {"-n", NULL};
	struct t_dmn d;

	if (!t_dmn_init(&d, t_daemons[_i]))
		return;
	ck_assert_msg(
	    t_dmn_run(&d, args) == 0, "%s -n failed (log %s)", d.name, d.log);
	ck_assert(t_file_contains(d.log, "configuration OK"));
}
END_TEST

/* A variable each daemon reads, with a bad value. */
static const struct {
	const char *daemon;
	const char *var;
	const char *value;
} t_bad_values[] = {
    {"ratelimiter", "AI_PROXY_RATE_LIMIT_PER_MINUTE", "abc"},
    {"ratelimiter", "AI_PROXY_RATE_LIMIT_PER_MINUTE", "0"},
    {"ratelimiter", "AI_PROXY_RATELIMITER_URL", "http://127.0.0.1:1"},
    {"accountant", "AI_PROXY_COST_LIMIT_DAILY", "abc"},
    {"accountant", "AI_PROXY_USAGE_URL", "nonsense"},
    {"gateway", "AI_PROXY_RATE_LIMIT_PER_MINUTE", "abc"},
    {"gateway", "AI_PROXY_PORT", "70000"},
    {"provider-worker", "AI_PROXY_TIMEOUT_SECONDS", "abc"},
};
#define T_NBAD_VALUES ((int)(sizeof(t_bad_values) / sizeof(t_bad_values[0])))

START_TEST(check_flag_names_a_bad_value)
{
	char *args[] = {"-n", NULL};
	struct t_dmn d;

	if (!t_dmn_init(&d, t_bad_values[_i].daemon))
		return;
	t_env_set(
	    &d.env, "%s=%s", t_bad_values[_i].var, t_bad_values[_i].value);
	ck_assert_msg(t_dmn_run(&d, args) == 1, "%s accepted %s=%s", d.name,
	    t_bad_values[_i].var, t_bad_values[_i].value);
	ck_assert_msg(t_file_contains(d.log, t_bad_values[_i].var),
	    "%s: the message does not name %s (log %s)", d.name,
	    t_bad_values[_i].var, d.log);
}
END_TEST

START_TEST(unknown_variable_is_named)
{
	struct t_dmn d;

	if (!t_dmn_init(&d, t_daemons[_i]))
		return;
	t_env_set(&d.env, "AI_PROXY_FOO=1");
	/* Not only with -n: a real start refuses too. */
	ck_assert_int_eq(t_dmn_run(&d, NULL), 1);
	ck_assert(t_file_contains(d.log, "AI_PROXY_FOO"));
}
END_TEST

START_TEST(env_file_values_are_used)
{
	struct msg_quota_req quota = {
	    .request_id = "req_q", .subject_type = "user", .subject_id = "u1"};
	char *args[] = {"-f", NULL, NULL};
	char envfile[PATH_MAX], text[512], url[64];
	union proto_msg r;
	enum msg_type rt;
	char *buf;
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	/* The URL only in the file; the hourly limit in both (the
	 * environment wins). */
	t_tcp_url(url, sizeof(url));
	t_path(envfile, sizeof(envfile), "%s/aiproxy.env", d.dir);
	snprintf(text, sizeof(text),
	    "# test env file\n"
	    "AI_PROXY_RATELIMITER_URL=%s\n"
	    "AI_PROXY_RATE_LIMIT_PER_MINUTE=77\n"
	    "AI_PROXY_RATE_LIMIT_PER_HOUR=999\n",
	    url);
	t_write_file(envfile, text);
	/* Drop the private URL from the environment so the file's counts. */
	t_env_del(&d.env, "AI_PROXY_RATELIMITER_URL");
	t_env_set(&d.env, "AI_PROXY_RATE_LIMIT_PER_HOUR=300");
	args[1] = envfile;
	t_dmn_start(&d, args);
	t_wait_pong(&d, url, "ratelimiter");
	ck_assert_int_eq(
	    t_call(url, MSG_QUOTA_REQ, &quota, T_CALL_MS, &r, &rt, &buf), 0);
	ck_assert_int_eq(rt, MSG_QUOTA_RESP);
	ck_assert_int_eq(r.quota_resp.minute_limit, 77);
	ck_assert_int_eq(r.quota_resp.hour_limit, 300);
	free(buf);
	t_dmn_stop(&d, SIGTERM);
}
END_TEST

START_TEST(env_file_unknown_variable_is_named)
{
	char *args[] = {"-n", "-f", NULL, NULL};
	char envfile[PATH_MAX];
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "accountant"));
	t_path(envfile, sizeof(envfile), "%s/aiproxy.env", d.dir);
	t_write_file(envfile, "AI_PROXY_BAR=2\n");
	args[2] = envfile;
	ck_assert_int_eq(t_dmn_run(&d, args), 1);
	ck_assert(t_file_contains(d.log, "AI_PROXY_BAR"));
}
END_TEST

/* ---- gateway and provider-worker (when built) ---- */

START_TEST(gateway_pings_and_stops_on_sigterm)
{
	struct t_dmn d;

	if (!t_dmn_init(&d, "gateway"))
		return;
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.gateway_url, "gateway");
	t_dmn_stop(&d, SIGTERM);
}
END_TEST

static atomic_int t_req_pipes;

static void
t_on_req_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)arg;
	if (ev == NNG_PIPE_EV_ADD_POST)
		atomic_fetch_add(&t_req_pipes, 1);
}

START_TEST(provider_worker_pings_and_stops_on_sigterm)
{
	struct msg_ping ping = {.request_id = "req_wping", .ts_us = 99};
	struct msg_pong pong;
	nng_socket req;
	int64_t deadline;
	char *out, *in;
	size_t out_len, in_len;
	struct t_dmn d;

	if (!t_dmn_init(&d, "provider-worker"))
		return;
	/* Play the gateway: the worker DIALS our req socket. */
	atomic_store(&t_req_pipes, 0);
	ck_assert_int_eq(nng_req0_open(&req), 0);
	ck_assert_int_eq(nng_socket_set_ms(req, NNG_OPT_REQ_RESENDTIME,
			     NNG_DURATION_INFINITE),
	    0);
	ck_assert_int_eq(
	    nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, T_CALL_MS), 0);
	ck_assert_int_eq(
	    nng_pipe_notify(req, NNG_PIPE_EV_ADD_POST, t_on_req_pipe, NULL), 0);
	ck_assert_int_eq(nng_listen(req, d.worker_url, NULL, 0), 0);
	t_dmn_start(&d, NULL);
	deadline = clock_mono_ms() + T_READY_MS;
	while (atomic_load(&t_req_pipes) == 0) {
		ck_assert_msg(
		    h_proc_alive(&d.proc), "worker died (log %s)", d.log);
		ck_assert_msg(clock_mono_ms() < deadline,
		    "the worker never dialed %s (log %s)", d.worker_url, d.log);
		t_nap_ms(5);
	}
	ck_assert_int_eq(msg_ping_encode(&ping, &out, &out_len), 0);
	ck_assert_int_eq(nng_send(req, out, out_len, 0), 0);
	free(out);
	ck_assert_int_eq(nng_recv(req, &in, &in_len, NNG_FLAG_ALLOC), 0);
	ck_assert_int_eq(msg_pong_decode(in, in_len, &pong), 0);
	nng_free(in, in_len);
	t_check_pong(&pong, &ping, "provider-worker", d.proc.pid);
	t_dmn_stop(&d, SIGTERM);
	ck_assert_int_eq(nng_close(req), 0);
}
END_TEST

/* ---- aiproxy-ctl ---- */

/* A fresh file path for a tool's output. */
static void
t_out_path(char *out, size_t outlen)
{
	char dir[PATH_MAX];
	int n;

	t_mkdtemp("ctl", dir, sizeof(dir));
	n = snprintf(out, outlen, "%s/out.txt", dir);
	ck_assert(n > 0 && (size_t)n < outlen);
}

/* Runs aiproxy-ctl with args; returns the exit code, output in out. */
static int
t_ctl(char *const *args, char *out, size_t outlen)
{
	char *argv[T_ARGS_MAX + 2];
	char *bin = h_bin_path("aiproxy-ctl");
	struct hproc p;
	int n = 0, code, rv;

	ck_assert_msg(bin != NULL, "aiproxy-ctl is not built");
	argv[n++] = bin;
	for (int i = 0; args[i] != NULL; i++) {
		ck_assert_int_lt(n, T_ARGS_MAX + 1);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	t_out_path(out, outlen);
	rv = h_proc_start(&p, "aiproxy-ctl", argv, NULL, out, NULL);
	free(bin);
	ck_assert_int_eq(rv, 0);
	t_register(&p);
	code = t_wait_exit(&p, "aiproxy-ctl");
	return code;
}

START_TEST(ctl_pings_and_reads_status)
{
	char out[PATH_MAX];
	struct t_dmn d;

	ck_assert(t_dmn_init(&d, "ratelimiter"));
	t_dmn_start(&d, NULL);
	t_wait_pong(&d, d.rl_url, "ratelimiter");
	{
		char *args[] = {"ping", d.rl_url, "-t", "2000", NULL};

		ck_assert_int_eq(t_ctl(args, out, sizeof(out)), 0);
		ck_assert(t_file_contains(out, "\"daemon\":\"ratelimiter\""));
		ck_assert(t_file_contains(out, "\"type\":\"pong\""));
	}
	{
		char *args[] = {"status", d.rl_url, NULL};

		ck_assert_int_eq(t_ctl(args, out, sizeof(out)), 0);
		ck_assert(t_file_contains(out, "\"state\":\"up\""));
		ck_assert(t_file_contains(out, "\"enforced\""));
	}
	t_dmn_stop(&d, SIGTERM);
}
END_TEST

START_TEST(ctl_fails_without_a_daemon)
{
	char out[PATH_MAX], url[64];
	char *args[] = {"ping", NULL, "-t", "200", NULL};

	t_tcp_url(url, sizeof(url));
	args[1] = url;
	ck_assert_int_eq(t_ctl(args, out, sizeof(out)), 1);
	ck_assert(t_file_contains(out, "timed out"));
}
END_TEST

START_TEST(ctl_usage_errors)
{
	static char *const cases[][4] = {
	    {"frobnicate", NULL},
	    {"ping", NULL},
	    {"ping", "tcp://127.0.0.1:1", "-t", "nope"},
	};
	char out[PATH_MAX];
	char *args[5] = {NULL};

	for (int i = 0; i < 4; i++)
		args[i] = cases[_i][i];
	ck_assert_int_eq(t_ctl(args, out, sizeof(out)), 2);
	ck_assert(t_file_contains(out, "usage:"));
}
END_TEST

START_TEST(ctl_prints_the_config_table)
{
	char *args[] = {"config-table", NULL};
	char out[PATH_MAX];

	ck_assert_int_eq(t_ctl(args, out, sizeof(out)), 0);
	ck_assert(t_file_contains(out, "AI_PROXY_RATELIMITER_URL"));
	ck_assert(t_file_contains(out, "AI_PROXY_RATE_LIMIT_PER_MINUTE"));
}
END_TEST

/* A daemon that dials: answers pings as "fake-dialer". */
static void
t_fake_dialer(void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct msg_ping ping;
	struct msg_pong pong;
	char *out;
	size_t out_len;

	(void)arg;
	if (msg_ping_decode(buf, len, &ping) != 0) {
		nngx_rep_drop(ctx);
		return;
	}
	memset(&pong, 0, sizeof(pong));
	memcpy(pong.request_id, ping.request_id, sizeof(pong.request_id));
	pong.ts_us = ping.ts_us;
	snprintf(pong.daemon, sizeof(pong.daemon), "fake-dialer");
	pong.pid = getpid();
	if (msg_pong_encode(&pong, &out, &out_len) != 0) {
		nngx_rep_drop(ctx);
		return;
	}
	nngx_rep_reply(ctx, out, out_len);
	free(out);
}

START_TEST(ctl_listen_pings_a_dialer)
{
	char *bin = h_bin_path("aiproxy-ctl");
	char out[PATH_MAX], url[64];
	char *argv[] = {bin, "ping", "--listen", url, "-t", "5000", NULL};
	struct nngx_rep *rep = NULL;
	struct hproc p;

	ck_assert_ptr_nonnull(bin);
	t_tcp_url(url, sizeof(url));
	t_out_path(out, sizeof(out));
	ck_assert_int_eq(
	    h_proc_start(&p, "aiproxy-ctl", argv, NULL, out, NULL), 0);
	t_register(&p);
	/* Dials before or after the tool listens: nng keeps retrying. */
	ck_assert_int_eq(
	    nngx_rep_start(url, false, 1, t_fake_dialer, NULL, &rep), 0);
	ck_assert_int_eq(t_wait_exit(&p, "aiproxy-ctl"), 0);
	nngx_rep_free(rep);
	free(bin);
	ck_assert(t_file_contains(out, "\"daemon\":\"fake-dialer\""));
}
END_TEST

/* ---- suite ---- */

static Suite *
daemons_suite(void)
{
	Suite *s = suite_create("daemons");
	TCase *tc;

	tc = tcase_create("ratelimiter");
	tcase_add_checked_fixture(tc, NULL, t_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, ratelimiter_pings_and_stops_on_sigterm);
	tcase_add_test(tc, ratelimiter_stops_on_sigint);
	tcase_add_test(tc, ratelimiter_answers_each_message);
	tcase_add_test(tc, ratelimiter_reports_redis_backend);
	suite_add_tcase(s, tc);

	tc = tcase_create("accountant");
	tcase_add_checked_fixture(tc, NULL, t_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, accountant_pings_and_stops_on_sigterm);
	tcase_add_test(tc, accountant_answers_status_and_analytics);
	tcase_add_test(tc, accountant_ledgers_usage_events);
	suite_add_tcase(s, tc);

	tc = tcase_create("config");
	tcase_add_checked_fixture(tc, NULL, t_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, check_flag_accepts_a_valid_env, 0, T_NDAEMONS);
	tcase_add_loop_test(tc, check_flag_names_a_bad_value, 0, T_NBAD_VALUES);
	tcase_add_loop_test(tc, unknown_variable_is_named, 0, T_NDAEMONS);
	tcase_add_test(tc, env_file_values_are_used);
	tcase_add_test(tc, env_file_unknown_variable_is_named);
	suite_add_tcase(s, tc);

	tc = tcase_create("request_path_daemons");
	tcase_add_checked_fixture(tc, NULL, t_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, gateway_pings_and_stops_on_sigterm);
	tcase_add_test(tc, provider_worker_pings_and_stops_on_sigterm);
	suite_add_tcase(s, tc);

	tc = tcase_create("ctl");
	tcase_add_checked_fixture(tc, NULL, t_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, ctl_pings_and_reads_status);
	tcase_add_test(tc, ctl_fails_without_a_daemon);
	tcase_add_loop_test(tc, ctl_usage_errors, 0, 3);
	tcase_add_test(tc, ctl_prints_the_config_table);
	tcase_add_test(tc, ctl_listen_pings_a_dialer);
	suite_add_tcase(s, tc);
	return s;
}

/* The daemons inherit our environment: drop every configuration variable
 * so a developer's shell cannot change what is tested. */
static void
t_clean_environment(void)
{
	const struct cfg_var *vars;
	char name[256];
	size_t n;

	vars = cfg_vars(&n);
	for (size_t i = 0; i < n; i++)
		unsetenv(vars[i].name);
	for (;;) {
		char **e;

		for (e = environ; *e != NULL; e++)
			if (strncmp(*e, "AI_PROXY_", 9) == 0)
				break;
		if (*e == NULL)
			break;
		n = strcspn(*e, "=");
		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, *e, n);
		name[n] = '\0';
		unsetenv(name);
	}
}

int
main(void)
{
	SRunner *sr;
	char *root;
	int failed;

	log_init("daemons_test", LOG_LVL_WARN);
	t_clean_environment();
	if ((root = h_tmpdir("daemons")) == NULL) {
		fprintf(stderr, "cannot create a temporary folder\n");
		return EXIT_FAILURE;
	}
	snprintf(t_root, sizeof(t_root), "%s", root);
	sr = srunner_create(daemons_suite());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (failed == 0)
		h_rmtree(root);
	else
		fprintf(stderr, "daemon logs kept in %s\n", root);
	free(root);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
