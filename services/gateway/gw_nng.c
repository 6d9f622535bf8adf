/*
 * The gateway's nng side: the req socket the workers dial (one context
 * per call), the pull socket stream chunks arrive on, the pub socket for
 * control messages, the rep socket answering ping/status, and the req
 * sockets to the ratelimiter and the accountant.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/req.h>

#include "clock.h"
#include "gw.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"

/* ---- asynchronous calls over a req socket ---- */

enum gw_call_phase { GW_CALL_SEND, GW_CALL_RECV };

struct gw_call {
	struct gw *gw;
	nng_ctx ctx;
	nng_aio *aio;
	enum gw_call_phase phase;
	int timeout_ms;
	gw_call_fn fn;
	void *arg;
};

static void
call_end(struct gw_call *c, int err, bool sent, const char *buf, size_t len)
{
	struct gw *gw = c->gw;

	c->fn(c->arg, err, sent, buf, len);
	nng_ctx_close(c->ctx);
	/* We are inside the aio's callback: free it from nng's reaper. */
	nng_aio_reap(c->aio);
	free(c);
	atomic_fetch_sub(&gw->calls, 1);
}

static void
call_cb(void *arg)
{
	struct gw_call *c = arg;
	int rv = nng_aio_result(c->aio);
	nng_msg *m;

	if (c->phase == GW_CALL_SEND) {
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
			nng_aio_set_msg(c->aio, NULL);
			call_end(c, nngx_err(rv), false, NULL, 0);
			return;
		}
		c->phase = GW_CALL_RECV;
		nng_aio_set_timeout(c->aio, c->timeout_ms);
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	if (rv != 0) {
		call_end(c, nngx_err(rv), true, NULL, 0);
		return;
	}
	m = nng_aio_get_msg(c->aio);
	nng_aio_set_msg(c->aio, NULL);
	call_end(c, 0, true, nng_msg_body(m), nng_msg_len(m));
	nng_msg_free(m);
}

int
gw_call(struct gw *gw, nng_socket s, const void *buf, size_t len,
    int timeout_ms, gw_call_fn fn, void *arg)
{
	struct gw_call *c;
	nng_msg *m = NULL;
	int rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	c->gw = gw;
	c->fn = fn;
	c->arg = arg;
	c->timeout_ms = timeout_ms;
	c->phase = GW_CALL_SEND;
	if ((rv = nng_aio_alloc(&c->aio, call_cb, c)) != 0) {
		free(c);
		return nngx_err(rv);
	}
	if ((rv = nng_ctx_open(&c->ctx, s)) != 0) {
		nng_aio_free(c->aio);
		free(c);
		return nngx_err(rv);
	}
	/* A request is never sent twice: a lost worker fails the call. */
	nng_ctx_set_ms(c->ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if ((rv = nngx_msg_new(buf, len, &m)) != 0) {
		nng_ctx_close(c->ctx);
		nng_aio_free(c->aio);
		free(c);
		return rv;
	}
	atomic_fetch_add(&gw->calls, 1);
	nng_aio_set_msg(c->aio, m);
	nng_aio_set_timeout(c->aio, timeout_ms);
	nng_ctx_send(c->ctx, c->aio);
	return 0;
}

/* ---- control messages ---- */

int
gw_publish(struct gw *gw, const char *buf, size_t len)
{
	char *wrapped;
	size_t wlen;
	int rv;

	if (!gw->pub_open)
		return -EBADF;
	if ((rv = proto_topic_wrap(
		 PROTO_TOPIC_CTL, buf, len, &wrapped, &wlen)) != 0)
		return rv;
	rv = nng_send(gw->pub_sock, wrapped, wlen, NNG_FLAG_NONBLOCK);
	free(wrapped);
	return nngx_err(rv);
}

void
gw_publish_cancel(struct gw *gw, const char *request_id)
{
	struct msg_cancel c;
	char *buf;
	size_t len;
	int rv;

	memset(&c, 0, sizeof(c));
	snprintf(c.request_id, sizeof(c.request_id), "%s", request_id);
	if ((rv = msg_cancel_encode(&c, &buf, &len)) != 0) {
		log_warn(request_id, "cancel not encoded", LF_I("error", rv));
		return;
	}
	rv = gw_publish(gw, buf, len);
	free(buf);
	if (rv != 0)
		log_warn(request_id, "cancel not published", LF_I("error", rv));
	else
		log_info(request_id, "cancel published");
}

/* ---- worker pipes ---- */

static void
pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct gw *gw = arg;
	int n;

	if (ev == NNG_PIPE_EV_ADD_POST) {
		n = atomic_fetch_add(&gw->worker_pipes, 1) + 1;
		log_info(NULL, "worker connected", LF_I("pipe", nng_pipe_id(p)),
		    LF_I("workers", n));
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		n = atomic_fetch_sub(&gw->worker_pipes, 1) - 1;
		log_info(NULL, "worker disconnected",
		    LF_I("pipe", nng_pipe_id(p)), LF_I("workers", n));
	}
}

/* ---- stream chunks ---- */

static void
pull_cb(void *arg)
{
	struct gw_pull *p = arg;
	struct gw *gw = p->gw;
	nng_aio *aio = p->aio;
	struct msg_stream_chunk ch;
	enum msg_type t = MSG_NONE;
	nng_msg *m;
	int rv;

	rv = nng_aio_result(aio);
	if (rv != 0) {
		if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
			return;
		log_warn(NULL, "stream receive failed",
		    LF_S("error", nng_strerror(rv)));
		nng_recv_aio(gw->pull_sock, aio);
		return;
	}
	m = nng_aio_get_msg(aio);
	nng_aio_set_msg(aio, NULL);
	/* Nearly every message is a chunk: decode it straight away (the
	 * decoder checks the type), and peek only when that fails. */
	rv = msg_stream_chunk_decode(nng_msg_body(m), nng_msg_len(m), &ch);
	if (rv == 0)
		gw_chat_chunk(
		    gw, ch.request_id, ch.seq, ch.payload, ch.payload_len);
	else if (proto_peek_type(nng_msg_body(m), nng_msg_len(m), &t) == 0 &&
		 t == MSG_WORKER_STATS)
		gw_providers_on_stats(gw, nng_msg_body(m), nng_msg_len(m));
	else if (t == MSG_BREAKER_STATE)
		gw_providers_on_breaker(gw, nng_msg_body(m), nng_msg_len(m));
	else
		log_warn(NULL, "bad stream message dropped", LF_I("error", rv),
		    LF_S("type", msg_type_str(t)),
		    LF_I("bytes", nng_msg_len(m)));
	nng_msg_free(m);
	nng_recv_aio(gw->pull_sock, aio);
}

/* ---- rep server: ping and status ---- */

static void
rep_fn(void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len)
{
	struct gw *gw = arg;
	enum msg_type t = MSG_NONE;
	char *out = NULL;
	size_t outlen = 0;
	int rv;

	if (proto_peek_type(buf, len, &t) != 0)
		t = MSG_NONE;
	if (t == MSG_PING) {
		struct msg_ping p;
		struct msg_pong q;

		if ((rv = msg_ping_decode(buf, len, &p)) == 0) {
			memset(&q, 0, sizeof(q));
			memcpy(
			    q.request_id, p.request_id, sizeof(q.request_id));
			q.ts_us = p.ts_us;
			snprintf(q.daemon, sizeof(q.daemon), "gateway");
			q.pid = getpid();
			rv = msg_pong_encode(&q, &out, &outlen);
		}
	} else if (t == MSG_STATUS_REQ) {
		struct msg_status_req s;
		struct msg_status_resp q;
		char doc[384];

		if ((rv = msg_status_req_decode(buf, len, &s)) == 0) {
			size_t nlive;

			pthread_mutex_lock(&gw->mtx);
			nlive = gw->nlive;
			pthread_mutex_unlock(&gw->mtx);
			memset(&q, 0, sizeof(q));
			memcpy(
			    q.request_id, s.request_id, sizeof(q.request_id));
			snprintf(q.daemon, sizeof(q.daemon), "gateway");
			snprintf(q.state, sizeof(q.state), "%s",
			    atomic_load(&gw->worker_pipes) > 0 ? "up"
							       : "degraded");
			snprintf(doc, sizeof(doc),
			    "{\"in_flight\":%zu,\"workers\":%d,\"requests\":%"
			    "lld,\"threat_reports_dropped\":%lld,"
			    "\"settles\":%lld,\"settle_batches\":%lld,"
			    "\"checks\":%lld,\"check_sends\":%lld}",
			    nlive, atomic_load(&gw->worker_pipes),
			    (long long)atomic_load(&gw->n_requests),
			    (long long)atomic_load(&gw->n_threat_dropped),
			    (long long)atomic_load(&gw->n_settles),
			    (long long)atomic_load(&gw->n_settle_batches),
			    (long long)atomic_load(&gw->n_checks),
			    (long long)atomic_load(&gw->n_check_batches));
			q.payload = doc;
			q.payload_len = strlen(doc);
			rv = msg_status_resp_encode(&q, &out, &outlen);
		}
	} else {
		rv = -EPROTO;
	}
	if (rv != 0) {
		struct msg_ack a;

		memset(&a, 0, sizeof(a));
		a.ok = false;
		snprintf(a.code, sizeof(a.code), "bad_request");
		snprintf(a.message, sizeof(a.message),
		    "the gateway answers ping and status_req");
		log_warn(NULL, "bad control request", LF_I("error", rv),
		    LF_S("type", msg_type_str(t)));
		if (msg_ack_encode(&a, &out, &outlen) != 0) {
			nngx_rep_drop(ctx);
			return;
		}
	}
	nngx_rep_reply(ctx, out, outlen);
	free(out);
}

/* ---- start / stop ---- */

static int
open_req(nng_socket *s, const char *url, const char *what, bool listen)
{
	int rv;

	if ((rv = nng_req0_open(s)) != 0)
		return nngx_err(rv);
	nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, GW_NNG_MAX_MSG);
	rv = listen ? nngx_listen(*s, url, what) : nngx_dial(*s, url, what);
	if (rv != 0) {
		nng_close(*s);
		return rv;
	}
	return 0;
}

int
gw_nng_start(struct gw *gw)
{
	const struct cfg *c = gw->cfg;
	int rv;

	atomic_store(&gw->worker_pipes, 0);
	atomic_store(&gw->calls, 0);
	if ((rv = nng_req0_open(&gw->worker_sock)) != 0)
		return nngx_err(rv);
	gw->worker_open = true;
	nng_socket_set_ms(
	    gw->worker_sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(gw->worker_sock, NNG_OPT_RECVMAXSZ, GW_NNG_MAX_MSG);
	nng_pipe_notify(gw->worker_sock, NNG_PIPE_EV_ADD_POST, pipe_cb, gw);
	nng_pipe_notify(gw->worker_sock, NNG_PIPE_EV_REM_POST, pipe_cb, gw);
	if ((rv = nngx_listen(gw->worker_sock, c->worker_url, "worker")) != 0)
		return rv;

	if ((rv = nng_pull0_open(&gw->pull_sock)) != 0)
		return nngx_err(rv);
	gw->pull_open = true;
	nng_socket_set_size(gw->pull_sock, NNG_OPT_RECVMAXSZ, GW_NNG_MAX_MSG);
	nng_socket_set_int(gw->pull_sock, NNG_OPT_RECVBUF, 1024);
	if ((rv = nngx_listen(gw->pull_sock, c->stream_url, "stream")) != 0)
		return rv;
	for (int i = 0; i < GW_PULL_AIOS; i++) {
		struct gw_pull *p = &gw->pulls[i];

		p->gw = gw;
		if ((rv = nng_aio_alloc(&p->aio, pull_cb, p)) != 0)
			return nngx_err(rv);
		nng_recv_aio(gw->pull_sock, p->aio);
	}

	if ((rv = nng_pub0_open(&gw->pub_sock)) != 0)
		return nngx_err(rv);
	gw->pub_open = true;
	if ((rv = nngx_listen(gw->pub_sock, c->control_url, "control")) != 0)
		return rv;

	if ((rv = nngx_rep_start(
		 c->gateway_url, true, 4, rep_fn, gw, &gw->rep)) != 0)
		return rv;

	if ((rv = open_req(
		 &gw->rl_sock, c->ratelimiter_url, "ratelimiter", false)) != 0)
		return rv;
	gw->rl_open = true;
	if ((rv = open_req(
		 &gw->acct_sock, c->accountant_url, "accountant", false)) != 0)
		return rv;
	gw->acct_open = true;
	return 0;
}

/* Waits (bounded) until every call callback has run. */
static void
wait_calls(struct gw *gw)
{
	for (int i = 0; i < 500 && atomic_load(&gw->calls) > 0; i++)
		usleep(10000);
	if (atomic_load(&gw->calls) > 0)
		log_warn(NULL, "calls still outstanding at shutdown",
		    LF_I("calls", atomic_load(&gw->calls)));
}

void
gw_nng_close_calls(struct gw *gw)
{
	if (gw->worker_open) {
		nng_close(gw->worker_sock);
		gw->worker_open = false;
	}
	/* The settles gathered so far go before the socket closes. */
	gw_limit_flush(gw);
	if (gw->rl_open) {
		nng_close(gw->rl_sock);
		gw->rl_open = false;
	}
	if (gw->acct_open) {
		nng_close(gw->acct_sock);
		gw->acct_open = false;
	}
	for (int i = 0; i < GW_PULL_AIOS; i++)
		if (gw->pulls[i].aio != NULL)
			nng_aio_stop(gw->pulls[i].aio);
	if (gw->pull_open) {
		nng_close(gw->pull_sock);
		gw->pull_open = false;
	}
	wait_calls(gw);
}

void
gw_nng_stop(struct gw *gw)
{
	gw_nng_close_calls(gw);
	for (int i = 0; i < GW_PULL_AIOS; i++) {
		if (gw->pulls[i].aio != NULL)
			nng_aio_free(gw->pulls[i].aio);
		gw->pulls[i].aio = NULL;
	}
	nngx_rep_free(gw->rep);
	gw->rep = NULL;
	if (gw->pub_open) {
		nng_close(gw->pub_sock);
		gw->pub_open = false;
	}
}
