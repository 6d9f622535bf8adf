/*
 * How an upstream answer or failure becomes the worker's reply (the table
 * of /work/notes/request-path.md section 3), the retry-after headers, and
 * the provider error event that closes a broken stream.
 */
#ifndef PW_MAP_H
#define PW_MAP_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <curl/curl.h>

#include "buf.h"
#include "pw_usage.h"

/* The reply's status, error code ("" on success) and a plain message (no
 * provider text).  Strings are static. */
struct pw_outcome {
	int status;
	const char *code;
	const char *message;
};

/* Outcome for an upstream HTTP status (2xx: 200, ""). */
struct pw_outcome pw_map_http(long upstream_status);

/* Why a call ended without a complete upstream answer. */
enum pw_fail {
	PW_FAIL_NONE,
	PW_FAIL_TIMEOUT,     /* the deadline passed (or the upstream stalled) */
	PW_FAIL_UNREACHABLE, /* no answer: refused, DNS, TLS, reset before any
				byte */
	PW_FAIL_BROKEN,      /* the transfer broke after bytes arrived */
	PW_FAIL_TOO_LARGE,   /* the response exceeded its bound */
	PW_FAIL_CANCELLED,   /* the gateway cancelled (client gone) */
	PW_FAIL_STOPPING,    /* the worker is shutting down */
	PW_FAIL_INTERNAL,    /* out of memory, a bug */
	PW_FAIL_BREAKER,     /* the circuit breaker refused the call */
	PW_FAIL_MAX
};

/* The failure behind a curl result; got_bytes: any response byte arrived. */
enum pw_fail pw_map_curl(CURLcode rc, bool got_bytes);
/* Outcome of a failure; streamed: chunks already went to the client. */
struct pw_outcome pw_map_fail(enum pw_fail f, bool streamed);
const char *pw_fail_str(enum pw_fail f);

/* Whether an attempt that ended so is worth another one: 429, 500, 502,
 * 503, 504, 529, connection refused/reset, a timeout. */
bool pw_map_retryable(long upstream_status, enum pw_fail f);
/* Whether it counts against the provider's breaker: 5xx (529 included),
 * timeouts, connection errors, a broken transfer.  A client's 4xx does
 * not. */
bool pw_map_breaker_failure(long upstream_status, enum pw_fail f);
/* Whether it says anything about the provider at all (a cancel or a stop
 * does not). */
bool pw_map_breaker_verdict(enum pw_fail f);

/*
 * Milliseconds the upstream asks to wait: retry-after-ms (float ms) wins,
 * else retry-after as float seconds or an HTTP date (relative to now).
 * Rounded up and clamped to 0..86400000.  Either header may be NULL.
 * -ENOENT when neither gives a usable value.
 */
int pw_retry_after_parse(
    const char *ms_hdr, const char *s_hdr, time_t now, int64_t *ret);

/*
 * Appends to out the provider's error event that ends a broken stream:
 * Anthropic "event: error\ndata: {...api_error...}\n\n", OpenAI
 * "data: {"error":{...server_error...}}\n\n".  When the stream stopped
 * inside an event (at_boundary false) a "\n\n" goes first, so the error
 * event stands on its own.
 */
int pw_error_event(
    enum pw_prov p, const char *message, bool at_boundary, struct buf *out);

/* Makes s valid UTF-8 in place: an invalid byte becomes '?', a sequence
 * cut short at the end (a truncated copy) is dropped. */
void pw_utf8_clip(char *s);

#endif
