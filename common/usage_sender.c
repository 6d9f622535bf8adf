/*
 * usage_sender: journal + pub socket + sync thread; see usage_sender.h.
 */
#include "usage_sender.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/req.h>

#include "buf.h"
#include "ids.h"
#include "journal.h"
#include "log.h"
#include "nngx.h"

#define US_RECONN_MIN_MS 50
#define US_RECONN_MAX_MS 1000
#define US_WORKER_ID_MAX 32
/* Rounds of re-sending per wake-up, so a long backlog yields to stop. */
#define US_BATCHES_PER_ROUND 64

struct usage_sender {
	char stream[PROTO_NAME_MAX + 1];
	struct journal *j;
	nng_socket pub, req;
	bool pub_open, req_open;
	int sync_ms, batch_max, call_ms;

	pthread_mutex_t emit_mu; /* seq order = journal order */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping, kicked, reconnected;
	bool thread_started;
	pthread_t thread;
	bool warned_ahead;

	atomic_bool ready;
	atomic_int_fast64_t committed;
	atomic_uint_fast64_t emitted, journal_errors, published, resent, syncs,
	    sync_failures;
};

/* ---- emitting ---- */

/* Hands enc (one encoded usage_event) to the pub socket. */
static void
us_publish(struct usage_sender *s, const char *enc, size_t len)
{
	char *wrapped = NULL;
	size_t wlen;
	nng_msg *m;
	int rv;

	if ((rv = proto_topic_wrap(
		 PROTO_TOPIC_USAGE, enc, len, &wrapped, &wlen)) != 0 ||
	    (rv = nngx_msg_new(wrapped, wlen, &m)) != 0) {
		free(wrapped);
		return;
	}
	free(wrapped);
	if ((rv = nng_sendmsg(s->pub, m, NNG_FLAG_NONBLOCK)) != 0) {
		nng_msg_free(m);
		return; /* the journal has it */
	}
	atomic_fetch_add(&s->published, 1);
}

int
usage_sender_emit(struct usage_sender *s, const struct msg_usage_event *ev)
{
	struct msg_usage_event u = *ev;
	char *enc = NULL;
	size_t len = 0;
	int64_t seq = 0;
	int rv;

	if (u.event_id[0] == '\0')
		id_new("evt_", u.event_id, sizeof(u.event_id));
	memcpy(u.worker_id, s->stream, sizeof(u.worker_id));

	pthread_mutex_lock(&s->emit_mu);
	u.seq = journal_last_seq(s->j) + 1;
	if ((rv = msg_usage_event_encode(&u, &enc, &len)) == 0)
		rv = journal_write(s->j, enc, len, &seq);
	pthread_mutex_unlock(&s->emit_mu);
	if (rv == -EINVAL && enc == NULL) {
		log_error(u.request_id, "usage event does not encode",
		    LF_S("event_id", u.event_id));
		return -EINVAL;
	}
	if (rv == 0)
		rv = journal_sync(s->j, seq);
	if (rv == 0) {
		atomic_fetch_add(&s->emitted, 1);
		us_publish(s, enc, len);
		free(enc);
		return 0;
	}

	/* Not durable: fail closed for the next requests, and still try to
	 * deliver this one outside catch-up (seq 0). */
	atomic_store(&s->ready, false);
	atomic_fetch_add(&s->journal_errors, 1);
	log_error(u.request_id, "usage event not journaled",
	    LF_S("event_id", u.event_id), LF_S("error", strerror(-rv)));
	free(enc);
	enc = NULL;
	u.seq = 0;
	if (msg_usage_event_encode(&u, &enc, &len) == 0)
		us_publish(s, enc, len);
	free(enc);
	return rv == -ENOSPC ? -ENOSPC : -EIO;
}

int
usage_sender_emit_many(
    struct usage_sender *s, const struct msg_usage_event *const evs[], size_t n)
{
	struct msg_usage_event *u;
	char **enc;
	size_t *len, filled = 0;
	int64_t seq, last = 0;
	int rv = 0, bad = 0;

	if (n == 1)
		return usage_sender_emit(s, evs[0]);
	u = calloc(n, sizeof(*u));
	enc = calloc(n, sizeof(*enc));
	len = calloc(n, sizeof(*len));
	if (u == NULL || enc == NULL || len == NULL) {
		/* One at a time needs no more memory than emit itself. */
		free(u);
		free(enc);
		free(len);
		for (size_t i = 0; i < n; i++) {
			int r = usage_sender_emit(s, evs[i]);

			if (rv == 0)
				rv = r;
		}
		return rv;
	}
	/* Fill, encode and write every event; a bad encoding skips one. */
	pthread_mutex_lock(&s->emit_mu);
	for (size_t i = 0; i < n && rv == 0; i++) {
		u[i] = *evs[i];
		filled = i + 1;
		if (u[i].event_id[0] == '\0')
			id_new("evt_", u[i].event_id, sizeof(u[i].event_id));
		memcpy(u[i].worker_id, s->stream, sizeof(u[i].worker_id));
		u[i].seq = journal_last_seq(s->j) + 1;
		if (msg_usage_event_encode(&u[i], &enc[i], &len[i]) != 0) {
			enc[i] = NULL;
			log_error(u[i].request_id,
			    "usage event does not encode",
			    LF_S("event_id", u[i].event_id));
			bad = -EINVAL;
			continue;
		}
		if ((rv = journal_write(s->j, enc[i], len[i], &seq)) == 0)
			last = seq;
	}
	pthread_mutex_unlock(&s->emit_mu);
	if (rv == 0 && last > 0)
		rv = journal_sync(s->j, last);

	for (size_t i = 0; i < n; i++) {
		if (rv == 0) {
			if (enc[i] != NULL) {
				atomic_fetch_add(&s->emitted, 1);
				us_publish(s, enc[i], len[i]);
			}
			continue;
		}
		/* Not durable: as usage_sender_emit, each goes out with seq 0
		 * (outside catch-up) and the sender is no longer ready. */
		if (i < filled && enc[i] == NULL)
			continue; /* does not encode: logged above */
		if (i >= filled) {
			u[i] = *evs[i];
			if (u[i].event_id[0] == '\0')
				id_new("evt_", u[i].event_id,
				    sizeof(u[i].event_id));
			memcpy(
			    u[i].worker_id, s->stream, sizeof(u[i].worker_id));
		}
		atomic_fetch_add(&s->journal_errors, 1);
		log_error(u[i].request_id, "usage event not journaled",
		    LF_S("event_id", u[i].event_id),
		    LF_S("error", strerror(-rv)));
		free(enc[i]);
		enc[i] = NULL;
		u[i].seq = 0;
		if (msg_usage_event_encode(&u[i], &enc[i], &len[i]) == 0)
			us_publish(s, enc[i], len[i]);
	}
	for (size_t i = 0; i < n; i++)
		free(enc[i]);
	if (rv != 0)
		atomic_store(&s->ready, false);
	free(u);
	free(enc);
	free(len);
	if (rv != 0)
		return rv == -ENOSPC ? -ENOSPC : -EIO;
	return bad;
}

bool
usage_sender_ready(struct usage_sender *s)
{
	return atomic_load(&s->ready);
}

const char *
usage_sender_stream(const struct usage_sender *s)
{
	return s->stream;
}

void
usage_sender_stats(struct usage_sender *s, struct usage_sender_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->last_seq = journal_durable_seq(s->j);
	ret->committed_seq = atomic_load(&s->committed);
	ret->first_seq = journal_first_seq(s->j);
	ret->journal_bytes = journal_bytes(s->j);
	ret->emitted = atomic_load(&s->emitted);
	ret->journal_errors = atomic_load(&s->journal_errors);
	ret->published = atomic_load(&s->published);
	ret->resent = atomic_load(&s->resent);
	ret->syncs = atomic_load(&s->syncs);
	ret->sync_failures = atomic_load(&s->sync_failures);
	ret->ready = atomic_load(&s->ready);
}

/* ---- the sync thread ---- */

/* One req/rep exchange; *ret is the accountant's usage_ack. */
static int
us_call(struct usage_sender *s, const char *req, size_t len,
    struct msg_usage_ack *ret)
{
	enum msg_type t = MSG_NONE;
	struct msg_ack bad;
	nng_msg *m = NULL;
	int rv;

	if ((rv = nngx_msg_new(req, len, &m)) != 0)
		return rv;
	if ((rv = nng_sendmsg(s->req, m, 0)) != 0) {
		nng_msg_free(m);
		return nngx_err(rv);
	}
	if ((rv = nng_recvmsg(s->req, &m, 0)) != 0)
		return nngx_err(rv);
	if ((rv = proto_peek_type(nng_msg_body(m), nng_msg_len(m), &t)) == 0) {
		if (t == MSG_USAGE_ACK)
			rv = msg_usage_ack_decode(
			    nng_msg_body(m), nng_msg_len(m), ret);
		else if (t == MSG_ACK && msg_ack_decode(nng_msg_body(m),
					     nng_msg_len(m), &bad) == 0) {
			log_error(NULL, "usage catch-up refused",
			    LF_S("code", bad.code),
			    LF_S("message", bad.message));
			rv = -EPROTO;
		} else {
			rv = -EPROTO;
		}
	}
	nng_msg_free(m);
	if (rv == 0 && strcmp(ret->worker_id, s->stream) != 0)
		rv = -EPROTO;
	return rv;
}

static int
us_sync(struct usage_sender *s, int64_t last, struct msg_usage_ack *ret)
{
	struct msg_usage_sync q;
	char *enc;
	size_t len;
	int rv;

	memset(&q, 0, sizeof(q));
	memcpy(q.worker_id, s->stream, sizeof(q.worker_id));
	q.last_seq = last;
	if ((rv = msg_usage_sync_encode(&q, &enc, &len)) != 0)
		return rv;
	rv = us_call(s, enc, len, ret);
	free(enc);
	return rv;
}

struct us_batch {
	struct buf payload;
	int64_t first, next;
	int64_t count;
};

static int
us_batch_add(void *arg, int64_t seq, const void *data, size_t len)
{
	struct us_batch *b = arg;

	if (b->count == 0)
		b->first = b->next = seq;
	if (seq != b->next)
		return -EBADMSG;
	if (buf_append(&b->payload, data, len) != 0)
		return -EMSGSIZE;
	b->next = seq + 1;
	b->count++;
	return 0;
}

/* Sends events from..upto (at most batch_max) in one usage_batch. */
static int
us_send_batch(struct usage_sender *s, int64_t from, int64_t upto,
    int64_t *ret_count, struct msg_usage_ack *ret)
{
	struct msg_usage_batch q;
	struct us_batch b;
	int64_t n = upto - from + 1;
	char *enc = NULL;
	size_t len;
	int rv;

	if (n > s->batch_max)
		n = s->batch_max;
	memset(&b, 0, sizeof(b));
	buf_init(&b.payload, (size_t)PROTO_USAGE_BATCH_MAX * PROTO_HEADER_MAX);
	rv = journal_read_from(s->j, from, (size_t)n, us_batch_add, &b);
	if (rv == 0 && b.count == 0)
		rv = -ENODATA;
	if (rv != 0)
		goto out;
	if (b.first != from)
		log_error(NULL, "usage journal lacks events to re-send",
		    LF_S("stream", s->stream), LF_I("from_seq", from),
		    LF_I("first_kept", b.first));
	memset(&q, 0, sizeof(q));
	memcpy(q.worker_id, s->stream, sizeof(q.worker_id));
	q.first_seq = b.first;
	q.last_seq = b.next - 1;
	q.count = b.count;
	q.payload = b.payload.data;
	q.payload_len = b.payload.len;
	if ((rv = msg_usage_batch_encode(&q, &enc, &len)) != 0)
		goto out;
	if ((rv = us_call(s, enc, len, ret)) == 0)
		*ret_count = b.count;
out:
	free(enc);
	buf_free(&b.payload);
	return rv;
}

/* Takes the accountant's word for committed (trimming what it covers). */
static void
us_committed(struct usage_sender *s, int64_t c, int64_t last)
{
	/* Events journaled after the sync asked may be committed already:
	 * only more than the journal holds now is wrong. */
	if (c > last)
		last = journal_last_seq(s->j);
	if (c > last) {
		if (!s->warned_ahead)
			log_error(NULL,
			    "accountant reports more committed events than "
			    "this journal holds",
			    LF_S("stream", s->stream), LF_I("committed_seq", c),
			    LF_I("last_seq", last));
		s->warned_ahead = true;
		c = last;
	}
	if (c > atomic_load(&s->committed))
		atomic_store(&s->committed, c);
	(void)journal_trim(s->j, c);
}

/* One round: sync, trim, re-send what the live path has had a whole
 * interval to deliver (everything after a reconnect). */
static void
us_round(struct usage_sender *s, int64_t last, int64_t upto)
{
	struct msg_usage_ack ack;
	int64_t c, count;
	int rv, i;

	if ((rv = us_sync(s, last, &ack)) != 0) {
		atomic_fetch_add(&s->sync_failures, 1);
		log_debug(NULL, "usage sync: no answer",
		    LF_S("error", strerror(-rv)));
		return;
	}
	atomic_fetch_add(&s->syncs, 1);
	c = ack.committed_seq;
	us_committed(s, c, last);
	if (strcmp(ack.code, "ok") != 0)
		return;
	for (i = 0; i < US_BATCHES_PER_ROUND && c < upto; i++) {
		pthread_mutex_lock(&s->mu);
		if (s->stopping) {
			pthread_mutex_unlock(&s->mu);
			return;
		}
		pthread_mutex_unlock(&s->mu);
		count = 0;
		rv = us_send_batch(s, c + 1, upto, &count, &ack);
		if (rv != 0) {
			if (rv != -ENODATA)
				log_warn(NULL, "usage batch not delivered",
				    LF_S("stream", s->stream),
				    LF_I("from_seq", c + 1),
				    LF_S("error", strerror(-rv)));
			return;
		}
		atomic_fetch_add(&s->resent, (uint64_t)count);
		if (ack.committed_seq > c)
			us_committed(s, ack.committed_seq, last);
		if (strcmp(ack.code, "ok") != 0 || ack.committed_seq <= c)
			return;
		c = ack.committed_seq;
	}
}

static void
us_deadline(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *
us_main(void *arg)
{
	struct usage_sender *s = arg;
	struct timespec until;
	int64_t last, prev_last = 0;
	bool reconnect, first = true;
	int rv;

	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		us_deadline(&until, s->sync_ms);
		while (!s->kicked && !s->stopping &&
		       pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
			;
		if (s->stopping)
			break;
		reconnect = s->reconnected;
		s->reconnected = s->kicked = false;
		pthread_mutex_unlock(&s->mu);

		if (!atomic_load(&s->ready)) {
			if ((rv = journal_check(s->j)) == 0) {
				atomic_store(&s->ready, true);
				log_info(NULL, "usage journal writable again",
				    LF_S("stream", s->stream));
			} else {
				log_debug(NULL, "usage journal still unusable",
				    LF_S("error", strerror(-rv)));
			}
		}
		last = journal_durable_seq(s->j);
		us_round(s, last, reconnect || first ? last : prev_last);
		prev_last = last;
		first = false;
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void
us_on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct usage_sender *s = arg;

	(void)p;
	if (ev != NNG_PIPE_EV_ADD_POST)
		return;
	pthread_mutex_lock(&s->mu);
	s->reconnected = s->kicked = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void
usage_sender_kick(struct usage_sender *s)
{
	pthread_mutex_lock(&s->mu);
	s->kicked = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- open / close ---- */

#define US_PUB_SENDBUF 8192

static int
us_sockets(struct usage_sender *s, const struct usage_sender_cfg *c)
{
	int rv;

	if ((rv = nng_pub0_open(&s->pub)) != 0)
		return nngx_err(rv);
	s->pub_open = true;
	/* A burst of events should not overflow the live path (it is lossy
	 * by design, the journal catches up, but losing less is cheaper). */
	nng_socket_set_int(s->pub, NNG_OPT_SENDBUF, US_PUB_SENDBUF);
	if ((rv = nng_req0_open(&s->req)) != 0)
		return nngx_err(rv);
	s->req_open = true;
	nng_socket_set_ms(s->pub, NNG_OPT_RECONNMINT, US_RECONN_MIN_MS);
	nng_socket_set_ms(s->pub, NNG_OPT_RECONNMAXT, US_RECONN_MAX_MS);
	nng_socket_set_ms(s->req, NNG_OPT_RECONNMINT, US_RECONN_MIN_MS);
	nng_socket_set_ms(s->req, NNG_OPT_RECONNMAXT, US_RECONN_MAX_MS);
	nng_socket_set_ms(s->req, NNG_OPT_SENDTIMEO, s->call_ms);
	nng_socket_set_ms(s->req, NNG_OPT_RECVTIMEO, s->call_ms);
	nng_socket_set_ms(
	    s->req, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if ((rv = nng_pipe_notify(
		 s->req, NNG_PIPE_EV_ADD_POST, us_on_pipe, s)) != 0)
		return nngx_err(rv);
	if ((rv = nngx_dial(s->pub, c->usage_url, "usage pub")) != 0 ||
	    (rv = nngx_dial(s->req, c->accountant_url, "usage sync req")) != 0)
		return rv;
	return 0;
}

int
usage_sender_open(const struct usage_sender_cfg *c, struct usage_sender **ret)
{
	struct journal_opts jo = {c->segment_bytes, c->journal_max_bytes};
	struct usage_sender *s;
	pthread_condattr_t ca;
	char dir[PATH_MAX];
	size_t wlen;
	int n, rv;

	if (c->state_dir == NULL || c->worker_id == NULL ||
	    c->usage_url == NULL || c->accountant_url == NULL)
		return -EINVAL;
	wlen = strlen(c->worker_id);
	if (wlen < 1 || wlen > US_WORKER_ID_MAX || strchr(c->worker_id, '/') ||
	    strcmp(c->worker_id, ".") == 0 || strcmp(c->worker_id, "..") == 0)
		return -EINVAL;
	if (c->batch_max < 0 || c->batch_max > PROTO_USAGE_BATCH_MAX ||
	    c->sync_interval_ms < 0 || c->call_timeout_ms < 0)
		return -EINVAL;
	n = snprintf(
	    dir, sizeof(dir), "%s/journal/%s", c->state_dir, c->worker_id);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return -ENAMETOOLONG;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	s->sync_ms = c->sync_interval_ms > 0 ? c->sync_interval_ms
					     : USAGE_SENDER_SYNC_MS_DEFAULT;
	s->batch_max =
	    c->batch_max > 0 ? c->batch_max : USAGE_SENDER_BATCH_DEFAULT;
	s->call_ms = c->call_timeout_ms > 0 ? c->call_timeout_ms
					    : USAGE_SENDER_CALL_MS_DEFAULT;
	pthread_mutex_init(&s->emit_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&s->ready, true);
	atomic_init(&s->committed, 0);
	atomic_init(&s->emitted, 0);
	atomic_init(&s->journal_errors, 0);
	atomic_init(&s->published, 0);
	atomic_init(&s->resent, 0);
	atomic_init(&s->syncs, 0);
	atomic_init(&s->sync_failures, 0);

	if ((rv = journal_open(dir, &jo, &s->j)) != 0) {
		log_error(NULL, "cannot open the usage journal",
		    LF_S("path", dir), LF_S("error", strerror(-rv)));
		goto fail;
	}
	n = snprintf(s->stream, sizeof(s->stream), "%s:%s", c->worker_id,
	    journal_epoch(s->j));
	if (n < 0 || (size_t)n >= sizeof(s->stream)) {
		rv = -ENAMETOOLONG;
		goto fail;
	}
	if ((rv = us_sockets(s, c)) != 0)
		goto fail;
	if ((rv = pthread_create(&s->thread, NULL, us_main, s)) != 0) {
		rv = -rv;
		goto fail;
	}
	s->thread_started = true;
	log_info(NULL, "usage journal open", LF_S("path", dir),
	    LF_S("stream", s->stream),
	    LF_I("first_seq", journal_first_seq(s->j)),
	    LF_I("last_seq", journal_last_seq(s->j)),
	    LF_I("bytes", journal_bytes(s->j)));
	*ret = s;
	return 0;
fail:
	usage_sender_close(s);
	return rv;
}

void
usage_sender_close(struct usage_sender *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	/* Closing req ends a call the thread may be waiting in. */
	if (s->req_open)
		nng_close(s->req);
	if (s->thread_started)
		pthread_join(s->thread, NULL);
	if (s->pub_open)
		nng_close(s->pub);
	journal_close(s->j);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->emit_mu);
	free(s);
}
