#include "suite.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "nngx.h"
#include "proto.h"

#define SUITE_START_MS 15000 /* generous: sanitizer builds start slowly */
#define SUITE_STOP_MS  8000

struct env {
	char *v[SUITE_ENV_MAX + 1];
	int n;
};

static void env_add(struct env *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
env_add(struct env *e, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s == NULL)
		return;
	/* A later NAME=value replaces an earlier one (tests override the
	 * suite's defaults). */
	for (int i = 0; i < e->n; i++) {
		size_t n = strcspn(e->v[i], "=");

		if (strncmp(e->v[i], s, n + 1) == 0) {
			free(e->v[i]);
			e->v[i] = s;
			return;
		}
	}
	if (e->n >= SUITE_ENV_MAX) {
		free(s);
		return;
	}
	e->v[e->n++] = s;
	e->v[e->n] = NULL;
}

static void
env_free(struct env *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->v[i]);
	e->n = 0;
	e->v[0] = NULL;
}

/* What every daemon of the suite shares: the URLs, the model table. */
static void
env_common(const struct suite *s, struct env *e, const char *name)
{
	env_add(e, "AI_PROXY_WORKER_URL=%s", s->worker_url);
	env_add(e, "AI_PROXY_STREAM_URL=%s", s->stream_url);
	env_add(e, "AI_PROXY_CONTROL_URL=%s", s->control_url);
	env_add(e, "AI_PROXY_GATEWAY_URL=%s", s->gateway_url);
	env_add(e, "AI_PROXY_RATELIMITER_URL=%s", s->rl_url);
	env_add(e, "AI_PROXY_ACCOUNTANT_URL=%s", s->acct_url);
	env_add(e, "AI_PROXY_USAGE_URL=%s", s->usage_url);
	env_add(
	    e, "AI_PROXY_MODELS_FILE=%s/config/models.json", h_source_dir());
	env_add(e, "AI_PROXY_STATE_DIR=%s/%s", s->dir, name);
	/* Limits out of the way unless a test sets its own (gw_env). */
	env_add(e, "AI_PROXY_RATE_LIMIT_PER_MINUTE=1000000");
	env_add(e, "AI_PROXY_RATE_LIMIT_PER_HOUR=10000000");
	env_add(e, "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=10000000");
	env_add(e, "AI_PROXY_COST_LIMIT_DAILY=1000000");
	env_add(e, "LOG_LEVEL=%s",
	    getenv("AIPROXY_TEST_DEBUG") != NULL ? "debug" : "info");
	if (s->opts.timeout_seconds > 0)
		env_add(
		    e, "AI_PROXY_TIMEOUT_SECONDS=%d", s->opts.timeout_seconds);
}

bool
suite_have(const char *bin)
{
	char *p = h_bin_path(bin);

	free(p);
	return p != NULL;
}

static int
start_proc(struct suite *s, struct hproc *p, const char *name, const char *bin,
    struct env *e)
{
	char log[PATH_MAX], vglog[PATH_MAX + 16];
	char *path = h_bin_path(bin);
	char *argv[12];
	int rv, n = 0;

	if (path == NULL) {
		fprintf(stderr, "suite: %s is not built\n", bin);
		return -ENOENT;
	}
	snprintf(log, sizeof(log), "%s/%s.log", s->dir, name);
	/* Under memcheck: an error or a definite leak (the daemon must free
	 * everything on SIGTERM) makes the exit status 99. */
	if (s->opts.valgrind) {
		snprintf(
		    vglog, sizeof(vglog), "--log-file=%s/%s.vg", s->dir, name);
		argv[n++] = (char *)SUITE_VALGRIND;
		argv[n++] = (char *)"--error-exitcode=99";
		argv[n++] = (char *)"--leak-check=full";
		argv[n++] = (char *)"--errors-for-leak-kinds=definite";
		argv[n++] = (char *)"--show-leak-kinds=definite";
		argv[n++] = (char *)"--child-silent-after-fork=yes";
		argv[n++] = vglog;
	}
	argv[n++] = path;
	argv[n++] = (char *)"-d";
	argv[n] = NULL;
	rv = h_proc_start(p, name, argv, e->v, log, NULL);
	free(path);
	return rv;
}

static int
start_worker(struct suite *s, int i)
{
	struct env e = {.n = 0};
	char name[32];
	int rv;

	snprintf(name, sizeof(name), "worker%d", i + 1);
	env_common(s, &e, name);
	env_add(&e, "AI_PROXY_WORKER_ID=w%d", i + 1);
	env_add(&e, "CLAUDE_API_KEY=%s", SUITE_ANTHROPIC_KEY);
	env_add(&e, "OPENAI_API_KEY=%s", SUITE_OPENAI_KEY);
	env_add(&e, "CLAUDE_BASE_URL=%s", s->mock.url);
	env_add(&e, "OPENAI_BASE_URL=%s", s->mock.url);
	env_add(&e, "AI_PROXY_MAX_RETRIES=0");
	/* Breakers out of the way unless a test sets its own (worker_env). */
	env_add(&e, "CIRCUIT_BREAKER_FAILURE_THRESHOLD=1000");
	env_add(&e, "CIRCUIT_BREAKER_MIN_VOLUME=100000");
	for (int k = 0; s->opts.worker_env && s->opts.worker_env[k]; k++)
		env_add(&e, "%s", s->opts.worker_env[k]);
	rv = start_proc(s, &s->workers[i], name, "aiproxy-provider-worker", &e);
	env_free(&e);
	if (rv == 0)
		s->worker_up[i] = true;
	return rv;
}

int
suite_add_worker(struct suite *s)
{
	int rv;

	if (s->nworkers >= SUITE_MAX_WORKERS)
		return -ENOSPC;
	if ((rv = start_worker(s, s->nworkers)) != 0)
		return rv;
	s->nworkers++;
	return 0;
}

json_t *
suite_gateway_status(const struct suite *s)
{
	struct msg_status_req q;
	struct msg_status_resp a;
	char *buf = NULL, *reply = NULL;
	size_t len, rlen;
	json_t *j = NULL;

	memset(&q, 0, sizeof(q));
	snprintf(q.what, sizeof(q.what), "health");
	if (msg_status_req_encode(&q, &buf, &len) != 0)
		return NULL;
	if (nngx_call(s->gateway_url, buf, len, 1000, &reply, &rlen) == 0 &&
	    msg_status_resp_decode(reply, rlen, &a) == 0)
		j = json_loadb(a.payload, a.payload_len, 0, NULL);
	free(buf);
	free(reply);
	return j;
}

int
suite_workers_connected(struct suite *s)
{
	json_t *j = suite_gateway_status(s);
	int n = -EPROTO;

	if (j == NULL)
		return -EIO;
	if (json_is_integer(json_object_get(j, "workers")))
		n = (int)json_integer_value(json_object_get(j, "workers"));
	json_decref(j);
	return n;
}

int
suite_wait_workers(struct suite *s, int n, int timeout_ms)
{
	struct timespec nap = {0, 20 * 1000000L};

	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (suite_workers_connected(s) == n)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -ETIMEDOUT;
}

/* Polls url with ping until a pong comes back. */
static int
wait_pong(const char *url, int timeout_ms)
{
	struct timespec nap = {0, 20 * 1000000L};
	struct msg_ping p;
	struct msg_pong q;
	char *buf = NULL, *reply = NULL;
	size_t len, rlen;
	int rv = -ETIMEDOUT;

	memset(&p, 0, sizeof(p));
	if (msg_ping_encode(&p, &buf, &len) != 0)
		return -ENOMEM;
	for (int waited = 0; waited < timeout_ms; waited += 220) {
		if (nngx_call(url, buf, len, 200, &reply, &rlen) == 0) {
			rv = msg_pong_decode(reply, rlen, &q);
			free(reply);
			if (rv == 0)
				break;
		}
		rv = -ETIMEDOUT;
		nanosleep(&nap, NULL);
	}
	free(buf);
	return rv;
}

/* Polls /health/detailed until the running ratelimiter and accountant
 * show "up". */
static int
wait_detailed(struct suite *s, int timeout_ms)
{
	struct timespec nap = {0, 50 * 1000000L};
	struct h_resp r;
	json_t *j, *c;
	bool ok;

	for (int waited = 0; waited < timeout_ms; waited += 50) {
		ok = false;
		if (suite_get(s, "/health/detailed", NULL, &r) == 0) {
			if ((j = suite_json(&r)) != NULL) {
				c = json_object_get(j, "components");
				ok = (!s->rl_up ||
					 strcmp(
					     json_string_value(json_object_get(
						 json_object_get(
						     c, "ratelimiter"),
						 "status"))
						 ?: "",
					     "up") == 0) &&
				     (!s->acct_up ||
					 strcmp(
					     json_string_value(json_object_get(
						 json_object_get(
						     c, "accountant"),
						 "status"))
						 ?: "",
					     "up") == 0);
				json_decref(j);
			}
			h_resp_free(&r);
		}
		if (ok)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -ETIMEDOUT;
}

static void
make_url(char *out, size_t outlen)
{
	snprintf(out, outlen, "tcp://127.0.0.1:%d", h_free_port());
}

/* The pid answering ping on the suite's gateway URL, or -errno. */
static long
gateway_pid(struct suite *s)
{
	struct msg_ping p;
	struct msg_pong q;
	char *buf = NULL, *reply = NULL;
	size_t len, rlen;
	long pid = -EIO;

	memset(&p, 0, sizeof(p));
	if (msg_ping_encode(&p, &buf, &len) != 0)
		return -ENOMEM;
	if (nngx_call(s->gateway_url, buf, len, 200, &reply, &rlen) == 0) {
		if (msg_pong_decode(reply, rlen, &q) == 0)
			pid = (long)q.pid;
		free(reply);
	}
	free(buf);
	return pid;
}

/* Polls /health until it answers; -EAGAIN when the gateway died (its
 * port was taken meanwhile). */
static int
wait_gateway(struct suite *s, int timeout_ms)
{
	struct timespec nap = {0, 20 * 1000000L};
	struct h_resp r;

	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (suite_get(s, "/health", NULL, &r) == 0) {
			bool ok = r.status == 200;

			h_resp_free(&r);
			/* Ours, not another suite's on a recycled port. */
			if (ok && gateway_pid(s) == s->gw.pid)
				return 0;
		}
		if (!h_proc_alive(&s->gw))
			return -EAGAIN;
		nanosleep(&nap, NULL);
	}
	return -ETIMEDOUT;
}

/* One attempt on fresh ports.  -EAGAIN: a daemon could not bind. */
static int
suite_try_start(struct suite *s, const struct suite_opts *opts)
{
	struct env e = {.n = 0};
	int rv;

	memset(s, 0, sizeof(*s));
	s->opts = *opts;
	if ((s->dir = h_tmpdir("gwsuite")) == NULL)
		return -EIO;
	s->http_port = h_free_port();
	snprintf(s->base, sizeof(s->base), "http://127.0.0.1:%d", s->http_port);
	make_url(s->worker_url, sizeof(s->worker_url));
	make_url(s->stream_url, sizeof(s->stream_url));
	make_url(s->control_url, sizeof(s->control_url));
	make_url(s->gateway_url, sizeof(s->gateway_url));
	make_url(s->rl_url, sizeof(s->rl_url));
	make_url(s->acct_url, sizeof(s->acct_url));
	make_url(s->usage_url, sizeof(s->usage_url));

	if ((rv = h_mock_start(
		 &s->mock, SUITE_ANTHROPIC_KEY, SUITE_OPENAI_KEY)) != 0)
		goto fail;
	s->mock_up = true;

	env_common(s, &e, "gateway");
	env_add(&e, "AI_PROXY_HOST=127.0.0.1");
	env_add(&e, "AI_PROXY_PORT=%d", s->http_port);
	if (!opts->no_admin_key)
		env_add(&e, "AI_PROXY_ADMIN_KEY=%s", SUITE_ADMIN_KEY);
	if (opts->cors_origins != NULL)
		env_add(&e, "AI_PROXY_CORS_ORIGINS=%s", opts->cors_origins);
	for (int k = 0; opts->gw_env && opts->gw_env[k]; k++)
		env_add(&e, "%s", opts->gw_env[k]);
	rv = start_proc(s, &s->gw, "gateway", "aiproxy-gateway", &e);
	env_free(&e);
	if (rv != 0)
		goto fail;
	s->gw_up = true;
	if ((rv = wait_gateway(s, SUITE_START_MS)) != 0) {
		fprintf(stderr, "suite: the gateway did not answer /health\n");
		goto fail;
	}

	if (!opts->no_rl_acct && suite_have("aiproxy-ratelimiter")) {
		env_common(s, &e, "ratelimiter");
		if (opts->redis_url != NULL) {
			env_add(&e, "REDIS_ENABLED=true");
			env_add(&e, "REDIS_URL=%s", opts->redis_url);
		}
		for (int k = 0; opts->rl_env && opts->rl_env[k]; k++)
			env_add(&e, "%s", opts->rl_env[k]);
		if (start_proc(s, &s->rl, "ratelimiter", "aiproxy-ratelimiter",
			&e) == 0)
			s->rl_up = true;
		env_free(&e);
	}
	if (!opts->no_rl_acct && suite_have("aiproxy-accountant")) {
		env_common(s, &e, "accountant");
		if (start_proc(s, &s->acct, "accountant", "aiproxy-accountant",
			&e) == 0)
			s->acct_up = true;
		env_free(&e);
	}

	if (s->rl_up && wait_pong(s->rl_url, SUITE_START_MS) != 0) {
		fprintf(stderr, "suite: the ratelimiter does not answer\n");
		rv = h_proc_alive(&s->rl) ? -ETIMEDOUT : -EAGAIN;
		goto fail;
	}
	if (s->acct_up && wait_pong(s->acct_url, SUITE_START_MS) != 0) {
		fprintf(stderr, "suite: the accountant does not answer\n");
		rv = h_proc_alive(&s->acct) ? -ETIMEDOUT : -EAGAIN;
		goto fail;
	}
	for (int i = 0; i < opts->workers; i++)
		if ((rv = suite_add_worker(s)) != 0)
			goto fail;
	if (opts->workers > 0 &&
	    (rv = suite_wait_workers(s, opts->workers, SUITE_START_MS)) != 0) {
		fprintf(stderr, "suite: %d workers did not connect\n",
		    opts->workers);
		goto fail;
	}
	/* The gateway's own connections to them (its dials retry). */
	if ((s->rl_up || s->acct_up) && wait_detailed(s, SUITE_START_MS) != 0)
		fprintf(stderr, "suite: the gateway does not see the "
				"ratelimiter/accountant\n");
	return 0;
fail:
	suite_stop(s);
	return rv != 0 ? rv : -EIO;
}

int
suite_start(struct suite *s, const struct suite_opts *opts)
{
	int rv = -EAGAIN;

	/* Free ports are only free until someone else takes them: on a
	 * collision, start again on new ones. */
	for (int attempt = 0; attempt < 4 && rv == -EAGAIN; attempt++) {
		if (attempt > 0)
			fprintf(stderr, "suite: port taken, retrying\n");
		rv = suite_try_start(s, opts);
	}
	return rv;
}

void
suite_stop(struct suite *s)
{
	for (int i = 0; i < s->nworkers; i++)
		if (s->worker_up[i]) {
			h_proc_stop(&s->workers[i], SIGTERM, SUITE_STOP_MS);
			s->worker_up[i] = false;
		}
	if (s->gw_up) {
		s->gw_exit = h_proc_stop(&s->gw, SIGTERM, SUITE_STOP_MS);
		s->gw_up = false;
	}
	if (s->rl_up) {
		h_proc_stop(&s->rl, SIGTERM, SUITE_STOP_MS);
		s->rl_up = false;
	}
	if (s->acct_up) {
		h_proc_stop(&s->acct, SIGTERM, SUITE_STOP_MS);
		s->acct_up = false;
	}
	if (s->mock_up) {
		h_mock_stop(&s->mock);
		s->mock_up = false;
	}
	if (s->dir != NULL) {
		if (getenv("AIPROXY_KEEP_LOGS") == NULL)
			h_rmtree(s->dir);
		else
			fprintf(stderr, "suite: logs kept in %s\n", s->dir);
		free(s->dir);
		s->dir = NULL;
	}
}

const char *
suite_url(const struct suite *s, const char *path, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s", s->base, path);
	return out;
}

static void
append_file(char **all, size_t *len, const char *path)
{
	size_t n = 0;
	char *p = h_read_file(path, &n), *q;

	if (p == NULL)
		return;
	if ((q = realloc(*all, *len + n + 2)) != NULL) {
		memcpy(q + *len, p, n);
		*len += n;
		q[(*len)++] = '\n';
		q[*len] = '\0';
		*all = q;
	}
	free(p);
}

char *
suite_logs(const struct suite *s, size_t *ret_len)
{
	char *all = calloc(1, 1);
	size_t len = 0;

	if (all == NULL)
		return NULL;
	append_file(&all, &len, s->gw.log_path);
	for (int i = 0; i < s->nworkers; i++)
		append_file(&all, &len, s->workers[i].log_path);
	if (s->rl.log_path[0] != '\0')
		append_file(&all, &len, s->rl.log_path);
	if (s->acct.log_path[0] != '\0')
		append_file(&all, &len, s->acct.log_path);
	append_file(&all, &len, s->mock.proc.log_path);
	if (ret_len != NULL)
		*ret_len = len;
	return all;
}

int
suite_post(const struct suite *s, const char *path, const char *body,
    const char *const headers[], struct h_resp *ret)
{
	const char *hdrs[16];
	char url[512];
	int n = 0;

	hdrs[n++] = "Content-Type: application/json";
	for (int i = 0; headers != NULL && headers[i] != NULL && n < 15; i++)
		hdrs[n++] = headers[i];
	hdrs[n] = NULL;
	return h_http("POST", suite_url(s, path, url, sizeof(url)), hdrs, body,
	    body != NULL ? strlen(body) : 0, 20000, ret);
}

int
suite_get(const struct suite *s, const char *path, const char *const headers[],
    struct h_resp *ret)
{
	char url[512];

	return h_http("GET", suite_url(s, path, url, sizeof(url)), headers,
	    NULL, 0, 20000, ret);
}

json_t *
suite_json(const struct h_resp *r)
{
	if (r->body == NULL)
		return NULL;
	return json_loadb(r->body, r->body_len, 0, NULL);
}

const char *
suite_missing_security_header(const struct h_resp *r)
{
	static const struct {
		const char *name, *value;
	} want[] = {
	    {"X-Content-Type-Options", "nosniff"},
	    {"X-Frame-Options", "DENY"},
	    {"X-XSS-Protection", "1; mode=block"},
	    {"Cache-Control", "no-cache, no-store, must-revalidate"},
	    {"X-Request-ID", NULL},
	};
	char v[256];

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		if (h_resp_header(r, want[i].name, v, sizeof(v)) == NULL)
			return want[i].name;
		if (want[i].value != NULL && strcmp(v, want[i].value) != 0)
			return want[i].name;
	}
	return NULL;
}

json_t *
suite_mock_requests(const struct suite *s)
{
	struct h_resp r;
	char url[256];
	json_t *j = NULL;

	snprintf(url, sizeof(url), "%s/_mock/requests", s->mock.url);
	if (h_http("GET", url, NULL, NULL, 0, 5000, &r) != 0)
		return NULL;
	if (r.status == 200)
		j = suite_json(&r);
	h_resp_free(&r);
	return j;
}

json_t *
suite_mock_find(const struct suite *s, const char *request_id)
{
	json_t *all = suite_mock_requests(s), *e, *found = NULL;
	size_t i;

	if (all == NULL)
		return NULL;
	json_array_foreach(all, i, e) {
		const char *v = json_string_value(json_object_get(
		    json_object_get(e, "headers"), "x-request-id"));

		if (v != NULL && strcmp(v, request_id) == 0) {
			found = e;
			json_incref(found);
		}
	}
	json_decref(all);
	return found;
}

int
suite_mock_wait_outcome(const struct suite *s, const char *request_id,
    const char *want, int timeout_ms)
{
	struct timespec nap = {0, 20 * 1000000L};

	for (int waited = 0; waited < timeout_ms; waited += 20) {
		json_t *e = suite_mock_find(s, request_id);
		const char *o =
		    e ? json_string_value(json_object_get(e, "outcome")) : NULL;
		bool ok = o != NULL && strcmp(o, want) == 0;

		json_decref(e);
		if (ok)
			return 0;
		nanosleep(&nap, NULL);
	}
	return -ETIMEDOUT;
}

/* Replaces the run of digits at p with one "0" (in place). */
static char *
squash_digits(char *p)
{
	char *q = p;

	while (*q >= '0' && *q <= '9')
		q++;
	if (q > p + 1)
		memmove(p + 1, q, strlen(q) + 1);
	if (q > p)
		*p = '0';
	return p + 1;
}

void
suite_normalize(char *text)
{
	static const char *const marks[] = {"mock", "req_", "\"created\":"};

	for (size_t m = 0; m < sizeof(marks) / sizeof(marks[0]); m++) {
		char *p = text;

		while ((p = strstr(p, marks[m])) != NULL) {
			p += strlen(marks[m]);
			if (*p >= '0' && *p <= '9')
				p = squash_digits(p);
		}
	}
}

bool
suite_has_key(const char *buf, size_t n)
{
	return buf != NULL && (memmem(buf, n, SUITE_ANTHROPIC_KEY,
				   strlen(SUITE_ANTHROPIC_KEY)) != NULL ||
				  memmem(buf, n, SUITE_OPENAI_KEY,
				      strlen(SUITE_OPENAI_KEY)) != NULL);
}
