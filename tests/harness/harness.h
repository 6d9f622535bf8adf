/*
 * Integration test harness: real processes on free loopback ports in
 * temporary folders.  Everything a test starts is stopped by the matching
 * *_stop() and, should the test process die, by PR_SET_PDEATHSIG.
 *
 * Functions return 0 or a negative errno unless said otherwise.
 */
#ifndef AIPROXY_HARNESS_H
#define AIPROXY_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- paths and ports (proc.c) ---- */

/* Build and source trees, from AIPROXY_BUILD_DIR / AIPROXY_SOURCE_DIR
 * (set by ctest); fatal when unset.  Borrowed strings. */
const char *h_build_dir(void);
const char *h_source_dir(void);
/* Absolute path of a built executable, searched under the build tree.
 * Caller frees; NULL when not found. */
char *h_bin_path(const char *name);
/* A free TCP port on 127.0.0.1 (bound to :0, then released). */
int h_free_port(void);
/* mkdtemp() under $TMPDIR (or /tmp) named aiproxy-<prefix>-XXXXXX.
 * Caller frees; remove with h_rmtree(). */
char *h_tmpdir(const char *prefix);
int h_rmtree(const char *path);

/* ---- processes (proc.c) ---- */

struct hproc {
	pid_t pid;
	char name[64];
	char log_path[PATH_MAX]; /* stdout+stderr of the child */
};

/*
 * Starts argv[0] (absolute path) with the current environment plus
 * env_extra ("NAME=value" strings, NULL-terminated, may be NULL; a value
 * here overrides the inherited one).  stdout and stderr go to log_path
 * (appended).  When run_as is not NULL and we are root, the child drops to
 * that user (PostgreSQL refuses root).  The child dies with the test.
 */
int h_proc_start(struct hproc *p, const char *name, char *const argv[],
    char *const env_extra[], const char *log_path, const char *run_as);
/* Sends sig, waits up to timeout_ms, then SIGKILLs.  Returns the exit
 * status as from waitpid() (>= 0) or a negative errno. */
int h_proc_stop(struct hproc *p, int sig, int timeout_ms);
bool h_proc_alive(struct hproc *p);

/* Polls until a TCP connect to 127.0.0.1:port succeeds. -ETIMEDOUT. */
int h_wait_tcp(int port, int timeout_ms);
/* Polls until a GET of url answers any HTTP status. */
int h_wait_http(const char *url, int timeout_ms);
/* Polls until file at path contains needle (e.g. a log line). */
int h_wait_file_contains(const char *path, const char *needle, int timeout_ms);
/* Whole file into a NUL-terminated buffer; caller frees. NULL on error. */
char *h_read_file(const char *path, size_t *ret_len);

/* ---- HTTP client (http.c, libcurl) ---- */

struct h_resp {
	long status;
	char *body; /* NUL-terminated, caller frees via h_resp_free */
	size_t body_len;
	char *headers; /* raw response header block */
};

/* headers: NULL-terminated "Name: value" strings, may be NULL.  body may be
 * NULL.  A transport failure returns a negative errno (-ECONNREFUSED,
 * -ETIMEDOUT, -ECONNRESET...) and leaves *ret empty. */
int h_http(const char *method, const char *url, const char *const headers[],
    const char *body, size_t body_len, int timeout_ms, struct h_resp *ret);
/* Value of the first header called name (case-insensitive), copied into
 * out.  NULL when absent. */
const char *h_resp_header(
    const struct h_resp *r, const char *name, char *out, size_t outlen);
void h_resp_free(struct h_resp *r);

/* ---- Server-Sent Events (http.c) ---- */

struct h_sse_event {
	char *event; /* NULL when the event had no "event:" line */
	char *data;  /* data lines joined by '\n' */
};

/* Parses a complete SSE body into events.  Caller frees with h_sse_free. */
int h_sse_parse(
    const char *body, size_t len, struct h_sse_event **ret, size_t *ret_n);
void h_sse_free(struct h_sse_event *ev, size_t n);

/* ---- services (db.c: redis and postgres; mock.c: mock upstream) ---- */

struct h_redis {
	struct hproc proc;
	int port;
	char *dir;
	char url[64]; /* redis://127.0.0.1:port */
};
int h_redis_start(struct h_redis *r);
/* A redis stopped or killed (proc.pid 0) again, on the same port and
 * folder, empty; waits until it answers.  0 or -errno. */
int h_redis_restart(struct h_redis *r);
void h_redis_stop(struct h_redis *r);

struct h_pg {
	struct hproc proc;
	int port;
	char *dir;
	char url[256]; /* postgresql://user@127.0.0.1:port/aiproxy */
};
/* initdb in a temporary folder, own port and socket folder, a database
 * called "aiproxy".  Slow (a second or two): start once per suite. */
int h_pg_start(struct h_pg *pg);
/* Stops the server, keeps the data folder (h_pg_restart brings it back). */
int h_pg_halt(struct h_pg *pg);
int h_pg_restart(struct h_pg *pg);
void h_pg_stop(struct h_pg *pg);

struct h_mock {
	struct hproc proc;
	int port;
	char *dir;
	char url[64]; /* http://127.0.0.1:port */
};
/* Starts tests/mock-upstream with the given expected keys (NULL: the
 * defaults "test-anthropic-key" / "test-openai-key"). */
int h_mock_start(
    struct h_mock *m, const char *anthropic_key, const char *openai_key);
void h_mock_stop(struct h_mock *m);

#endif
