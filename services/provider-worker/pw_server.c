#include "pw_server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/supplemental/util/platform.h>

#include "clock.h"
#include "ids.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"
#include "pw_call.h"
#include "pw_engine.h"
#include "pw_health.h"
#include "usage_sender.h"

#define PW_DAEMON "provider-worker"
/* After the last reply, before the sockets close: time for what nng
 * still holds (replies, usage events, chunks) to reach the wire. */
#define PW_LINGER_MS 100
/* Threads journaling usage events.  One is enough: it takes everything
 * queued while its last fdatasync ran, so under load each sync covers
 * more events; four threads syncing in turn cost ~4% of req/s at 32
 * connections (bench A/B, three alternating runs). */
#define PW_EMITTERS   1
#define PW_EMIT_BATCH 256 /* events journaled at once */

struct pw_usage_item {
	struct pw_usage_item *next;
	struct msg_usage_event ev;
};

struct pw_server {
	char worker_id[PROTO_NAME_MAX + 1];
	const struct model_table *models;
	bool configured[PW_PROV_MAX];
	char *url[PW_PROV_MAX];
	char *fb_url[PW_PROV_MAX];
	struct pw_engine *engine;

	/* Breakers, and what the gateway learns of them: breaker_state on a
	 * change, worker_stats every stats_ms and at once after a change,
	 * pushed to the report URL (non-blocking; dropped when the gateway
	 * does not take them). */
	struct pw_health health;
	bool health_init;
	bool xmap; /* claude -> openai failover configured */
	nng_socket report;
	bool report_open;
	pthread_t stats_th;
	bool stats_started;
	pthread_mutex_t smu;
	pthread_cond_t scv;
	bool stats_now, stats_stop;
	int stats_ms;
	struct nngx_rep *rep;
	nng_socket sub;
	nng_aio *sub_aio;

	/* Usage events: journaled and sent by the usage sender, off the curl
	 * thread (a journal write waits for a shared fdatasync). */
	struct usage_sender *usage;
	pthread_mutex_t umu;
	pthread_cond_t ucv;
	struct pw_usage_item *uhead, *utail;
	bool ustop;
	int nemitters;
	pthread_t emitters[PW_EMITTERS];

	pthread_mutex_t mu;
	pthread_cond_t cv; /* in_flight went down */
	bool stopping;
	bool stopped;
	uint64_t in_flight;

	atomic_uint_fast64_t calls, ok, errors, aborted, bad_messages;
};

static int64_t
clamp64(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static void
copy_str(char *dst, size_t dstlen, const char *src)
{
	snprintf(dst, dstlen, "%s", src != NULL ? src : "");
}

/* ---- replies ---- */

/* What served the call: the other provider's model after a
 * cross-provider failover, else the request's. */
static bool
served_cross(const struct pw_call *c)
{
	return c->attempts > 0 && c->xmodel != NULL &&
	       PW_TARGET_PROV(c->target) != c->prov;
}

static const char *
served_provider(const struct pw_call *c)
{
	return served_cross(c) ? pw_prov_str(PW_TARGET_PROV(c->target))
			       : c->req.provider;
}

static const char *
served_model(const struct pw_call *c)
{
	return served_cross(c) ? c->xmodel->id : c->req.model;
}

static void
reply_bad(
    struct pw_server *s, struct nngx_rep_ctx *ctx, const char *what, int err)
{
	struct msg_ack a;
	char *enc;
	size_t len;

	atomic_fetch_add(&s->bad_messages, 1);
	log_warn(NULL, "bad message", LF_S("what", what),
	    LF_S("error", strerror(err < 0 ? -err : err)));
	memset(&a, 0, sizeof(a));
	a.ok = false;
	copy_str(a.code, sizeof(a.code), "bad_request");
	snprintf(a.message, sizeof(a.message), "%s: %s", what,
	    strerror(err < 0 ? -err : err));
	if (msg_ack_encode(&a, &enc, &len) != 0) {
		nngx_rep_drop(ctx);
		return;
	}
	nngx_rep_reply(ctx, enc, len);
	free(enc);
}

static void
reply_chat(struct pw_call *c)
{
	const struct model_usage *t = &c->usage.tokens;
	struct msg_chat_resp r;
	char *enc = NULL;
	size_t len;
	int rv;

	memset(&r, 0, sizeof(r));
	memcpy(r.request_id, c->req.request_id, sizeof(r.request_id));
	r.status = clamp64(c->out.status, 100, 599);
	copy_str(r.error_code, sizeof(r.error_code), c->out.code);
	copy_str(r.error_message, sizeof(r.error_message), c->error_message);
	pw_utf8_clip(r.error_message);
	r.upstream_status =
	    c->http_status >= 100 && c->http_status <= 599 ? c->http_status : 0;
	copy_str(r.provider, sizeof(r.provider), served_provider(c));
	copy_str(r.model, sizeof(r.model), served_model(c));
	r.input_tokens = t->input;
	r.output_tokens = t->output;
	r.cache_read_tokens = t->cache_read;
	r.cache_write_tokens =
	    clamp64(t->cache_write_5m + t->cache_write_1h, 0, PROTO_TOKENS_MAX);
	r.cost_micro_usd = clamp64(c->cost_micro_usd, 0, PROTO_MONEY_MAX);
	r.cached = false;
	r.upstream_ms = clamp64(c->upstream_ms, 0, PROTO_MS_MAX);
	r.retry_after_ms = clamp64(c->retry_after_ms_val, 0, PROTO_MS_MAX);
	r.chunks = c->chunks;
	memcpy(r.upstream_request_id, c->upstream_request_id,
	    sizeof(r.upstream_request_id));
	r.attempts = clamp64(c->attempts, 0, PROTO_TRIES_MAX);
	r.fallback = c->fallback;
	r.payload = c->body.len > 0 ? c->body.data : NULL;
	r.payload_len = c->body.len;
	if ((rv = msg_chat_resp_encode(&r, &enc, &len)) != 0) {
		log_error(c->req.request_id, "cannot encode the reply",
		    LF_S("error", strerror(-rv)));
		r.status = 500;
		copy_str(r.error_code, sizeof(r.error_code), "internal_error");
		copy_str(r.error_message, sizeof(r.error_message),
		    "the provider worker failed");
		r.upstream_request_id[0] = '\0';
		r.payload = NULL;
		r.payload_len = 0;
		if (msg_chat_resp_encode(&r, &enc, &len) != 0) {
			nngx_rep_drop(c->ctx);
			return;
		}
	}
	nngx_rep_reply(c->ctx, enc, len);
	free(enc);
}

/* Journals and sends the queued usage events: each thread takes all that
 * is queued (up to PW_EMIT_BATCH) for one write pass and one fdatasync,
 * and the journal's group commit shares a sync among the threads too. */
static void *
emitter_main(void *arg)
{
	struct pw_server *s = arg;
	const struct msg_usage_event *evs[PW_EMIT_BATCH];
	struct pw_usage_item *it, *batch, *last, *next;
	size_t n;

	pthread_mutex_lock(&s->umu);
	for (;;) {
		while (s->uhead == NULL && !s->ustop)
			pthread_cond_wait(&s->ucv, &s->umu);
		if (s->uhead == NULL)
			break; /* stopping, and nothing left */
		/* Everything queued (up to a batch) shares one write pass and
		 * one fdatasync. */
		batch = s->uhead;
		last = NULL;
		n = 0;
		for (it = batch; it != NULL && n < PW_EMIT_BATCH;
		     it = it->next) {
			evs[n++] = &it->ev;
			last = it;
		}
		if ((s->uhead = last->next) == NULL)
			s->utail = NULL;
		last->next = NULL;
		pthread_mutex_unlock(&s->umu);
		/* On failure the sender has logged it and stops being ready:
		 * new billable calls get 503 journal_unavailable. */
		usage_sender_emit_many(s->usage, evs, n);
		for (it = batch; it != NULL; it = next) {
			next = it->next;
			free(it);
		}
		pthread_mutex_lock(&s->umu);
	}
	pthread_mutex_unlock(&s->umu);
	return NULL;
}

static void
publish_usage(struct pw_server *s, struct pw_call *c, int64_t total_ms)
{
	const struct model_usage *t = &c->usage.tokens;
	struct pw_usage_item *it;
	struct msg_usage_event *u;

	if ((it = calloc(1, sizeof(*it))) == NULL) {
		log_error(c->req.request_id, "usage event lost: out of memory");
		return;
	}
	u = &it->ev;
	memcpy(u->request_id, c->req.request_id, sizeof(u->request_id));
	id_new("evt_", u->event_id, sizeof(u->event_id));
	/* worker_id and seq are the usage sender's (journal stream). */
	memcpy(u->worker_id, s->worker_id, sizeof(u->worker_id));
	u->ts_ms = clock_real_ms();
	memcpy(u->subject_type, c->req.subject_type, sizeof(u->subject_type));
	memcpy(u->subject_id, c->req.subject_id, sizeof(u->subject_id));
	memcpy(u->ip, c->req.ip, sizeof(u->ip));
	copy_str(u->provider, sizeof(u->provider), served_provider(c));
	copy_str(u->model, sizeof(u->model), served_model(c));
	u->input_tokens = t->input;
	u->output_tokens = t->output;
	u->cache_read_tokens = t->cache_read;
	u->cache_write_tokens =
	    clamp64(t->cache_write_5m + t->cache_write_1h, 0, PROTO_TOKENS_MAX);
	u->cost_micro_usd = clamp64(c->cost_micro_usd, 0, PROTO_MONEY_MAX);
	u->cached = false;
	copy_str(u->status, sizeof(u->status), c->status_word);
	u->http_status = clamp64(c->out.status, 100, 599);
	u->upstream_ms = clamp64(c->upstream_ms, 0, PROTO_MS_MAX);
	u->total_ms = clamp64(total_ms, 0, PROTO_MS_MAX);
	pthread_mutex_lock(&s->umu);
	if (s->utail != NULL)
		s->utail->next = it;
	else
		s->uhead = it;
	s->utail = it;
	pthread_cond_signal(&s->ucv);
	pthread_mutex_unlock(&s->umu);
}

/* The end of every call, accepted or refused: reply, usage event, log. */
static void
call_done(struct pw_server *s, struct pw_call *c)
{
	const struct model_usage *t = &c->usage.tokens;
	int64_t total_ms = (clock_mono_us() - c->t_recv_us) / 1000;

	if (c->ctx != NULL)
		reply_chat(c);
	publish_usage(s, c, total_ms);
	if (strcmp(c->status_word, "ok") == 0)
		atomic_fetch_add(&s->ok, 1);
	else if (strcmp(c->status_word, "aborted") == 0)
		atomic_fetch_add(&s->aborted, 1);
	else
		atomic_fetch_add(&s->errors, 1);
	log_info(c->req.request_id, "chat call",
	    LF_S("provider", served_provider(c)),
	    LF_S("model", served_model(c)), LF_B("stream", c->req.stream),
	    LF_I("status", c->out.status), LF_S("error_code", c->out.code),
	    LF_I("upstream_status", c->http_status), LF_I("ms", total_ms),
	    LF_I("upstream_ms", c->upstream_ms), LF_I("input_tokens", t->input),
	    LF_I("output_tokens", t->output),
	    LF_I("cache_read_tokens", t->cache_read),
	    LF_I("cache_write_tokens", t->cache_write_5m + t->cache_write_1h),
	    LF_I("cost_micro_usd", c->cost_micro_usd),
	    LF_I("chunks", c->chunks), LF_S("usage", c->status_word),
	    LF_I("attempts", c->attempts), LF_B("fallback", c->fallback),
	    LF_S("upstream_request_id", c->upstream_request_id),
	    LF_S("failure", pw_fail_str(c->fail)), LF_S("detail", c->errbuf));
	pthread_mutex_lock(&s->mu);
	s->in_flight--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void
engine_done(void *arg, struct pw_call *c)
{
	call_done(arg, c);
}

/* ---- requests ---- */

/* Ends a call refused before any upstream work. */
static void
chat_refuse(struct pw_server *s, struct pw_call *c, int status,
    const char *code, const char *message)
{
	c->out = (struct pw_outcome){status, code, message};
	copy_str(c->error_message, sizeof(c->error_message), message);
	c->status_word = "error";
	call_done(s, c);
	pw_call_unref(c);
}

/*
 * The fast-fail path, on this (nng) thread: when every upstream of the
 * provider has its breaker open, the call ends here, without the curl
 * thread.  The curl thread asks the breakers again (a half-open probe is
 * only ever admitted there).  True when c was ended (taken).
 */
static bool
breaker_refuses(struct pw_server *s, struct pw_call *c)
{
	int pt = PW_TARGET(c->prov, PW_SLOT_PRIMARY);
	int ft = PW_TARGET(c->prov, PW_SLOT_FALLBACK);
	int xt = PW_TARGET(1 - (int)c->prov, PW_SLOT_PRIMARY);
	int64_t now = clock_real_ms(), retry = 1000;

	if (!pw_health_refuses(&s->health, pt, now, &retry) ||
	    (pw_health_configured(&s->health, ft) &&
		!pw_health_refuses(&s->health, ft, now, NULL)))
		return false;
	/* The other provider may take it: the curl thread decides. */
	if (s->xmap && !c->req.stream && pw_health_configured(&s->health, xt) &&
	    !pw_health_refuses(&s->health, xt, now, NULL))
		return false;
	pw_health_count_request(&s->health, pt, now);
	c->fail = PW_FAIL_BREAKER;
	c->retry_after_ms_val = retry;
	chat_refuse(s, c, 503, "provider_unavailable",
	    pw_map_fail(PW_FAIL_BREAKER, false).message);
	return true;
}

static bool
has_ctl_chars(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* c holds a decoded chat_req (its payload borrowed from the request
 * until the reply); takes c. */
static void
on_chat_decoded(
    struct pw_server *s, struct nngx_rep_ctx *ctx, struct pw_call *c)
{
	bool stopping;

	c->ctx = ctx;
	atomic_fetch_add(&s->calls, 1);
	pthread_mutex_lock(&s->mu);
	stopping = s->stopping;
	s->in_flight++;
	pthread_mutex_unlock(&s->mu);

	c->prov = pw_prov_from_str(c->req.provider);
	if (stopping) {
		chat_refuse(s, c, 503, "worker_stopping",
		    "the provider worker is shutting down");
		return;
	}
	if (c->prov == PW_PROV_MAX) {
		chat_refuse(s, c, 400, "bad_request", "unknown provider");
		return;
	}
	if (strcmp(c->req.api,
		c->prov == PW_PROV_CLAUDE ? "messages" : "chat_completions") !=
	    0) {
		chat_refuse(s, c, 400, "bad_request",
		    "api does not match the provider");
		return;
	}
	if ((c->model = models_lookup(s->models, c->req.model)) == NULL) {
		chat_refuse(
		    s, c, 400, "unknown_model", "the model has no known price");
		return;
	}
	if (strcmp(c->model->provider, c->req.provider) != 0) {
		chat_refuse(s, c, 400, "model_provider_mismatch",
		    "the model belongs to the other provider");
		return;
	}
	if (!s->configured[c->prov]) {
		chat_refuse(s, c, 503, "provider_not_configured",
		    "no API key is configured for this provider");
		return;
	}
	if (!usage_sender_ready(s->usage)) {
		/* Fail closed for money: a call we could not record. */
		chat_refuse(s, c, 503, "journal_unavailable",
		    "usage journal unavailable");
		return;
	}
	if (has_ctl_chars(c->req.anthropic_beta)) {
		chat_refuse(s, c, 400, "bad_request", "bad anthropic-beta");
		return;
	}
	if (c->req.payload_len == 0) {
		chat_refuse(s, c, 400, "bad_request", "empty upstream body");
		return;
	}
	if (breaker_refuses(s, c))
		return;
	pw_engine_submit(s->engine, c);
}

static void
on_chat(
    struct pw_server *s, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct pw_call *c;
	int rv;

	if ((c = pw_call_new()) == NULL) {
		nngx_rep_drop(ctx);
		log_error(NULL, "chat_req dropped: out of memory");
		return;
	}
	c->t_recv_us = clock_mono_us();
	/* The payload stays borrowed from buf until the reply. */
	if ((rv = msg_chat_req_decode(buf, len, &c->req)) != 0) {
		reply_bad(s, ctx, "chat_req", rv);
		pw_call_unref(c);
		return;
	}
	on_chat_decoded(s, ctx, c);
}

static void
on_ping(
    struct pw_server *s, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct msg_ping p;
	struct msg_pong r;
	char *enc;
	size_t n;
	int rv;

	if ((rv = msg_ping_decode(buf, len, &p)) != 0) {
		reply_bad(s, ctx, "ping", rv);
		return;
	}
	memset(&r, 0, sizeof(r));
	memcpy(r.request_id, p.request_id, sizeof(r.request_id));
	r.ts_us = p.ts_us;
	copy_str(r.daemon, sizeof(r.daemon), PW_DAEMON);
	r.pid = (int64_t)getpid();
	if ((rv = msg_pong_encode(&r, &enc, &n)) != 0) {
		reply_bad(s, ctx, "pong", rv);
		return;
	}
	nngx_rep_reply(ctx, enc, n);
	free(enc);
}

static void
on_status(
    struct pw_server *s, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct pw_engine_stats es;
	struct pw_server_stats ss;
	struct msg_status_req q;
	struct msg_status_resp r;
	json_t *doc;
	char *payload = NULL, *enc;
	size_t n;
	bool stopping;
	int rv;

	if ((rv = msg_status_req_decode(buf, len, &q)) != 0) {
		reply_bad(s, ctx, "status_req", rv);
		return;
	}
	pw_server_stats(s, &ss);
	pw_engine_stats(s->engine, &es);
	pthread_mutex_lock(&s->mu);
	stopping = s->stopping;
	pthread_mutex_unlock(&s->mu);
	doc = json_pack("{s:s, s:I, s:b, s:{s:b, s:b}, s:{s:I, s:I, s:I, s:I, "
			"s:I, s:I, s:I, s:I, s:I, s:I}}",
	    "worker_id", s->worker_id, "in_flight", (json_int_t)ss.in_flight,
	    "stopping", stopping, "providers", "claude",
	    s->configured[PW_PROV_CLAUDE], "openai",
	    s->configured[PW_PROV_OPENAI], "totals", "calls",
	    (json_int_t)ss.calls, "ok", (json_int_t)ss.ok, "error",
	    (json_int_t)ss.errors, "aborted", (json_int_t)ss.aborted,
	    "bad_messages", (json_int_t)ss.bad_messages, "chunks",
	    (json_int_t)es.chunks, "chunks_dropped",
	    (json_int_t)es.chunks_dropped, "cancels", (json_int_t)es.cancels,
	    "pauses", (json_int_t)es.pauses, "transfers",
	    (json_int_t)es.active);
	if (doc != NULL)
		payload = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	memset(&r, 0, sizeof(r));
	memcpy(r.request_id, q.request_id, sizeof(r.request_id));
	copy_str(r.daemon, sizeof(r.daemon), PW_DAEMON);
	copy_str(r.state, sizeof(r.state), stopping ? "degraded" : "up");
	r.payload = payload;
	r.payload_len = payload != NULL ? strlen(payload) : 0;
	rv = msg_status_resp_encode(&r, &enc, &n);
	free(payload);
	if (rv != 0) {
		reply_bad(s, ctx, "status_resp", rv);
		return;
	}
	nngx_rep_reply(ctx, enc, n);
	free(enc);
}

static void
on_request(void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct pw_server *s = arg;
	struct pw_call *c;
	enum msg_type t;
	int rv;

	/* Nearly every request is a chat_req: decode it straight away (the
	 * decoder checks the type), and peek only when that fails. */
	if ((c = pw_call_new()) != NULL) {
		c->t_recv_us = clock_mono_us();
		if (msg_chat_req_decode(buf, len, &c->req) == 0) {
			on_chat_decoded(s, ctx, c);
			return;
		}
		pw_call_unref(c);
	}
	if ((rv = proto_peek_type(buf, len, &t)) != 0) {
		reply_bad(s, ctx, "message", rv);
		return;
	}
	switch (t) {
	case MSG_CHAT_REQ:
		on_chat(s, ctx, buf, len);
		break;
	case MSG_PING:
		on_ping(s, ctx, buf, len);
		break;
	case MSG_STATUS_REQ:
		on_status(s, ctx, buf, len);
		break;
	default:
		reply_bad(s, ctx, msg_type_str(t), -ENOTSUP);
		break;
	}
}

/* ---- breakers: what the gateway and the peers learn ---- */

/* Sends an encoded message on the report socket, never blocking. */
static void
report_send(struct pw_server *s, const char *what, char *enc, size_t len)
{
	int rv;

	if (!s->report_open)
		return;
	rv = nng_send(s->report, enc, len, NNG_FLAG_NONBLOCK);
	if (rv != 0)
		log_debug(NULL, "report not sent", LF_S("what", what),
		    LF_S("error", nng_strerror(rv)));
}

static void
stats_kick(struct pw_server *s)
{
	pthread_mutex_lock(&s->smu);
	s->stats_now = true;
	pthread_cond_signal(&s->scv);
	pthread_mutex_unlock(&s->smu);
}

/* pw_health's change callback (the curl thread, no lock held). */
static void
on_breaker_change(void *arg, int target, enum pw_breaker_state st,
    int64_t open_until_ms, const char *reason)
{
	struct pw_server *s = arg;
	struct msg_breaker_state m;
	char *enc;
	size_t len;
	int rv;

	memset(&m, 0, sizeof(m));
	copy_str(m.worker_id, sizeof(m.worker_id), s->worker_id);
	copy_str(m.provider, sizeof(m.provider),
	    pw_prov_str(PW_TARGET_PROV(target)));
	copy_str(
	    m.target, sizeof(m.target), pw_slot_str(PW_TARGET_SLOT(target)));
	copy_str(m.state, sizeof(m.state), pw_breaker_state_str(st));
	m.open_until_ms = st == PW_BREAKER_OPEN ? open_until_ms : 0;
	copy_str(m.reason, sizeof(m.reason), reason);
	log_warn(NULL, "circuit breaker changed", LF_S("provider", m.provider),
	    LF_S("target", m.target), LF_S("state", m.state),
	    LF_I("open_until_ms", m.open_until_ms), LF_S("reason", reason));
	if ((rv = msg_breaker_state_encode(&m, &enc, &len)) == 0) {
		report_send(s, "breaker_state", enc, len);
		free(enc);
	} else {
		log_error(NULL, "breaker_state not encoded", LF_I("error", rv));
	}
	stats_kick(s);
}

static void
on_peer_breaker(struct pw_server *s, const struct msg_breaker_state *m)
{
	enum pw_prov p = pw_prov_from_str(m->provider);
	enum pw_slot slot = pw_slot_from_str(m->target);

	if (strcmp(m->worker_id, s->worker_id) == 0 || p == PW_PROV_MAX ||
	    slot == PW_SLOT_MAX)
		return; /* our own, echoed */
	log_info(NULL, "peer breaker", LF_S("worker_id", m->worker_id),
	    LF_S("provider", m->provider), LF_S("target", m->target),
	    LF_S("state", m->state), LF_I("open_until_ms", m->open_until_ms));
	pw_health_peer(&s->health, PW_TARGET(p, slot),
	    pw_breaker_state_from_str(m->state), m->open_until_ms,
	    clock_real_ms());
	stats_kick(s);
}

static void
on_breaker_reset(struct pw_server *s, const struct msg_breaker_reset *m)
{
	enum pw_prov p = pw_prov_from_str(m->provider);

	if (p == PW_PROV_MAX) {
		log_warn(m->request_id, "breaker reset of an unknown provider",
		    LF_S("provider", m->provider));
		return;
	}
	pw_health_reset(&s->health, p, clock_real_ms());
	log_info(m->request_id, "circuit breaker reset",
	    LF_S("provider", m->provider));
	stats_kick(s);
}

static void
stats_send(struct pw_server *s)
{
	struct msg_worker_stats m;
	json_t *doc;
	char *payload = NULL, *enc;
	size_t len;

	if ((doc = pw_health_snapshot(&s->health, clock_real_ms())) != NULL)
		payload = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (payload == NULL)
		return;
	memset(&m, 0, sizeof(m));
	copy_str(m.worker_id, sizeof(m.worker_id), s->worker_id);
	m.ts_ms = clock_real_ms();
	m.payload = payload;
	m.payload_len = strlen(payload);
	if (msg_worker_stats_encode(&m, &enc, &len) == 0) {
		report_send(s, "worker_stats", enc, len);
		free(enc);
	}
	free(payload);
}

/* Pushes worker_stats every stats_ms, and soon after a kick. */
static void *
stats_main(void *arg)
{
	struct pw_server *s = arg;

	pthread_mutex_lock(&s->smu);
	while (!s->stats_stop) {
		struct timespec ts;
		int64_t wake = clock_mono_ms() + s->stats_ms;

		ts.tv_sec = wake / 1000;
		ts.tv_nsec = (wake % 1000) * 1000000;
		while (!s->stats_now && !s->stats_stop &&
		       pthread_cond_timedwait(&s->scv, &s->smu, &ts) == 0)
			;
		if (s->stats_stop)
			break;
		s->stats_now = false;
		pthread_mutex_unlock(&s->smu);
		stats_send(s);
		pthread_mutex_lock(&s->smu);
	}
	pthread_mutex_unlock(&s->smu);
	return NULL;
}

/* ---- control (sub) ---- */

static void
on_control_msg(struct pw_server *s, const char *buf, size_t len)
{
	const char *body;
	size_t blen;
	enum msg_type t;
	union proto_msg m;
	int rv;

	if ((rv = proto_topic_strip(PROTO_TOPIC_CTL, buf, len, &body, &blen)) !=
		0 ||
	    (rv = proto_peek_type(body, blen, &t)) != 0)
		goto bad;
	switch (t) {
	case MSG_CANCEL:
		if ((rv = msg_cancel_decode(body, blen, &m.cancel)) != 0)
			goto bad;
		log_debug(m.cancel.request_id, "cancel received");
		pw_engine_cancel(s->engine, m.cancel.request_id);
		return;
	case MSG_BREAKER_RESET:
		if ((rv = msg_breaker_reset_decode(
			 body, blen, &m.breaker_reset)) != 0)
			goto bad;
		on_breaker_reset(s, &m.breaker_reset);
		return;
	case MSG_BREAKER_STATE:
		if ((rv = msg_breaker_state_decode(
			 body, blen, &m.breaker_state)) != 0)
			goto bad;
		on_peer_breaker(s, &m.breaker_state);
		return;
	case MSG_CACHE_CLEAR:
		if ((rv = msg_cache_clear_decode(body, blen, &m.cache_clear)) !=
		    0)
			goto bad;
		log_info(m.cache_clear.request_id,
		    "cache clear: no cache in this version",
		    LF_S("provider", m.cache_clear.provider));
		return;
	default:
		rv = -ENOTSUP;
		break;
	}
bad:
	atomic_fetch_add(&s->bad_messages, 1);
	log_warn(NULL, "bad control message", LF_S("error", strerror(-rv)));
}

static void
on_control(void *arg)
{
	struct pw_server *s = arg;
	int rv = nng_aio_result(s->sub_aio);
	nng_msg *m;

	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv == 0) {
		m = nng_aio_get_msg(s->sub_aio);
		nng_aio_set_msg(s->sub_aio, NULL);
		on_control_msg(s, nng_msg_body(m), nng_msg_len(m));
		nng_msg_free(m);
	}
	nng_recv_aio(s->sub, s->sub_aio);
}

/* ---- life cycle ---- */

int
pw_server_start(const struct pw_server_opts *o, struct pw_server **ret)
{
	struct pw_engine_opts eo;
	struct usage_sender_cfg uc = {0};
	bool configured[PW_TARGETS] = {false};
	struct pw_server *s;
	pthread_condattr_t ca;
	int rv;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	pthread_mutex_init(&s->umu, NULL);
	pthread_cond_init(&s->ucv, NULL);
	copy_str(s->worker_id, sizeof(s->worker_id), o->worker_id);
	s->models = o->models;
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&s->smu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->scv, &ca);
	pthread_condattr_destroy(&ca);
	s->stats_ms = o->stats_interval_ms > 0 ? o->stats_interval_ms : 1000;
	memset(&eo, 0, sizeof(eo));
	for (int p = 0; p < PW_PROV_MAX; p++) {
		const char *fb_base = o->fallback_base_url[p];
		const char *fb_key = o->fallback_key[p];
		bool fb = (fb_base != NULL && fb_base[0] != '\0') ||
			  (fb_key != NULL && fb_key[0] != '\0');

		s->configured[p] = o->key[p] != NULL && o->key[p][0] != '\0';
		if (o->base_url[p] != NULL &&
		    (rv = pw_endpoint_url(
			 o->base_url[p], (enum pw_prov)p, &s->url[p])) != 0)
			goto fail;
		eo.url[p] = s->url[p];
		eo.key[p] = s->configured[p] ? o->key[p] : NULL;
		configured[PW_TARGET(p, PW_SLOT_PRIMARY)] = s->configured[p];
		if (!fb || !s->configured[p])
			continue;
		if (fb_base == NULL || fb_base[0] == '\0')
			fb_base = o->base_url[p];
		if (fb_key == NULL || fb_key[0] == '\0')
			fb_key = o->key[p];
		if (fb_base != NULL &&
		    (rv = pw_endpoint_url(
			 fb_base, (enum pw_prov)p, &s->fb_url[p])) != 0)
			goto fail;
		eo.url_fb[p] = s->fb_url[p];
		eo.key_fb[p] = fb_key;
		configured[PW_TARGET(p, PW_SLOT_FALLBACK)] =
		    s->fb_url[p] != NULL;
	}
	eo.max_stream_urls = 64;
	pw_health_init(
	    &s->health, &o->breaker, configured, on_breaker_change, s);
	s->health_init = true;
	eo.health = &s->health;
	eo.max_retries = o->max_retries;
	eo.xmap = o->fallback_model_map;
	eo.models = o->models;
	s->xmap =
	    o->fallback_model_map != NULL && o->fallback_model_map[0] != '\0';
	if (o->report_url != NULL && o->report_url[0] != '\0') {
		if ((rv = nng_push0_open(&s->report)) != 0) {
			rv = nngx_err(rv);
			goto fail;
		}
		s->report_open = true;
		nng_socket_set_int(s->report, NNG_OPT_SENDBUF, 64);
		if ((rv = nngx_dial(s->report, o->report_url, "report push")) !=
		    0)
			goto fail;
	}
	if ((rv = pthread_create(&s->stats_th, NULL, stats_main, s)) != 0) {
		rv = -rv;
		goto fail;
	}
	s->stats_started = true;

	uc.state_dir = o->state_dir;
	uc.worker_id = o->worker_id;
	uc.usage_url = o->usage_url;
	uc.accountant_url = o->accountant_url;
	if ((rv = usage_sender_open(&uc, &s->usage)) != 0) {
		log_error(NULL, "cannot open the usage journal",
		    LF_S("state_dir", o->state_dir),
		    LF_S("error", strerror(-rv)));
		goto fail;
	}
	for (int i = 0; i < PW_EMITTERS; i++) {
		if ((rv = pthread_create(
			 &s->emitters[i], NULL, emitter_main, s)) != 0) {
			rv = -rv;
			goto fail;
		}
		s->nemitters++;
	}
	if ((rv = pw_engine_new(&eo, engine_done, s, &s->engine)) != 0)
		goto fail;
	if ((rv = nng_sub0_open(&s->sub)) != 0 ||
	    (rv = nng_socket_set(s->sub, NNG_OPT_SUB_SUBSCRIBE, PROTO_TOPIC_CTL,
		 strlen(PROTO_TOPIC_CTL))) != 0 ||
	    (rv = nng_aio_alloc(&s->sub_aio, on_control, s)) != 0) {
		rv = nngx_err(rv);
		goto fail;
	}
	if ((rv = nngx_dial(s->sub, o->control_url, "control sub")) != 0)
		goto fail;
	nng_recv_aio(s->sub, s->sub_aio);
	/* Last: calls may arrive from here on. */
	if ((rv = nngx_rep_start(o->worker_url, false,
		 o->concurrency > 0 ? o->concurrency : 1, on_request, s,
		 &s->rep)) != 0)
		goto fail;
	*ret = s;
	return 0;
fail:
	s->stopped = true;
	pw_server_free(s);
	return rv;
}

static void
wait_idle(struct pw_server *s, int64_t until_ms)
{
	pthread_mutex_lock(&s->mu);
	while (s->in_flight > 0) {
		struct timespec ts;
		int64_t wake = clock_mono_ms() + 1000;

		if (until_ms >= 0 && clock_mono_ms() >= until_ms)
			break;
		if (until_ms >= 0 && until_ms < wake)
			wake = until_ms;
		ts.tv_sec = wake / 1000;
		ts.tv_nsec = (wake % 1000) * 1000000;
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
}

void
pw_server_stop(struct pw_server *s, int grace_ms)
{
	uint64_t left;

	if (s->stopped)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	left = s->in_flight;
	pthread_mutex_unlock(&s->mu);
	if (left > 0)
		log_info(NULL, "letting calls in flight finish",
		    LF_I("in_flight", left), LF_I("grace_ms", grace_ms));
	wait_idle(s, clock_mono_ms() + grace_ms);
	pthread_mutex_lock(&s->mu);
	left = s->in_flight;
	pthread_mutex_unlock(&s->mu);
	if (left > 0)
		log_warn(NULL, "aborting calls still in flight",
		    LF_I("in_flight", left));
	pw_engine_abort_all(s->engine);
	/* The abort ends every call at once, on the curl thread. */
	wait_idle(s, -1);
	if (pw_engine_flush(s->engine, 1000) != 0)
		log_warn(NULL, "stream chunks still queued at stop");
	nng_msleep(PW_LINGER_MS);
	s->stopped = true;
}

void
pw_server_stats(struct pw_server *s, struct pw_server_stats *ret)
{
	ret->calls = atomic_load(&s->calls);
	ret->ok = atomic_load(&s->ok);
	ret->errors = atomic_load(&s->errors);
	ret->aborted = atomic_load(&s->aborted);
	ret->bad_messages = atomic_load(&s->bad_messages);
	pthread_mutex_lock(&s->mu);
	ret->in_flight = s->in_flight;
	pthread_mutex_unlock(&s->mu);
}

void
pw_server_free(struct pw_server *s)
{
	if (s == NULL)
		return;
	if (!s->stopped)
		pw_server_stop(s, 0);
	/* No call is left: the rep contexts can go. */
	nngx_rep_free(s->rep);
	if (s->sub_aio != NULL)
		nng_aio_stop(s->sub_aio);
	if (nng_socket_id(s->sub) > 0)
		nng_close(s->sub);
	if (s->sub_aio != NULL)
		nng_aio_free(s->sub_aio);
	pw_engine_free(s->engine);
	if (s->stats_started) {
		pthread_mutex_lock(&s->smu);
		s->stats_stop = true;
		pthread_cond_signal(&s->scv);
		pthread_mutex_unlock(&s->smu);
		pthread_join(s->stats_th, NULL);
	}
	if (s->report_open)
		nng_close(s->report);
	if (s->health_init)
		pw_health_destroy(&s->health);
	/* Every call has ended: let the emitters journal what is queued. */
	pthread_mutex_lock(&s->umu);
	s->ustop = true;
	pthread_cond_broadcast(&s->ucv);
	pthread_mutex_unlock(&s->umu);
	for (int i = 0; i < s->nemitters; i++)
		pthread_join(s->emitters[i], NULL);
	usage_sender_close(s->usage);
	pthread_cond_destroy(&s->ucv);
	pthread_mutex_destroy(&s->umu);
	for (int p = 0; p < PW_PROV_MAX; p++) {
		free(s->url[p]);
		free(s->fb_url[p]);
	}
	pthread_cond_destroy(&s->scv);
	pthread_mutex_destroy(&s->smu);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
