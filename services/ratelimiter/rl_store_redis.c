/*
 * The redis store: rl_script.lua over a pool of hiredis (0.14, synchronous)
 * connections.
 *
 * Each operation is one EVALSHA, bounded by the timeout on connect, send
 * and receive (redisConnectWithTimeout + redisSetTimeout).  A connection
 * is used by one thread at a time: taken from the pool, given back.  A
 * connection that failed is closed (a timed-out one may still receive the
 * late reply) and reopened by the next user.  NOSCRIPT (a restarted Redis)
 * loads the script and runs it again; a connection that turns out to be
 * closed by the server (EOF) is reopened and the command sent again once.
 *
 * Keys, all under RL_KEY_PREFIX:
 *   s:<subject>               hash: tm th (tats), ts tt (threat), bu br
 *                             (block), cw
 *   i:<ip>                    hash: the same for an IP (tm: the IP cap)
 *   h:<ip>                    set: session ids seen in the churn window
 *   c:<subject>               hash: day spent reserved, r:<token> amounts
 *   z:<subject>               sorted set: reservation tokens by expiry
 *   d:<subject>:<token>       string: settled marker (dedup)
 *   blocked, blockinfo        sorted set (member -> until) and hash
 *                             (member -> reason) of the blocks
 * Block members are "user:<id>", "session:<id>", "ip:<addr>".
 */
#include "rl_store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "log.h"
#include "rl_script.h"

#define RL_KEY_PREFIX   "aiproxy:rl:"
#define RL_KEY_MAX      (sizeof(RL_KEY_PREFIX) + RL_SUBJECT_MAX + 64)
#define RL_ARG_MAX      32
#define RL_NUM_MAX      24
#define RL_POOL_WAIT_MS 1000

struct rl_redis_conn {
	redisContext *ctx;
	bool busy;
};

struct rl_redis {
	struct rl_redis_url url;
	struct timeval tv;
	char sha[41];
	pthread_mutex_t mtx; /* guards conns[].busy */
	pthread_cond_t cond;
	struct rl_redis_conn *conns;
	int nconns;
	pthread_mutex_t probe_mtx;
	redisContext *probe;
	rl_clock_fn clock;
	void *clock_arg;
	atomic_uint_fast64_t nerr; /* errors logged so far (rate limit) */
};

/* ---- URL ---- */

static int
rl_url_number(const char *s, size_t n, long min, long max, int *ret)
{
	long v = 0;
	size_t i;

	if (n == 0 || n > 9)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	if (v < min || v > max)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

static int
rl_url_copy(char *out, size_t size, const char *s, size_t n)
{
	size_t i;

	if (n >= size)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || s[i] == 0x7f)
			return -EINVAL;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

int
rl_redis_url_parse(const char *url, struct rl_redis_url *ret)
{
	struct rl_redis_url u;
	const char *p, *at, *end, *host, *colon, *slash;
	size_t hlen;

	if (url == NULL || strncmp(url, "redis://", 8) != 0)
		return -EINVAL;
	memset(&u, 0, sizeof(u));
	u.port = 6379;
	p = url + 8;
	slash = strchr(p, '/');
	end = slash != NULL ? slash : p + strlen(p);
	at = memrchr(p, '@', (size_t)(end - p));
	if (at != NULL) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon != NULL) {
			if (rl_url_copy(u.user, sizeof(u.user), p,
				(size_t)(colon - p)) != 0 ||
			    rl_url_copy(u.password, sizeof(u.password),
				colon + 1, (size_t)(at - colon - 1)) != 0)
				return -EINVAL;
		} else if (rl_url_copy(u.user, sizeof(u.user), p,
			       (size_t)(at - p)) != 0) {
			return -EINVAL;
		}
		p = at + 1;
	}
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));

		if (close == NULL)
			return -EINVAL;
		host = p + 1;
		hlen = (size_t)(close - host);
		p = close + 1;
		if (p < end && *p != ':')
			return -EINVAL;
		colon = p < end ? p : NULL;
	} else {
		host = p;
		colon = memchr(p, ':', (size_t)(end - p));
		hlen = (size_t)((colon != NULL ? colon : end) - host);
	}
	if (hlen == 0 || rl_url_copy(u.host, sizeof(u.host), host, hlen) != 0)
		return -EINVAL;
	if (colon != NULL && rl_url_number(colon + 1, (size_t)(end - colon - 1),
				 1, 65535, &u.port) != 0)
		return -EINVAL;
	if (slash != NULL && slash[1] != '\0' &&
	    rl_url_number(slash + 1, strlen(slash + 1), 0, 1000000, &u.db) != 0)
		return -EINVAL;
	*ret = u;
	return 0;
}

/* ---- connections ---- */

/* hiredis's error on c -> negative errno (io_errno: errno right after). */
static int
rl_redis_errno(const redisContext *c, int io_errno)
{
	switch (c->err) {
	case REDIS_ERR_IO:
		if (io_errno == EAGAIN || io_errno == EWOULDBLOCK ||
		    io_errno == ETIMEDOUT || io_errno == EINPROGRESS)
			return -ETIMEDOUT;
		if (io_errno == ECONNREFUSED)
			return -ECONNREFUSED;
		if (io_errno == EPIPE || io_errno == ECONNRESET)
			return -ECONNRESET;
		return -EIO;
	case REDIS_ERR_EOF:
		return -ECONNRESET;
	case REDIS_ERR_OOM:
		return -ENOMEM;
	case REDIS_ERR_PROTOCOL:
		return -EPROTO;
	default:
		return -EIO;
	}
}

/* Logs a Redis failure: the first few, then one in a thousand. */
static void
rl_redis_log(struct rl_redis *r, const char *what, int err, const char *detail)
{
	uint64_t n = atomic_fetch_add(&r->nerr, 1) + 1;

	if (n <= 5 || n % 1000 == 0)
		log_warn(NULL, "redis failed", LF_S("during", what),
		    LF_S("error", strerror(-err)),
		    LF_S("detail", detail != NULL ? detail : ""),
		    LF_I("failures", n));
}

/* Sends argv on c and checks for an error reply.  Caller frees *ret. */
static int
rl_redis_cmd(struct rl_redis *r, redisContext *c, int argc, const char **argv,
    const size_t *argvlen, redisReply **ret)
{
	redisReply *rep = NULL;
	int e;

	errno = 0;
	rep = redisCommandArgv(c, argc, argv, argvlen);
	e = errno;
	if (rep == NULL) {
		int rv = rl_redis_errno(c, e);

		rl_redis_log(r, argv[0], rv, c->errstr);
		return rv;
	}
	*ret = rep;
	return 0;
}

static int
rl_redis_simple(struct rl_redis *r, redisContext *c, int argc,
    const char **argv, const char *want)
{
	redisReply *rep = NULL;
	int rv;

	if ((rv = rl_redis_cmd(r, c, argc, argv, NULL, &rep)) != 0)
		return rv;
	if (rep->type == REDIS_REPLY_ERROR ||
	    (want != NULL && (rep->type != REDIS_REPLY_STATUS &&
				 rep->type != REDIS_REPLY_STRING)) ||
	    (want != NULL && strcmp(rep->str, want) != 0)) {
		rl_redis_log(r, argv[0], -EPROTO,
		    rep->type == REDIS_REPLY_ERROR ? rep->str
						   : "unexpected reply");
		freeReplyObject(rep);
		return -EPROTO;
	}
	freeReplyObject(rep);
	return 0;
}

static int
rl_redis_load_script(struct rl_redis *r, redisContext *c)
{
	const char *argv[] = {"SCRIPT", "LOAD", rl_script_lua};
	const size_t lens[] = {6, 4, rl_script_lua_len};
	redisReply *rep = NULL;
	int rv;

	if ((rv = rl_redis_cmd(r, c, 3, argv, lens, &rep)) != 0)
		return rv;
	if (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, r->sha) != 0) {
		rl_redis_log(r, "SCRIPT LOAD", -EPROTO,
		    rep->type == REDIS_REPLY_ERROR ? rep->str
						   : "unexpected sha");
		freeReplyObject(rep);
		return -EPROTO;
	}
	freeReplyObject(rep);
	return 0;
}

/* A new connection, authenticated and on its database. */
static int
rl_redis_connect(struct rl_redis *r, redisContext **ret)
{
	redisContext *c;
	char db[16];
	int rv, e;

	errno = 0;
	c = redisConnectWithTimeout(r->url.host, r->url.port, r->tv);
	e = errno;
	if (c == NULL)
		return -ENOMEM;
	if (c->err != 0) {
		rv = rl_redis_errno(c, e);
		rl_redis_log(r, "connect", rv, c->errstr);
		redisFree(c);
		return rv;
	}
	if (redisSetTimeout(c, r->tv) != REDIS_OK) {
		rl_redis_log(r, "connect", -EIO, "cannot set the timeout");
		redisFree(c);
		return -EIO;
	}
	if (r->url.password[0] != '\0') {
		const char *auth2[] = {"AUTH", r->url.password};
		const char *auth3[] = {"AUTH", r->url.user, r->url.password};

		rv = r->url.user[0] != '\0'
			 ? rl_redis_simple(r, c, 3, auth3, "OK")
			 : rl_redis_simple(r, c, 2, auth2, "OK");
		if (rv != 0)
			goto fail;
	}
	if (r->url.db != 0) {
		const char *sel[] = {"SELECT", db};

		snprintf(db, sizeof(db), "%d", r->url.db);
		if ((rv = rl_redis_simple(r, c, 2, sel, "OK")) != 0)
			goto fail;
	}
	*ret = c;
	return 0;
fail:
	redisFree(c);
	return rv;
}

static int
rl_redis_acquire(struct rl_redis *r, struct rl_redis_conn **ret)
{
	struct timespec until;
	int i;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += RL_POOL_WAIT_MS / 1000;
	until.tv_nsec += (long)(RL_POOL_WAIT_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&r->mtx);
	for (;;) {
		for (i = 0; i < r->nconns; i++) {
			if (!r->conns[i].busy) {
				r->conns[i].busy = true;
				pthread_mutex_unlock(&r->mtx);
				*ret = &r->conns[i];
				return 0;
			}
		}
		if (pthread_cond_timedwait(&r->cond, &r->mtx, &until) ==
		    ETIMEDOUT) {
			pthread_mutex_unlock(&r->mtx);
			return -EBUSY;
		}
	}
}

static void
rl_redis_release(struct rl_redis *r, struct rl_redis_conn *c)
{
	pthread_mutex_lock(&r->mtx);
	c->busy = false;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mtx);
}

/*
 * EVALSHA of the script with nkeys keys and nargs arguments (after the
 * operation and the time, which this adds).  Caller frees *ret.
 */
static int
rl_redis_eval(struct rl_redis *r, const char *op, int nkeys,
    const char *const *keys, int nargs, const char *const *args,
    redisReply **ret)
{
	const char *argv[3 + 2 * RL_ARG_MAX];
	char nk[8], now[RL_NUM_MAX];
	struct rl_redis_conn *conn;
	redisReply *rep = NULL;
	bool fresh = false, retried = false;
	int argc = 0, i, rv;

	if (nkeys + nargs + 2 > 2 * RL_ARG_MAX)
		return -E2BIG;
	snprintf(nk, sizeof(nk), "%d", nkeys);
	snprintf(now, sizeof(now), "%lld",
	    r->clock != NULL ? (long long)r->clock(r->clock_arg) : 0LL);
	argv[argc++] = "EVALSHA";
	argv[argc++] = r->sha;
	argv[argc++] = nk;
	for (i = 0; i < nkeys; i++)
		argv[argc++] = keys[i];
	argv[argc++] = op;
	argv[argc++] = now;
	for (i = 0; i < nargs; i++)
		argv[argc++] = args[i];

	if ((rv = rl_redis_acquire(r, &conn)) != 0)
		return rv;
again:
	if (conn->ctx == NULL) {
		if ((rv = rl_redis_connect(r, &conn->ctx)) != 0)
			goto out;
		fresh = true;
	}
	rv = rl_redis_cmd(r, conn->ctx, argc, argv, NULL, &rep);
	if (rv == 0 && rep->type == REDIS_REPLY_ERROR &&
	    strncmp(rep->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(rep);
		rep = NULL;
		if ((rv = rl_redis_load_script(r, conn->ctx)) == 0)
			rv = rl_redis_cmd(r, conn->ctx, argc, argv, NULL, &rep);
	}
	if (rv != 0) {
		redisFree(conn->ctx);
		conn->ctx = NULL;
		/* A connection the server closed while it sat in the pool. */
		if (rv == -ECONNRESET && !fresh && !retried) {
			retried = true;
			goto again;
		}
		goto out;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		rl_redis_log(r, op, -EPROTO, rep->str);
		freeReplyObject(rep);
		rv = -EPROTO;
		goto out;
	}
	*ret = rep;
out:
	rl_redis_release(r, conn);
	return rv;
}

/* ---- replies ---- */

static bool
rl_rep_int(const redisReply *rep, size_t i, int64_t *ret)
{
	if (i >= rep->elements || rep->element[i]->type != REDIS_REPLY_INTEGER)
		return false;
	*ret = rep->element[i]->integer;
	return true;
}

static const char *
rl_rep_str(const redisReply *rep, size_t i)
{
	if (i >= rep->elements ||
	    (rep->element[i]->type != REDIS_REPLY_STRING &&
		rep->element[i]->type != REDIS_REPLY_STATUS))
		return NULL;
	return rep->element[i]->str;
}

/* ---- keys ---- */

static int
rl_key(char *out, size_t len, const char *kind, const char *name,
    const char *suffix)
{
	int n = snprintf(out, len, "%s%s:%s%s%s", RL_KEY_PREFIX, kind, name,
	    suffix != NULL ? ":" : "", suffix != NULL ? suffix : "");

	return n < 0 || (size_t)n >= len ? -ERANGE : 0;
}

static void
rl_num(char *out, int64_t v)
{
	snprintf(out, RL_NUM_MAX, "%lld", (long long)v);
}

/* ---- operations ---- */

static int
rl_redis_check(void *impl, const struct rl_limits *lim,
    const struct rl_check *in, struct rl_verdict *ret)
{
	struct rl_redis *r = impl;
	char ks[RL_KEY_MAX], ki[RL_KEY_MAX], kh[RL_KEY_MAX], kc[RL_KEY_MAX],
	    kz[RL_KEY_MAX], ip_member[PROTO_IP_MAX + 4];
	char n[9][RL_NUM_MAX];
	const char *keys[7], *args[13];
	struct rl_verdict v;
	redisReply *rep = NULL;
	const char *code, *sid;
	int64_t reserved;
	int rv;

	if (rl_key(ks, sizeof(ks), "s", in->subject, NULL) != 0 ||
	    rl_key(ki, sizeof(ki), "i", in->ip, NULL) != 0 ||
	    rl_key(kh, sizeof(kh), "h", in->ip, NULL) != 0 ||
	    rl_key(kc, sizeof(kc), "c", in->subject, NULL) != 0 ||
	    rl_key(kz, sizeof(kz), "z", in->subject, NULL) != 0)
		return -ERANGE;
	snprintf(ip_member, sizeof(ip_member), "ip:%s", in->ip);
	sid = strchr(in->subject, ':');
	sid = sid != NULL ? sid + 1 : in->subject;
	keys[0] = ks;
	keys[1] = ki;
	keys[2] = kh;
	keys[3] = kc;
	keys[4] = kz;
	keys[5] = RL_KEY_PREFIX "blocked";
	keys[6] = RL_KEY_PREFIX "blockinfo";
	rl_num(n[0], lim->per_minute);
	rl_num(n[1], lim->per_hour);
	rl_num(n[2], lim->per_ip_minute);
	rl_num(n[3], lim->cost_micro_usd);
	rl_num(n[4], lim->block_s);
	rl_num(n[5], lim->reserve_ttl_s);
	rl_num(n[6], in->reserve_micro_usd);
	rl_num(n[7], in->threat);
	for (int i = 0; i < 8; i++)
		args[i] = n[i];
	args[8] = in->session ? "1" : "0";
	args[9] = in->token[0] != '\0' ? in->token : "-";
	args[10] = in->subject;
	args[11] = ip_member;
	args[12] = sid;
	if ((rv = rl_redis_eval(r, "check", 7, keys, 13, args, &rep)) != 0)
		return rv;
	memset(&v, 0, sizeof(v));
	code = rep->type == REDIS_REPLY_ARRAY ? rl_rep_str(rep, 0) : NULL;
	if (code == NULL || (v.code = rl_code_from_str(code)) == RL_CODE_MAX ||
	    !rl_rep_int(rep, 1, &v.limit) ||
	    !rl_rep_int(rep, 2, &v.remaining) ||
	    !rl_rep_int(rep, 3, &v.reset_s) ||
	    !rl_rep_int(rep, 4, &v.retry_after_s) ||
	    !rl_rep_int(rep, 5, &reserved)) {
		rl_redis_log(r, "check", -EPROTO, "unexpected reply");
		freeReplyObject(rep);
		return -EPROTO;
	}
	v.reserved = reserved == 1;
	freeReplyObject(rep);
	*ret = v;
	return 0;
}

static int
rl_redis_settle(void *impl, const char *subject, const char *token,
    int64_t actual, enum rl_settle_state *ret)
{
	struct rl_redis *r = impl;
	char kc[RL_KEY_MAX], kz[RL_KEY_MAX], kd[RL_KEY_MAX], a[RL_NUM_MAX];
	const char *keys[3] = {kc, kz, kd}, *args[2] = {token, a};
	redisReply *rep = NULL;
	int rv = 0;

	if (rl_key(kc, sizeof(kc), "c", subject, NULL) != 0 ||
	    rl_key(kz, sizeof(kz), "z", subject, NULL) != 0 ||
	    rl_key(kd, sizeof(kd), "d", subject, token) != 0)
		return -ERANGE;
	rl_num(a, actual);
	if ((rv = rl_redis_eval(r, "settle", 3, keys, 2, args, &rep)) != 0)
		return rv;
	if (rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "settled") == 0)
		*ret = RL_SETTLED;
	else if (rep->type == REDIS_REPLY_STRING &&
		 strcmp(rep->str, "unknown") == 0)
		*ret = RL_UNKNOWN;
	else if (rep->type == REDIS_REPLY_STRING &&
		 strcmp(rep->str, "duplicate") == 0)
		*ret = RL_DUPLICATE;
	else
		rv = -EPROTO;
	if (rv != 0)
		rl_redis_log(r, "settle", rv, "unexpected reply");
	freeReplyObject(rep);
	return rv;
}

static int
rl_redis_quota(void *impl, const struct rl_limits *lim, const char *subject,
    struct rl_quota *ret)
{
	struct rl_redis *r = impl;
	char ks[RL_KEY_MAX], kc[RL_KEY_MAX], kz[RL_KEY_MAX];
	char n[3][RL_NUM_MAX];
	const char *keys[3] = {ks, kc, kz}, *args[3] = {n[0], n[1], n[2]};
	struct rl_quota q;
	redisReply *rep = NULL;
	int rv;

	if (rl_key(ks, sizeof(ks), "s", subject, NULL) != 0 ||
	    rl_key(kc, sizeof(kc), "c", subject, NULL) != 0 ||
	    rl_key(kz, sizeof(kz), "z", subject, NULL) != 0)
		return -ERANGE;
	rl_num(n[0], lim->per_minute);
	rl_num(n[1], lim->per_hour);
	rl_num(n[2], lim->cost_micro_usd);
	if ((rv = rl_redis_eval(r, "quota", 3, keys, 3, args, &rep)) != 0)
		return rv;
	memset(&q, 0, sizeof(q));
	if (rep->type != REDIS_REPLY_ARRAY ||
	    !rl_rep_int(rep, 0, &q.minute_limit) ||
	    !rl_rep_int(rep, 1, &q.minute_used) ||
	    !rl_rep_int(rep, 2, &q.hour_limit) ||
	    !rl_rep_int(rep, 3, &q.hour_used) ||
	    !rl_rep_int(rep, 4, &q.cost_limit_micro_usd) ||
	    !rl_rep_int(rep, 5, &q.cost_used_micro_usd) ||
	    !rl_rep_int(rep, 6, &q.cost_reserved_micro_usd) ||
	    !rl_rep_int(rep, 7, &q.blocked_s)) {
		rl_redis_log(r, "quota", -EPROTO, "unexpected reply");
		freeReplyObject(rep);
		return -EPROTO;
	}
	freeReplyObject(rep);
	*ret = q;
	return 0;
}

static int
rl_redis_threat(void *impl, const struct rl_limits *lim, const char *subject,
    const char *ip, int64_t points, const char *reason, bool *ret_blocked)
{
	struct rl_redis *r = impl;
	char ks[RL_KEY_MAX], ki[RL_KEY_MAX], ip_member[PROTO_IP_MAX + 4];
	char b[RL_NUM_MAX], p[RL_NUM_MAX];
	const char *keys[4], *args[6];
	redisReply *rep = NULL;
	int rv;

	if ((subject != NULL &&
		rl_key(ks, sizeof(ks), "s", subject, NULL) != 0) ||
	    rl_key(ki, sizeof(ki), "i", ip, NULL) != 0)
		return -ERANGE;
	if (subject == NULL)
		snprintf(ks, sizeof(ks), "%s", RL_KEY_PREFIX "none");
	snprintf(ip_member, sizeof(ip_member), "ip:%s", ip);
	rl_num(b, lim->block_s);
	rl_num(p, points);
	keys[0] = ks;
	keys[1] = ki;
	keys[2] = RL_KEY_PREFIX "blocked";
	keys[3] = RL_KEY_PREFIX "blockinfo";
	args[0] = b;
	args[1] = p;
	args[2] = reason;
	args[3] = subject != NULL ? "1" : "0";
	args[4] = subject != NULL ? subject : "-";
	args[5] = ip_member;
	if ((rv = rl_redis_eval(r, "threat", 4, keys, 6, args, &rep)) != 0)
		return rv;
	if (rep->type != REDIS_REPLY_INTEGER) {
		rl_redis_log(r, "threat", -EPROTO, "unexpected reply");
		freeReplyObject(rep);
		return -EPROTO;
	}
	*ret_blocked = rep->integer == 1;
	freeReplyObject(rep);
	return 0;
}

/* "user:alice" -> b->kind "user", b->id "alice"; false if malformed. */
static bool
rl_member_split(const char *member, struct rl_block *b)
{
	const char *colon = strchr(member, ':');
	size_t klen;

	if (colon == NULL)
		return false;
	klen = (size_t)(colon - member);
	if (klen >= sizeof(b->kind) || strlen(colon + 1) >= sizeof(b->id))
		return false;
	memcpy(b->kind, member, klen);
	b->kind[klen] = '\0';
	snprintf(b->id, sizeof(b->id), "%s", colon + 1);
	return true;
}

static int
rl_redis_blocks(void *impl, struct rl_block *out, size_t max, size_t *ret_n,
    size_t *ret_total)
{
	struct rl_redis *r = impl;
	const char *keys[2] = {
	    RL_KEY_PREFIX "blocked", RL_KEY_PREFIX "blockinfo"};
	char m[RL_NUM_MAX];
	const char *args[1] = {m};
	redisReply *rep = NULL;
	int64_t total;
	size_t i, n = 0;
	int rv;

	rl_num(m, (int64_t)max);
	if ((rv = rl_redis_eval(r, "blocks", 2, keys, 1, args, &rep)) != 0)
		return rv;
	if (rep->type != REDIS_REPLY_ARRAY || !rl_rep_int(rep, 0, &total) ||
	    (rep->elements - 1) % 4 != 0 || (rep->elements - 1) / 4 > max)
		goto bad;
	for (i = 1; i + 3 < rep->elements && n < max; i += 4) {
		struct rl_block *b = &out[n];
		const char *member = rl_rep_str(rep, i);
		const char *reason = rl_rep_str(rep, i + 3);

		memset(b, 0, sizeof(*b));
		if (member == NULL || reason == NULL ||
		    !rl_member_split(member, b) ||
		    !rl_rep_int(rep, i + 1, &b->until_us) ||
		    !rl_rep_int(rep, i + 2, &b->retry_after_s))
			goto bad;
		snprintf(b->reason, sizeof(b->reason), "%s", reason);
		n++;
	}
	freeReplyObject(rep);
	*ret_n = n;
	*ret_total = (size_t)total;
	return 0;
bad:
	rl_redis_log(r, "blocks", -EPROTO, "unexpected reply");
	freeReplyObject(rep);
	return -EPROTO;
}

static int
rl_redis_unblock(void *impl, const char *member, bool *ret_found)
{
	struct rl_redis *r = impl;
	char k[RL_KEY_MAX];
	const char *keys[3] = {
	    k, RL_KEY_PREFIX "blocked", RL_KEY_PREFIX "blockinfo"};
	const char *args[1] = {member};
	redisReply *rep = NULL;
	int rv;

	if (strncmp(member, "ip:", 3) == 0)
		rv = rl_key(k, sizeof(k), "i", member + 3, NULL);
	else
		rv = rl_key(k, sizeof(k), "s", member, NULL);
	if (rv != 0)
		return rv;
	if ((rv = rl_redis_eval(r, "unblock", 3, keys, 1, args, &rep)) != 0)
		return rv;
	if (rep->type != REDIS_REPLY_INTEGER) {
		rl_redis_log(r, "unblock", -EPROTO, "unexpected reply");
		freeReplyObject(rep);
		return -EPROTO;
	}
	*ret_found = rep->integer == 1;
	freeReplyObject(rep);
	return 0;
}

/* PING and SCRIPT LOAD on the probe's own connection. */
static int
rl_redis_ping(void *impl)
{
	struct rl_redis *r = impl;
	const char *ping[] = {"PING"};
	int rv;

	pthread_mutex_lock(&r->probe_mtx);
	if (r->probe == NULL && (rv = rl_redis_connect(r, &r->probe)) != 0)
		goto out;
	rv = rl_redis_simple(r, r->probe, 1, ping, "PONG");
	if (rv == 0)
		rv = rl_redis_load_script(r, r->probe);
	if (rv != 0) {
		redisFree(r->probe);
		r->probe = NULL;
	}
out:
	pthread_mutex_unlock(&r->probe_mtx);
	return rv;
}

static void
rl_redis_reset(void *impl)
{
	struct rl_redis *r = impl;
	int i;

	pthread_mutex_lock(&r->mtx);
	for (i = 0; i < r->nconns; i++) {
		if (!r->conns[i].busy && r->conns[i].ctx != NULL) {
			redisFree(r->conns[i].ctx);
			r->conns[i].ctx = NULL;
		}
	}
	pthread_mutex_unlock(&r->mtx);
}

static void
rl_redis_free(void *impl)
{
	struct rl_redis *r = impl;
	int i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nconns; i++)
		if (r->conns[i].ctx != NULL)
			redisFree(r->conns[i].ctx);
	if (r->probe != NULL)
		redisFree(r->probe);
	free(r->conns);
	pthread_mutex_destroy(&r->mtx);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->probe_mtx);
	explicit_bzero(&r->url, sizeof(r->url));
	free(r);
}

static const struct rl_store_ops rl_redis_ops = {
    .name = "redis",
    .check = rl_redis_check,
    .settle = rl_redis_settle,
    .quota = rl_redis_quota,
    .threat = rl_redis_threat,
    .blocks = rl_redis_blocks,
    .unblock = rl_redis_unblock,
    .ping = rl_redis_ping,
    .reset = rl_redis_reset,
    .free = rl_redis_free,
};

/* The script's SHA-1 in hex, as SCRIPT LOAD answers it. */
static int
rl_redis_sha(char out[41])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	if (EVP_Digest(rl_script_lua, rl_script_lua_len, md, &mdlen, EVP_sha1(),
		NULL) != 1 ||
	    mdlen != 20)
		return -EIO;
	for (i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

struct rl_store *
rl_store_redis_new(const char *url, int pool_size, int timeout_ms,
    rl_clock_fn clock, void *clock_arg)
{
	struct rl_store *st;
	struct rl_redis *r;

	if (pool_size < 1 || timeout_ms < 1)
		return NULL;
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		goto err_st;
	if (rl_redis_url_parse(url, &r->url) != 0 || rl_redis_sha(r->sha) != 0)
		goto err_r;
	if ((r->conns = calloc((size_t)pool_size, sizeof(*r->conns))) == NULL)
		goto err_r;
	r->nconns = pool_size;
	r->tv.tv_sec = timeout_ms / 1000;
	r->tv.tv_usec = (timeout_ms % 1000) * 1000;
	r->clock = clock;
	r->clock_arg = clock_arg;
	atomic_init(&r->nerr, 0);
	pthread_mutex_init(&r->mtx, NULL);
	pthread_cond_init(&r->cond, NULL);
	pthread_mutex_init(&r->probe_mtx, NULL);
	st->ops = &rl_redis_ops;
	st->impl = r;
	return st;
err_r:
	free(r);
err_st:
	free(st);
	return NULL;
}
