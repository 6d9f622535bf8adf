/*
 * The circuit breaker of one upstream target (a provider's base URL and
 * key), and the numbers the status endpoint shows about it.  A pure state
 * machine: the caller passes the clock (wall-clock milliseconds, since
 * open_until travels between workers) and does the locking.
 *
 *   closed     calls go through; a failure adds to the consecutive count
 *              and the 60 s window (1 s buckets).  Opens when the count
 *              reaches failure_threshold, or when the window holds at
 *              least min_volume attempts and its failure rate exceeds
 *              rate.
 *   open       calls fail fast until open_until; then half-open.
 *   half_open  exactly one probe at a time; the others fail fast.  The
 *              probe's success closes the breaker (counters cleared), its
 *              failure opens it again for recovery_ms.
 *
 * A breaker opened by a peer (another worker's trip, relayed by the
 * gateway) does not probe on its own: it waits for the peer's verdict
 * (closed, or open again) until open_until + recovery_ms, and only then
 * probes itself (the peer may have died).  So one probe runs per trip in
 * the whole pool.
 *
 * Failures: 5xx, 529, timeouts, connection errors, a stream broken by the
 * provider.  A client's 4xx (429 included) counts as a success: the
 * provider answered.
 */
#ifndef PW_BREAKER_H
#define PW_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#define PW_BREAKER_WINDOW_S 60
/* Latency histogram bucket upper bounds (ms); the last bucket is open. */
#define PW_LAT_BUCKETS 16
extern const int64_t pw_lat_bounds[PW_LAT_BUCKETS - 1];

enum pw_breaker_state {
	PW_BREAKER_CLOSED,
	PW_BREAKER_OPEN,
	PW_BREAKER_HALF_OPEN,
	PW_BREAKER_STATE_MAX
};

enum pw_breaker_verdict {
	PW_BREAKER_ALLOW, /* closed: go */
	PW_BREAKER_PROBE, /* half-open: go, this call is the probe */
	PW_BREAKER_REJECT /* fail fast */
};

struct pw_breaker_cfg {
	int64_t failure_threshold; /* >= 1 */
	double rate;               /* 0..1: trips when the rate exceeds it */
	int64_t min_volume;        /* attempts in the window before a rate
				      trip */
	int64_t recovery_ms;       /* open -> half-open */
};

struct pw_breaker_bucket {
	int64_t sec; /* which second (real ms / 1000) this bucket holds */
	uint32_t total, failures;
	uint32_t requests; /* client requests (fast fails included) */
	uint32_t lat[PW_LAT_BUCKETS];
};

struct pw_breaker {
	struct pw_breaker_cfg cfg;
	enum pw_breaker_state state;
	bool peer_held; /* opened by a peer: wait for its verdict */
	bool probing;   /* half-open: the probe is out */
	int64_t consecutive;
	int64_t open_until_ms;
	int64_t opened_at_ms;
	struct pw_breaker_bucket win[PW_BREAKER_WINDOW_S];

	/* For the status endpoint. */
	int64_t in_flight;
	int64_t last_success_ms;
	int64_t last_error_ms;
	int64_t last_error_status;
	char last_error_code[65];
	char last_error_message[129];
	char reason[65]; /* why it last opened */
};

void pw_breaker_init(struct pw_breaker *b, const struct pw_breaker_cfg *cfg);
/* The state at now (an open breaker past open_until reads half-open). */
enum pw_breaker_state pw_breaker_state(struct pw_breaker *b, int64_t now_ms);
const char *pw_breaker_state_str(enum pw_breaker_state s);
/* The state named s, or PW_BREAKER_STATE_MAX. */
enum pw_breaker_state pw_breaker_state_from_str(const char *s);

/*
 * May a call go upstream now?  On REJECT, *ret_retry_ms is how long until
 * the breaker may admit a probe (>= 1000, whole seconds).  A PROBE must be
 * ended with pw_breaker_record(probe=true) or pw_breaker_release().
 */
enum pw_breaker_verdict pw_breaker_admit(
    struct pw_breaker *b, int64_t now_ms, int64_t *ret_retry_ms);

/* The outcome of one upstream attempt.  Returns true when the state
 * changed (closed -> open, probe -> closed or open). */
bool pw_breaker_record(struct pw_breaker *b, int64_t now_ms, bool probe,
    bool failure, int64_t latency_ms);
/* A probe ended without a verdict (cancelled): another may go. */
void pw_breaker_release(struct pw_breaker *b);
/* Counts one client request in the window (for requests per minute). */
void pw_breaker_count_request(struct pw_breaker *b, int64_t now_ms);
/* Notes the last error for the status endpoint (code, message). */
void pw_breaker_note_error(struct pw_breaker *b, int64_t now_ms, int64_t status,
    const char *code, const char *message);

/* A peer opened its breaker until until_ms: open ours (peer-held) unless
 * it is already open longer.  Returns true when the state changed. */
bool pw_breaker_peer_open(
    struct pw_breaker *b, int64_t now_ms, int64_t until_ms);
/* A peer's probe succeeded: close a peer-held breaker.  Returns true when
 * the state changed. */
bool pw_breaker_peer_closed(struct pw_breaker *b, int64_t now_ms);
/* Closes and clears the counters (admin reset).  Probes in flight end
 * without a verdict. */
void pw_breaker_reset(struct pw_breaker *b);

/* Window sums over the last PW_BREAKER_WINDOW_S seconds. */
struct pw_breaker_window {
	int64_t total, failures, requests;
	int64_t lat[PW_LAT_BUCKETS];
};
void pw_breaker_window(
    const struct pw_breaker *b, int64_t now_ms, struct pw_breaker_window *ret);
/* The histogram bucket of a latency. */
int pw_lat_bucket(int64_t ms);

#endif
