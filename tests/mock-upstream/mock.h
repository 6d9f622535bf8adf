/*
 * aiproxy-mock-upstream: a fake Anthropic Messages + OpenAI Chat
 * Completions server for tests and benchmarks.  Internal interfaces
 * between its modules:
 *
 *   mock_main.c   flags, libmicrohttpd, routes, request lifecycle, pacing
 *   mock_gen.c    request analysis, fault specs, response bodies/events
 *   mock_state.c  request log, /_mock/config default fault, fail-first
 *                 counters, JSON logging to stderr
 *   mock_timer.c  one timer thread resuming suspended connections
 */
#ifndef AIPROXY_MOCK_H
#define AIPROXY_MOCK_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct MHD_Connection;

#define MOCK_BODY_MAX      (32u * 1024 * 1024)
#define MOCK_SPEC_MAX      512
#define MOCK_KEY_MAX       128
#define MOCK_QUOTE_MAX     48
#define MOCK_STALL_MAX_MS  120000
#define MOCK_REQLOG_MAX    100000
#define MOCK_FAILFIRST_MAX 1024

enum mock_prov { MOCK_PROV_ANTHROPIC, MOCK_PROV_OPENAI, MOCK_PROV_MAX };

const char *mock_prov_str(enum mock_prov prov);

/* ---- fault specs (mock_gen.c) ---- */

/* Numeric fields are -1 when not given. */
struct mock_fault {
	int status;
	long retry_after;
	long retry_after_ms;
	long latency_ms;
	long chunk_delay_ms;
	long duration_ms;
	long drop_after;
	long stall_after;
	long error_event_after;
	long fail_first;
	char key[MOCK_KEY_MAX];
	long cache_read;
	long cache_write;
};

void mock_fault_init(struct mock_fault *f);
/* Parses "k=v;k=v" (len bytes).  -EINVAL on an unknown key or bad value;
 * *ret is only valid on success. */
int mock_fault_parse(const char *spec, size_t len, struct mock_fault *ret);
/* Finds "[[mock:<spec>]]" in buf and copies <spec> into out.  Returns
 * true when found and it fit. */
bool mock_fault_directive(
    const char *buf, size_t len, char *out, size_t outlen);

/* ---- request analysis and responses (mock_gen.c) ---- */

struct mock_info {
	enum mock_prov prov;
	const char *model; /* borrowed from the request JSON */
	bool stream;
	bool include_usage;
	long max_tokens; /* -1: none */
	size_t text_bytes;
	char quote[MOCK_QUOTE_MAX + 2];
	const char *tool_name; /* NULL: plain text reply */
	const char *tool_prop;
};

enum mock_end { MOCK_END_OK, MOCK_END_DROP, MOCK_END_STALL, MOCK_END_MAX };

/* What one provider request is answered with. */
struct mock_plan {
	enum mock_prov prov;
	unsigned int status;
	bool stream;
	char *body; /* non-stream response */
	size_t body_len;
	char **events; /* stream: complete SSE events, in order */
	size_t *event_lens;
	size_t n_events;
	size_t cap_events;
	enum mock_end end;
	long retry_after;
	long retry_after_ms;
	long latency_ms;
	long chunk_delay_ms;
	long duration_ms;
};

void mock_plan_init(struct mock_plan *p, enum mock_prov prov);
void mock_plan_reset(struct mock_plan *p);

/* Validates and summarises a chat request.  On -EINVAL, errmsg says why
 * and *ret_param names the field (OpenAI "param"). */
int mock_gen_analyze(enum mock_prov prov, json_t *req, struct mock_info *ret,
    char *errmsg, size_t errlen, const char **ret_param);
/* A success response (JSON or stream) shaped by the fault's stream
 * options and cache numbers. */
int mock_gen_success(const struct mock_info *info, const struct mock_fault *f,
    unsigned long long seq, struct mock_plan *plan);
/* The provider's own error body for status.  message/param may be NULL
 * (defaults per status). */
int mock_gen_error(enum mock_prov prov, unsigned int status,
    const char *message, const char *param, unsigned long long seq,
    struct mock_plan *plan);
int mock_gen_models(enum mock_prov prov, struct mock_plan *plan);

/* ---- shared state (mock_state.c) ---- */

int mock_state_init(const char *reqlog_path);
void mock_state_free(void);
unsigned long long mock_reqlog_next_seq(void);
/* Appends entry (takes a new reference; the caller keeps its own). */
void mock_reqlog_add(json_t *entry);
/* Sets entry's outcome while the request is still running. */
void mock_reqlog_mark(json_t *entry, const char *outcome);
/* Sets entry's outcome and writes it to the -l file. */
void mock_reqlog_finish(json_t *entry, const char *outcome);
/* JSON array text of all entries; caller frees. */
char *mock_reqlog_dump(void);
void mock_reqlog_clear(void);

/* /_mock/config default fault: copies it into out and consumes one use.
 * Returns false when none is active. */
bool mock_config_take(char *out, size_t outlen);
int mock_config_set(const char *spec, long count);
/* Counts one more request carrying key; returns the new count. */
long mock_failfirst_hit(const char *key);

long long mock_now_ms(void);
long long mock_wall_ms(void);
/* One JSON object per line on stderr; takes fields (may be NULL). */
void mock_log(const char *level, const char *msg, json_t *fields);

/* ---- timer (mock_timer.c) ---- */

struct mock_timer_entry {
	long long due_ms;
	struct MHD_Connection *conn;
};

struct mock_timer {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	struct mock_timer_entry *heap;
	size_t n;
	size_t cap;
	bool stopping;
	bool running;
};

int mock_timer_start(struct mock_timer *t);
/* Resumes conn (which the caller has just suspended) at due_ms
 * (CLOCK_MONOTONIC).  -ESHUTDOWN once stopping: the caller resumes it. */
int mock_timer_add(
    struct mock_timer *t, long long due_ms, struct MHD_Connection *conn);
/* Resumes every pending connection now, refuses new ones, joins.  Adds
 * stay safe (and fail) until mock_timer_free(). */
void mock_timer_stop(struct mock_timer *t);
/* After the HTTP daemon is gone. */
void mock_timer_free(struct mock_timer *t);

#endif
