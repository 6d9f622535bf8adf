/*
 * Where the limits live: an ops struct with two implementations of the
 * same rules (rl_limits.h).
 *
 *   redis  one Lua script (rl_script.lua, loaded once, run with EVALSHA)
 *          does each operation atomically in one round trip, on Redis's
 *          clock, over a pool of connections (each used by one thread at a
 *          time).  Several ratelimiters sharing one Redis agree.
 *   memory the same in process, under one mutex, on a given clock (a fake
 *          one in the unit tests).  The embedded default
 *          (REDIS_ENABLED=false) and the fallback while Redis is down.
 *
 * Subjects are named "user:<id>" or "session:<id>", client IPs by their
 * address.  Every operation returns 0 or a negative errno; the redis store
 * fails with -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EIO or -EPROTO when
 * Redis cannot answer (the caller falls back), never for a refusal.
 */
#ifndef AIPROXY_RL_STORE_H
#define AIPROXY_RL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "rl_limits.h"

/* "session:" + id, or "user:" + id. */
#define RL_SUBJECT_MAX (8 + PROTO_SUBJECT_MAX)
/* Reservation tokens: [A-Za-z0-9] only, without the backend letter. */
#define RL_TOKEN_MAX  40
#define RL_REASON_MAX 32

/* A microsecond wall clock (UTC); tests pass a fake one. */
typedef int64_t (*rl_clock_fn)(void *arg);

/* One request to admit. */
struct rl_check {
	char subject[RL_SUBJECT_MAX + 1]; /* "user:alice" */
	bool session;                     /* subject is a session id */
	char ip[PROTO_IP_MAX + 1];
	int64_t reserve_micro_usd;    /* worst case; 0: nothing to reserve */
	int64_t threat;               /* points this request adds */
	char token[RL_TOKEN_MAX + 1]; /* names the reservation, if any */
};

struct rl_verdict {
	enum rl_code code; /* RL_OK: admitted */
	int64_t limit;     /* of the tightest (or refusing) limit; micro-USD
			      for RL_COST */
	int64_t remaining;
	int64_t reset_s;
	int64_t retry_after_s; /* 0 when admitted */
	bool reserved;         /* a reservation named token was made */
};

struct rl_quota {
	int64_t minute_limit; /* after threat scaling */
	int64_t minute_used;
	int64_t hour_limit;
	int64_t hour_used;
	int64_t cost_limit_micro_usd;
	int64_t cost_used_micro_usd; /* spent today */
	int64_t cost_reserved_micro_usd;
	int64_t blocked_s; /* seconds the subject stays blocked, 0 if not */
};

enum rl_settle_state {
	RL_SETTLED,   /* the reservation was replaced by the actual cost */
	RL_UNKNOWN,   /* no such reservation (expired, or never here): the
			 actual cost was added */
	RL_DUPLICATE, /* settled before: nothing changed */
};

/* One blocked subject or IP. */
struct rl_block {
	char kind[8]; /* "user", "session" or "ip" */
	char id[PROTO_SUBJECT_MAX + 1];
	int64_t until_us; /* on the store's clock */
	int64_t retry_after_s;
	char reason[RL_REASON_MAX + 1];
};

struct rl_store_ops {
	const char *name; /* "redis", "memory" */
	/* Decides and, when admitted, applies (tats, reservation). */
	int (*check)(void *impl, const struct rl_limits *lim,
	    const struct rl_check *in, struct rl_verdict *ret);
	/* Settles the reservation token of subject to actual (0: release). */
	int (*settle)(void *impl, const char *subject, const char *token,
	    int64_t actual_micro_usd, enum rl_settle_state *ret);
	int (*quota)(void *impl, const struct rl_limits *lim,
	    const char *subject, struct rl_quota *ret);
	/* Adds points to subject (may be NULL) and ip; *ret_blocked tells
	 * whether either is blocked now. */
	int (*threat)(void *impl, const struct rl_limits *lim,
	    const char *subject, const char *ip, int64_t points,
	    const char *reason, bool *ret_blocked);
	/* Up to max blocks into out[]; *ret_total counts them all. */
	int (*blocks)(void *impl, struct rl_block *out, size_t max,
	    size_t *ret_n, size_t *ret_total);
	/* Lifts the block of kind:id ("ip:1.2.3.4", "user:alice") and zeroes
	 * its score; *ret_found is false when it was not blocked. */
	int (*unblock)(void *impl, const char *member, bool *ret_found);
	/* Whether the backend answers (a round trip), for the probe. */
	int (*ping)(void *impl);
	/* Drops idle connections (after an outage), if any. */
	void (*reset)(void *impl);
	void (*free)(void *impl);
};

struct rl_store {
	const struct rl_store_ops *ops;
	void *impl;
};

/* The memory store on clock (NULL: the real UTC clock).  Holds at most
 * max_entries subjects and IPs (0: RL_MEM_ENTRIES_DEFAULT).  Caller frees
 * with rl_store_free(). */
#define RL_MEM_ENTRIES_DEFAULT 200000
struct rl_store *rl_store_mem_new(
    rl_clock_fn clock, void *clock_arg, size_t max_entries);

/* Redis connection parameters, from a redis:// URL. */
struct rl_redis_url {
	char host[256];
	int port;
	char user[128];
	char password[256];
	int db;
};
/* Parses redis://[[user]:password@]host[:port][/db] (host may be [v6]).
 * -EINVAL for anything else. */
int rl_redis_url_parse(const char *url, struct rl_redis_url *ret);

/*
 * The redis store: pool of pool_size connections to url (none opened yet),
 * every command bounded by timeout_ms.  clock may be NULL (Redis TIME);
 * tests pass one to compare with the memory store.  NULL on a bad URL or
 * out of memory.  Caller frees with rl_store_free().
 */
struct rl_store *rl_store_redis_new(const char *url, int pool_size,
    int timeout_ms, rl_clock_fn clock, void *clock_arg);

void rl_store_free(struct rl_store *st);

/* Builds "user:alice" into out; -ERANGE when it does not fit. */
int rl_subject_make(const char *type, const char *id, char *out, size_t len);

#endif
