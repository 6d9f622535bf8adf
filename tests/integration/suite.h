/*
 * The whole request path for integration tests: the mock upstream, N
 * provider-workers, the gateway, and the thin ratelimiter and accountant
 * when their binaries are built, each with its own environment, on free
 * loopback ports (HTTP and every nng URL), in one temporary folder.
 */
#ifndef AIPROXY_TEST_SUITE_H
#define AIPROXY_TEST_SUITE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "harness.h"

#define SUITE_MAX_WORKERS   4
#define SUITE_ENV_MAX       64
#define SUITE_ANTHROPIC_KEY "test-anthropic-key"
#define SUITE_OPENAI_KEY    "test-openai-key"
#define SUITE_ADMIN_KEY     "suite-admin-key-0123456789"
#define SUITE_VALGRIND      "/usr/bin/valgrind"

struct suite_opts {
	int workers;              /* provider-workers to start (0..MAX) */
	int timeout_seconds;      /* AI_PROXY_TIMEOUT_SECONDS (0: default) */
	bool no_admin_key;        /* leave AI_PROXY_ADMIN_KEY unset */
	bool no_rl_acct;          /* do not start ratelimiter/accountant */
	const char *cors_origins; /* AI_PROXY_CORS_ORIGINS (NULL: none) */
	/* More "NAME=value" for the gateway / the workers (NULL-ended). */
	const char *const *gw_env;
	const char *const *worker_env;
	const char *const *rl_env;
	/* Run every daemon under valgrind memcheck (SUITE_VALGRIND); each
	 * one's report goes to <dir>/<name>.vg. */
	bool valgrind;
	/* The ratelimiter keeps its limits in this Redis (REDIS_ENABLED=true,
	 * REDIS_URL); NULL: in process.  Two suites started with the same
	 * redis_url are two gateway + ratelimiter pairs sharing limits. */
	const char *redis_url;
};

struct suite {
	char *dir;
	struct h_mock mock;
	bool mock_up;
	struct hproc gw;
	bool gw_up;
	int gw_exit; /* exit status from waitpid() after suite_stop */
	struct hproc workers[SUITE_MAX_WORKERS];
	bool worker_up[SUITE_MAX_WORKERS];
	int nworkers;
	struct hproc rl, acct;
	bool rl_up, acct_up;
	int http_port;
	char base[64]; /* http://127.0.0.1:port */
	char worker_url[64], stream_url[64], control_url[64], gateway_url[64];
	char rl_url[64], acct_url[64], usage_url[64];
	struct suite_opts opts;
};

/* Starts everything and waits until the gateway answers /health and
 * opts->workers workers are connected.  0 or -errno (then everything
 * started is stopped). */
int suite_start(struct suite *s, const struct suite_opts *opts);
/* Stops everything (SIGTERM, then SIGKILL), records the gateway's exit
 * status, removes the folder unless AIPROXY_KEEP_LOGS is set. */
void suite_stop(struct suite *s);
/* Starts one more worker (index s->nworkers). */
int suite_add_worker(struct suite *s);
/* Polls the gateway until n workers are connected. */
int suite_wait_workers(struct suite *s, int n, int timeout_ms);
/* The gateway's status_req payload (in_flight, workers, requests,
 * settles...) as JSON, or NULL.  Caller decrefs. */
json_t *suite_gateway_status(const struct suite *s);
/* Connected workers as the gateway reports them, or -errno. */
int suite_workers_connected(struct suite *s);
/* URL of path on the gateway (into out). */
const char *suite_url(
    const struct suite *s, const char *path, char *out, size_t outlen);
/* All daemon logs concatenated.  Caller frees. */
char *suite_logs(const struct suite *s, size_t *ret_len);
/* POST body (JSON) to path on the gateway; extra headers may be NULL.
 * Timeout 20 s.  0 or -errno as h_http(). */
int suite_post(const struct suite *s, const char *path, const char *body,
    const char *const headers[], struct h_resp *ret);
int suite_get(const struct suite *s, const char *path,
    const char *const headers[], struct h_resp *ret);
/* The response body as JSON, or NULL. */
json_t *suite_json(const struct h_resp *r);
/* The security headers every response must carry (and X-Request-ID);
 * NULL when all are there, else the name of a missing one. */
const char *suite_missing_security_header(const struct h_resp *r);
/* GET /_mock/requests of the suite's mock, as JSON.  NULL on error. */
json_t *suite_mock_requests(const struct suite *s);
/* The mock's log entry of the request the gateway sent with this
 * X-Request-ID (x-request-id header upstream), or NULL.  Caller decrefs. */
json_t *suite_mock_find(const struct suite *s, const char *request_id);
/* Polls the mock log until that entry's outcome is want. */
int suite_mock_wait_outcome(const struct suite *s, const char *request_id,
    const char *want, int timeout_ms);
/* Rewrites, in place, what differs between two identical mock answers:
 * the digits after "mock" / "req_" ids and "created":<n>. */
void suite_normalize(char *text);
/* Whether either provider test key occurs in the n bytes at buf. */
bool suite_has_key(const char *buf, size_t n);
/* Whether the binary is built (e.g. "aiproxy-provider-worker"). */
bool suite_have(const char *bin);

#endif
