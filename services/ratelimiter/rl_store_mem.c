/*
 * The memory store: rl_limits.h's rules in process, under one mutex.
 *
 * One hash table of entries: "s:<subject>" (request tats, threat, block,
 * today's cost and reservations, settled ids) and "i:<ip>" (the IP cap's
 * tat, threat, block, the session ids seen).  Everything is bounded: the
 * table holds at most max_entries (entries nobody needs any more are
 * collected a few buckets per insert, and all at once when it is full),
 * an entry at most RL_MEM_RSV_MAX reservations, RL_MEM_DONE_MAX settled
 * ids and RL_CHURN_TRACK_MAX session ids.
 */
#include "rl_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

#define RL_MEM_BUCKETS_MIN 1024
#define RL_MEM_RSV_MAX     100000
#define RL_MEM_DONE_MAX    4096
#define RL_MEM_GC_STEP     4 /* buckets examined per insert */

struct rl_mem_rsv {
	char token[RL_TOKEN_MAX + 1];
	int64_t amount;
	int64_t expires_us;
};

struct rl_mem_done {
	char token[RL_TOKEN_MAX + 1];
	int64_t until_us;
};

struct rl_mem_entry {
	struct rl_mem_entry *next;
	uint64_t hash;
	int64_t tat_min;
	int64_t tat_hour;
	int64_t ts; /* threat, milli-points, as of tt */
	int64_t tt;
	int64_t bu; /* blocked until */
	char br[RL_REASON_MAX + 1];
	/* subjects: money */
	int64_t day;
	int64_t spent;
	int64_t reserved;
	struct rl_mem_rsv *rsv;
	size_t nrsv, caprsv;
	struct rl_mem_done *done;
	size_t ndone, capdone;
	/* IPs: session ids seen in the churn window (64-bit hashes) */
	uint64_t *sess;
	size_t nsess, capsess;
	int64_t churn_until;
	char key[]; /* "s:user:alice", "i:10.0.0.1" */
};

struct rl_mem {
	pthread_mutex_t mtx;
	rl_clock_fn clock;
	void *clock_arg;
	struct rl_mem_entry **buckets;
	size_t nbuckets;
	size_t count;
	size_t max;
	size_t gc_cursor;
};

static int64_t
rl_mem_real_clock(void *arg)
{
	(void)arg;
	return clock_real_us();
}

static uint64_t
rl_mem_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static void
rl_mem_entry_free(struct rl_mem_entry *e)
{
	free(e->rsv);
	free(e->done);
	free(e->sess);
	free(e);
}

/* Whether e holds nothing that still matters at now. */
static bool
rl_mem_entry_dead(const struct rl_mem_entry *e, int64_t now)
{
	return e->tat_min <= now && e->tat_hour <= now &&
	       rl_threat_decay(e->ts, e->tt, now) == 0 && e->bu <= now &&
	       e->nrsv == 0 && (e->spent == 0 || e->day != now / RL_DAY_US) &&
	       (e->ndone == 0 || e->done[e->ndone - 1].until_us <= now) &&
	       (e->nsess == 0 || e->churn_until <= now);
}

/* Frees the dead entries of bucket b. */
static void
rl_mem_gc_bucket(struct rl_mem *m, size_t b, int64_t now)
{
	struct rl_mem_entry **pp = &m->buckets[b], *e;

	while ((e = *pp) != NULL) {
		if (rl_mem_entry_dead(e, now)) {
			*pp = e->next;
			rl_mem_entry_free(e);
			m->count--;
		} else {
			pp = &e->next;
		}
	}
}

static void
rl_mem_grow(struct rl_mem *m)
{
	struct rl_mem_entry **nb, *e, *next;
	size_t n = m->nbuckets * 2, i;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		return; /* longer chains, still correct */
	for (i = 0; i < m->nbuckets; i++) {
		for (e = m->buckets[i]; e != NULL; e = next) {
			next = e->next;
			e->next = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = nb;
	m->nbuckets = n;
	m->gc_cursor = 0;
}

static struct rl_mem_entry *
rl_mem_find(struct rl_mem *m, const char *key)
{
	uint64_t h = rl_mem_hash(key);
	struct rl_mem_entry *e;

	for (e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/*
 * Collects dead entries before an operation that may create up to two:
 * a few buckets each time, the whole table when it is (nearly) full.
 * Never during one: an entry in use must not go.
 */
static void
rl_mem_gc(struct rl_mem *m, int64_t now)
{
	size_t i, b;

	for (i = 0; i < RL_MEM_GC_STEP; i++) {
		rl_mem_gc_bucket(m, m->gc_cursor, now);
		m->gc_cursor = (m->gc_cursor + 1) & (m->nbuckets - 1);
	}
	if (m->count + 2 > m->max)
		for (b = 0; b < m->nbuckets; b++)
			rl_mem_gc_bucket(m, b, now);
}

/* The entry for key, created when missing; NULL when the table is full or
 * out of memory. */
static struct rl_mem_entry *
rl_mem_get(struct rl_mem *m, const char *key, int64_t now)
{
	struct rl_mem_entry *e;
	size_t klen, b;

	if ((e = rl_mem_find(m, key)) != NULL)
		return e;
	if (m->count >= m->max)
		return NULL;
	if (m->count >= m->nbuckets)
		rl_mem_grow(m);
	klen = strlen(key);
	if ((e = calloc(1, sizeof(*e) + klen + 1)) == NULL)
		return NULL;
	memcpy(e->key, key, klen + 1);
	e->hash = rl_mem_hash(key);
	e->tt = now;
	e->day = now / RL_DAY_US;
	b = e->hash & (m->nbuckets - 1);
	e->next = m->buckets[b];
	m->buckets[b] = e;
	m->count++;
	return e;
}

/* "s:" + subject or "i:" + ip into out. */
static int
rl_mem_key(char *out, size_t len, char kind, const char *name)
{
	int n = snprintf(out, len, "%c:%s", kind, name);

	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

/* Decays the score to now, adds points, and blocks past the threshold. */
static void
rl_mem_threat_add(struct rl_mem_entry *e, int64_t points, const char *reason,
    const struct rl_limits *lim, int64_t now)
{
	e->ts = rl_threat_decay(e->ts, e->tt, now) + points * 1000;
	e->tt = now;
	if (points > 0 && e->bu <= now && e->ts >= RL_THREAT_BLOCK * 1000) {
		e->bu = now + lim->block_s * RL_US_PER_S;
		snprintf(e->br, sizeof(e->br), "%s", reason);
	}
}

/* Records session id sid seen from IP entry e; returns the points this
 * adds to the IP. */
static int64_t
rl_mem_churn(struct rl_mem_entry *e, const char *sid, int64_t now)
{
	uint64_t h = rl_mem_hash(sid), *ns;
	size_t i, n;

	if (e->churn_until <= now) {
		e->nsess = 0;
		e->churn_until = now + RL_CHURN_WINDOW_S * RL_US_PER_S;
	}
	for (i = 0; i < e->nsess; i++)
		if (e->sess[i] == h)
			return 0;
	n = e->nsess;
	if (n < RL_CHURN_TRACK_MAX) {
		if (n == e->capsess) {
			size_t cap = e->capsess ? e->capsess * 2 : 8;

			if (cap > RL_CHURN_TRACK_MAX)
				cap = RL_CHURN_TRACK_MAX;
			ns = realloc(e->sess, cap * sizeof(*ns));
			if (ns != NULL) {
				e->sess = ns;
				e->capsess = cap;
			}
		}
		if (n < e->capsess)
			e->sess[e->nsess++] = h;
	}
	return n + 1 > RL_CHURN_FREE ? RL_CHURN_POINTS : 0;
}

/* Rolls the day over and releases the reservations expired at now. */
static void
rl_mem_cost_refresh(struct rl_mem_entry *e, int64_t now)
{
	int64_t day = now / RL_DAY_US;
	size_t i = 0;

	if (e->day != day) {
		e->day = day;
		e->spent = 0;
	}
	while (i < e->nrsv) {
		if (e->rsv[i].expires_us <= now) {
			e->reserved -= e->rsv[i].amount;
			e->rsv[i] = e->rsv[--e->nrsv];
		} else {
			i++;
		}
	}
	if (e->reserved < 0)
		e->reserved = 0;
}

/* One candidate limit of a check. */
struct rl_mem_cand {
	enum rl_code code;
	bool allow;
	int64_t limit;
	int64_t remaining;
	int64_t reset_us;
	int64_t retry_us;
};

static void
rl_mem_cand_gcra(struct rl_mem_cand *c, enum rl_code code, int64_t tat,
    int64_t limit, int64_t period, int64_t now, int64_t *ret_tat)
{
	struct rl_gcra g;

	rl_gcra_step(tat, limit, period, now, &g);
	c->code = code;
	c->allow = g.allow;
	c->limit = limit;
	c->remaining = g.remaining;
	c->reset_us = g.reset_us;
	c->retry_us = g.retry_us;
	*ret_tat = g.tat_us;
}

static void
rl_mem_verdict(const struct rl_mem_cand *c, struct rl_verdict *ret)
{
	ret->code = c->allow ? RL_OK : c->code;
	ret->limit = c->limit;
	ret->remaining = c->remaining;
	ret->reset_s = rl_ceil_s(c->reset_us);
	ret->retry_after_s = c->allow ? 0 : rl_ceil_s(c->retry_us);
	if (!c->allow && ret->retry_after_s < 1)
		ret->retry_after_s = 1;
}

static int
rl_mem_check(void *impl, const struct rl_limits *lim, const struct rl_check *in,
    struct rl_verdict *ret)
{
	struct rl_mem *m = impl;
	char skey[RL_SUBJECT_MAX + 3], ikey[PROTO_IP_MAX + 3];
	struct rl_mem_entry *s, *ip;
	struct rl_mem_cand c[4], *deny = NULL, *tight;
	int64_t now, ip_points, pct_s, pct_i, tm, th, ti, until;
	const char *ip_reason = "request";
	struct rl_verdict v;
	bool room;
	int i;

	if (rl_mem_key(skey, sizeof(skey), 's', in->subject) != 0 ||
	    rl_mem_key(ikey, sizeof(ikey), 'i', in->ip) != 0)
		return -ERANGE;
	memset(&v, 0, sizeof(v));
	pthread_mutex_lock(&m->mtx);
	now = m->clock(m->clock_arg);
	rl_mem_gc(m, now);
	s = rl_mem_get(m, skey, now);
	ip = s != NULL ? rl_mem_get(m, ikey, now) : NULL;
	if (s == NULL || ip == NULL) {
		pthread_mutex_unlock(&m->mtx);
		log_warn(NULL, "memory limits table full",
		    LF_I("entries", m->count));
		return -ENOSPC;
	}
	/* Signals first: recorded whatever the verdict. */
	ip_points = in->threat;
	if (in->session) {
		int64_t churn =
		    rl_mem_churn(ip, strchr(in->subject, ':') + 1, now);

		if (churn > 0) {
			ip_points += churn;
			ip_reason = "session_churn";
		}
	}
	rl_mem_threat_add(s, in->threat, "request", lim, now);
	rl_mem_threat_add(ip, ip_points, ip_reason, lim, now);
	if (s->bu > now || ip->bu > now) {
		until = s->bu > ip->bu ? s->bu : ip->bu;
		v.code = RL_BLOCKED;
		v.reset_s = v.retry_after_s = rl_ceil_s(until - now);
		goto out;
	}

	pct_s = rl_threat_pct(s->ts);
	pct_i = rl_threat_pct(ip->ts);
	rl_mem_cand_gcra(&c[0], RL_MINUTE, s->tat_min,
	    rl_scaled(lim->per_minute, pct_s), RL_MINUTE_US, now, &tm);
	rl_mem_cand_gcra(&c[1], RL_HOUR, s->tat_hour,
	    rl_scaled(lim->per_hour, pct_s), RL_HOUR_US, now, &th);
	rl_mem_cand_gcra(&c[2], RL_IP, ip->tat_min,
	    rl_scaled(lim->per_ip_minute, pct_i), RL_MINUTE_US, now, &ti);

	rl_mem_cost_refresh(s, now);
	room = s->spent + s->reserved + in->reserve_micro_usd <=
	       lim->cost_micro_usd;
	if (in->reserve_micro_usd > 0 && s->nrsv >= RL_MEM_RSV_MAX)
		room = false;
	c[3].code = RL_COST;
	c[3].allow = room;
	c[3].limit = lim->cost_micro_usd;
	c[3].remaining = lim->cost_micro_usd - s->spent - s->reserved;
	if (c[3].remaining < 0)
		c[3].remaining = 0;
	c[3].reset_us = rl_until_midnight_us(now);
	if (room)
		c[3].retry_us = 0;
	else if (s->spent + in->reserve_micro_usd > lim->cost_micro_usd)
		c[3].retry_us = c[3].reset_us;
	else
		c[3].retry_us = RL_COST_RETRY_S * RL_US_PER_S < c[3].reset_us
				    ? RL_COST_RETRY_S * RL_US_PER_S
				    : c[3].reset_us;

	/* The refusal to report: the one that lasts longest. */
	for (i = 0; i < 4; i++)
		if (!c[i].allow &&
		    (deny == NULL || c[i].retry_us > deny->retry_us))
			deny = &c[i];
	if (deny != NULL) {
		rl_mem_verdict(deny, &v);
		goto out;
	}

	/* Admitted: apply everything. */
	s->tat_min = tm;
	s->tat_hour = th;
	ip->tat_min = ti;
	if (in->reserve_micro_usd > 0) {
		if (s->nrsv == s->caprsv) {
			size_t cap = s->caprsv ? s->caprsv * 2 : 4;
			struct rl_mem_rsv *nr =
			    realloc(s->rsv, cap * sizeof(*nr));

			if (nr == NULL) {
				pthread_mutex_unlock(&m->mtx);
				return -ENOMEM;
			}
			s->rsv = nr;
			s->caprsv = cap;
		}
		snprintf(s->rsv[s->nrsv].token, sizeof(s->rsv[0].token), "%s",
		    in->token);
		s->rsv[s->nrsv].amount = in->reserve_micro_usd;
		s->rsv[s->nrsv].expires_us =
		    now + lim->reserve_ttl_s * RL_US_PER_S;
		s->nrsv++;
		s->reserved += in->reserve_micro_usd;
	}
	tight = &c[0];
	for (i = 1; i < 3; i++)
		if (c[i].remaining < tight->remaining)
			tight = &c[i];
	rl_mem_verdict(tight, &v);
	v.reserved = in->reserve_micro_usd > 0;
out:
	pthread_mutex_unlock(&m->mtx);
	*ret = v;
	return 0;
}

static int
rl_mem_settle(void *impl, const char *subject, const char *token,
    int64_t actual, enum rl_settle_state *ret)
{
	struct rl_mem *m = impl;
	char skey[RL_SUBJECT_MAX + 3];
	enum rl_settle_state st = RL_UNKNOWN;
	struct rl_mem_entry *s;
	int64_t now;
	size_t i;

	if (rl_mem_key(skey, sizeof(skey), 's', subject) != 0)
		return -ERANGE;
	pthread_mutex_lock(&m->mtx);
	now = m->clock(m->clock_arg);
	rl_mem_gc(m, now);
	if ((s = rl_mem_get(m, skey, now)) == NULL) {
		pthread_mutex_unlock(&m->mtx);
		return -ENOSPC;
	}
	/* Settled ids are kept in order of their until_us: prune the old. */
	for (i = 0; i < s->ndone && s->done[i].until_us <= now; i++)
		;
	if (i > 0) {
		memmove(
		    s->done, s->done + i, (s->ndone - i) * sizeof(*s->done));
		s->ndone -= i;
	}
	for (i = 0; i < s->ndone; i++) {
		if (strcmp(s->done[i].token, token) == 0) {
			pthread_mutex_unlock(&m->mtx);
			*ret = RL_DUPLICATE;
			return 0;
		}
	}
	if (s->ndone == RL_MEM_DONE_MAX) {
		memmove(
		    s->done, s->done + 1, (s->ndone - 1) * sizeof(*s->done));
		s->ndone--;
	}
	if (s->ndone == s->capdone) {
		size_t cap = s->capdone ? s->capdone * 2 : 4;
		struct rl_mem_done *nd = realloc(s->done, cap * sizeof(*nd));

		if (nd == NULL) {
			pthread_mutex_unlock(&m->mtx);
			return -ENOMEM;
		}
		s->done = nd;
		s->capdone = cap;
	}
	snprintf(
	    s->done[s->ndone].token, sizeof(s->done[0].token), "%s", token);
	s->done[s->ndone].until_us = now + RL_SETTLE_DEDUP_S * RL_US_PER_S;
	s->ndone++;

	rl_mem_cost_refresh(s, now);
	for (i = 0; i < s->nrsv; i++) {
		if (strcmp(s->rsv[i].token, token) == 0) {
			s->reserved -= s->rsv[i].amount;
			if (s->reserved < 0)
				s->reserved = 0;
			s->rsv[i] = s->rsv[--s->nrsv];
			st = RL_SETTLED;
			break;
		}
	}
	s->spent += actual;
	pthread_mutex_unlock(&m->mtx);
	*ret = st;
	return 0;
}

static int
rl_mem_quota(void *impl, const struct rl_limits *lim, const char *subject,
    struct rl_quota *ret)
{
	struct rl_mem *m = impl;
	char skey[RL_SUBJECT_MAX + 3];
	struct rl_mem_entry *s;
	struct rl_quota q;
	int64_t now, pct;

	if (rl_mem_key(skey, sizeof(skey), 's', subject) != 0)
		return -ERANGE;
	memset(&q, 0, sizeof(q));
	pthread_mutex_lock(&m->mtx);
	now = m->clock(m->clock_arg);
	s = rl_mem_find(m, skey);
	pct =
	    s != NULL ? rl_threat_pct(rl_threat_decay(s->ts, s->tt, now)) : 100;
	q.minute_limit = rl_scaled(lim->per_minute, pct);
	q.hour_limit = rl_scaled(lim->per_hour, pct);
	q.cost_limit_micro_usd = lim->cost_micro_usd;
	if (s != NULL) {
		q.minute_used =
		    q.minute_limit - rl_gcra_remaining(s->tat_min,
					 q.minute_limit, RL_MINUTE_US, now);
		q.hour_used = q.hour_limit - rl_gcra_remaining(s->tat_hour,
						 q.hour_limit, RL_HOUR_US, now);
		rl_mem_cost_refresh(s, now);
		q.cost_used_micro_usd = s->spent;
		q.cost_reserved_micro_usd = s->reserved;
		q.blocked_s = s->bu > now ? rl_ceil_s(s->bu - now) : 0;
	}
	pthread_mutex_unlock(&m->mtx);
	*ret = q;
	return 0;
}

static int
rl_mem_threat(void *impl, const struct rl_limits *lim, const char *subject,
    const char *ip, int64_t points, const char *reason, bool *ret_blocked)
{
	struct rl_mem *m = impl;
	char skey[RL_SUBJECT_MAX + 3], ikey[PROTO_IP_MAX + 3];
	struct rl_mem_entry *s = NULL, *e;
	bool blocked;
	int64_t now;

	if ((subject != NULL &&
		rl_mem_key(skey, sizeof(skey), 's', subject) != 0) ||
	    rl_mem_key(ikey, sizeof(ikey), 'i', ip) != 0)
		return -ERANGE;
	pthread_mutex_lock(&m->mtx);
	now = m->clock(m->clock_arg);
	rl_mem_gc(m, now);
	if (subject != NULL && (s = rl_mem_get(m, skey, now)) == NULL) {
		pthread_mutex_unlock(&m->mtx);
		return -ENOSPC;
	}
	if ((e = rl_mem_get(m, ikey, now)) == NULL) {
		pthread_mutex_unlock(&m->mtx);
		return -ENOSPC;
	}
	if (s != NULL)
		rl_mem_threat_add(s, points, reason, lim, now);
	rl_mem_threat_add(e, points, reason, lim, now);
	blocked = e->bu > now || (s != NULL && s->bu > now);
	pthread_mutex_unlock(&m->mtx);
	*ret_blocked = blocked;
	return 0;
}

/* Fills b from entry e ("s:user:alice" -> user, alice). */
static void
rl_mem_block_fill(const struct rl_mem_entry *e, int64_t now, struct rl_block *b)
{
	const char *name = e->key + 2, *colon;

	memset(b, 0, sizeof(*b));
	if (e->key[0] == 'i') {
		snprintf(b->kind, sizeof(b->kind), "ip");
		snprintf(b->id, sizeof(b->id), "%s", name);
	} else {
		colon = strchr(name, ':');
		snprintf(b->kind, sizeof(b->kind), "%.*s",
		    colon != NULL ? (int)(colon - name) : 0, name);
		snprintf(b->id, sizeof(b->id), "%s",
		    colon != NULL ? colon + 1 : name);
	}
	b->until_us = e->bu;
	b->retry_after_s = rl_ceil_s(e->bu - now);
	snprintf(b->reason, sizeof(b->reason), "%s", e->br);
}

/* The block list's member name of b: "user:alice", "ip:10.0.0.1". */
static void
rl_block_member(const struct rl_block *b, char *out, size_t len)
{
	snprintf(out, len, "%s:%s", b->kind, b->id);
}

/* Redis orders a sorted set by score, then by member bytes: so do we. */
static int
rl_block_cmp(const void *pa, const void *pb)
{
	const struct rl_block *a = pa, *b = pb;
	char ma[PROTO_SUBJECT_MAX + 16], mb[PROTO_SUBJECT_MAX + 16];

	if (a->until_us != b->until_us)
		return a->until_us < b->until_us ? -1 : 1;
	rl_block_member(a, ma, sizeof(ma));
	rl_block_member(b, mb, sizeof(mb));
	return strcmp(ma, mb);
}

static int
rl_mem_blocks(void *impl, struct rl_block *out, size_t max, size_t *ret_n,
    size_t *ret_total)
{
	struct rl_mem *m = impl;
	struct rl_block *all = NULL, *na;
	size_t n = 0, cap = 0, b;
	struct rl_mem_entry *e;
	int64_t now;

	pthread_mutex_lock(&m->mtx);
	now = m->clock(m->clock_arg);
	for (b = 0; b < m->nbuckets; b++) {
		for (e = m->buckets[b]; e != NULL; e = e->next) {
			if (e->bu <= now)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				if ((na = realloc(all, cap * sizeof(*na))) ==
				    NULL) {
					pthread_mutex_unlock(&m->mtx);
					free(all);
					return -ENOMEM;
				}
				all = na;
			}
			rl_mem_block_fill(e, now, &all[n++]);
		}
	}
	pthread_mutex_unlock(&m->mtx);
	if (n > 0)
		qsort(all, n, sizeof(*all), rl_block_cmp);
	*ret_total = n;
	*ret_n = n < max ? n : max;
	if (*ret_n > 0)
		memcpy(out, all, *ret_n * sizeof(*out));
	free(all);
	return 0;
}

static int
rl_mem_unblock(void *impl, const char *member, bool *ret_found)
{
	struct rl_mem *m = impl;
	char key[RL_SUBJECT_MAX + 3];
	struct rl_mem_entry *e;
	bool found = false;
	int rv;

	if (strncmp(member, "ip:", 3) == 0)
		rv = rl_mem_key(key, sizeof(key), 'i', member + 3);
	else
		rv = rl_mem_key(key, sizeof(key), 's', member);
	if (rv != 0)
		return rv;
	pthread_mutex_lock(&m->mtx);
	if ((e = rl_mem_find(m, key)) != NULL) {
		found = e->bu > m->clock(m->clock_arg);
		e->bu = 0;
		e->ts = 0;
		e->br[0] = '\0';
	}
	pthread_mutex_unlock(&m->mtx);
	*ret_found = found;
	return 0;
}

static int
rl_mem_ping(void *impl)
{
	(void)impl;
	return 0;
}

static void
rl_mem_reset(void *impl)
{
	(void)impl;
}

static void
rl_mem_free(void *impl)
{
	struct rl_mem *m = impl;
	struct rl_mem_entry *e, *next;
	size_t b;

	if (m == NULL)
		return;
	for (b = 0; b < m->nbuckets; b++) {
		for (e = m->buckets[b]; e != NULL; e = next) {
			next = e->next;
			rl_mem_entry_free(e);
		}
	}
	free(m->buckets);
	pthread_mutex_destroy(&m->mtx);
	free(m);
}

static const struct rl_store_ops rl_mem_ops = {
    .name = "memory",
    .check = rl_mem_check,
    .settle = rl_mem_settle,
    .quota = rl_mem_quota,
    .threat = rl_mem_threat,
    .blocks = rl_mem_blocks,
    .unblock = rl_mem_unblock,
    .ping = rl_mem_ping,
    .reset = rl_mem_reset,
    .free = rl_mem_free,
};

struct rl_store *
rl_store_mem_new(rl_clock_fn clock, void *clock_arg, size_t max_entries)
{
	struct rl_store *st;
	struct rl_mem *m;

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		goto err_st;
	m->nbuckets = RL_MEM_BUCKETS_MIN;
	if ((m->buckets = calloc(m->nbuckets, sizeof(*m->buckets))) == NULL)
		goto err_m;
	if (pthread_mutex_init(&m->mtx, NULL) != 0)
		goto err_buckets;
	m->clock = clock != NULL ? clock : rl_mem_real_clock;
	m->clock_arg = clock_arg;
	m->max = max_entries > 0 ? max_entries : RL_MEM_ENTRIES_DEFAULT;
	st->ops = &rl_mem_ops;
	st->impl = m;
	return st;
err_buckets:
	free(m->buckets);
err_m:
	free(m);
err_st:
	free(st);
	return NULL;
}

void
rl_store_free(struct rl_store *st)
{
	if (st == NULL)
		return;
	st->ops->free(st->impl);
	free(st);
}

int
rl_subject_make(const char *type, const char *id, char *out, size_t len)
{
	int n = snprintf(out, len, "%s:%s", type, id);

	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}
