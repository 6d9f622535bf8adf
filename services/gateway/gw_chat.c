/*
 * One chat call: validation, the chat_req to the worker pool, the reply,
 * and for a stream the chunks (reordered by seq) written to the client as
 * they arrive.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "gw.h"
#include "gw_resp.h"
#include "log.h"
#include "proto.h"
#include "subject.h"

/* ---- the stream table: request_id -> request ---- */

static size_t
stab_hash(const char *s)
{
	size_t h = 5381;

	while (*s != '\0')
		h = h * 33 + (unsigned char)*s++;
	return h % GW_STAB_SIZE;
}

static struct gw_req *
stab_find_locked(struct gw *gw, const char *id)
{
	struct gw_req *r;

	for (r = gw->stab[stab_hash(id)]; r != NULL; r = r->hnext)
		if (strcmp(r->request_id, id) == 0)
			return r;
	return NULL;
}

/* Adds r; a request id already streaming (a client reusing its
 * X-Request-ID) is replaced by a fresh one. */
static void
stab_insert(struct gw *gw, struct gw_req *r)
{
	size_t h;

	pthread_mutex_lock(&gw->mtx);
	if (stab_find_locked(gw, r->request_id) != NULL) {
		log_warn(r->request_id,
		    "request id already streaming, a new one is used");
		do {
			id_new("req_", r->request_id, sizeof(r->request_id));
		} while (stab_find_locked(gw, r->request_id) != NULL);
	}
	h = stab_hash(r->request_id);
	r->hnext = gw->stab[h];
	gw->stab[h] = r;
	r->in_stab = true;
	pthread_mutex_unlock(&gw->mtx);
}

void
gw_stab_remove(struct gw *gw, struct gw_req *r)
{
	struct gw_req **pp;

	pthread_mutex_lock(&gw->mtx);
	if (r->in_stab) {
		for (pp = &gw->stab[stab_hash(r->request_id)]; *pp != NULL;
		     pp = &(*pp)->hnext) {
			if (*pp == r) {
				*pp = r->hnext;
				break;
			}
		}
		r->in_stab = false;
	}
	pthread_mutex_unlock(&gw->mtx);
}

/* ---- results ---- */

/*
 * A quick, allocation-free check that buf is one JSON text jansson would
 * certainly accept (json_loadb with JSON_DECODE_ANY).  Conservative:
 * false means "not sure" (bad syntax, or a case where jansson's verdict
 * needs its own parser: big numbers, \u0000, surrogate escapes, deep
 * nesting), never "invalid".
 */
#define QJ_MAX_DEPTH 64

static bool
qj_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
qj_hex(unsigned char c, unsigned *v)
{
	if (c >= '0' && c <= '9')
		*v = (unsigned)(c - '0');
	else if (c >= 'a' && c <= 'f')
		*v = (unsigned)(c - 'a' + 10);
	else if (c >= 'A' && c <= 'F')
		*v = (unsigned)(c - 'A' + 10);
	else
		return false;
	return true;
}

/* One strict UTF-8 sequence at p[0..left); its length, or 0. */
static size_t
qj_utf8(const unsigned char *p, size_t left)
{
	unsigned c = p[0], v;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	return n;
}

/* The string starting after its opening quote at *i; true and *i past
 * the closing quote when sure. */
static bool
qj_string(const unsigned char *p, size_t len, size_t *i)
{
	size_t k = *i, n;

	while (k < len) {
		unsigned char c = p[k];

		if (c == '"') {
			*i = k + 1;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\') {
			unsigned v = 0, h;

			if (++k >= len)
				return false;
			c = p[k];
			if (c == 'u') {
				if (len - k < 5)
					return false;
				for (int j = 1; j <= 4; j++) {
					if (!qj_hex(p[k + (size_t)j], &h))
						return false;
					v = (v << 4) | h;
				}
				if (v == 0 || (v >= 0xd800 && v <= 0xdfff))
					return false;
				k += 5;
				continue;
			}
			if (strchr("\"\\/bfnrt", c) == NULL || c == '\0')
				return false;
			k++;
			continue;
		}
		if (c < 0x80) {
			k++;
			continue;
		}
		if ((n = qj_utf8(p + k, len - k)) == 0)
			return false;
		k += n;
	}
	return false;
}

static bool
qj_number(const unsigned char *p, size_t len, size_t *i)
{
	size_t k = *i, start = k, digits = 0, expdigits = 0;
	bool real = false;

	if (k < len && p[k] == '-')
		k++;
	if (k < len && p[k] == '0') {
		k++;
		digits = 1;
	} else {
		while (k < len && p[k] >= '0' && p[k] <= '9') {
			k++;
			digits++;
		}
	}
	if (digits == 0)
		return false;
	if (k < len && p[k] == '.') {
		size_t f = 0;

		real = true;
		k++;
		while (k < len && p[k] >= '0' && p[k] <= '9') {
			k++;
			f++;
		}
		if (f == 0)
			return false;
	}
	if (k < len && (p[k] == 'e' || p[k] == 'E')) {
		real = true;
		k++;
		if (k < len && (p[k] == '+' || p[k] == '-'))
			k++;
		while (k < len && p[k] >= '0' && p[k] <= '9') {
			k++;
			expdigits++;
		}
		if (expdigits == 0 || expdigits > 2)
			return false;
	}
	/* Integers that surely fit json_int_t, reals that surely fit a
	 * double: the rest is jansson's call. */
	if ((!real && digits > 18) || (real && k - start > 24))
		return false;
	*i = k;
	return true;
}

static bool
qj_sure(const char *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;
	char stack[QJ_MAX_DEPTH];
	int depth = 0;
	size_t i = 0;
	bool want_value = true; /* else: want ',' or a closer */

	for (;;) {
		while (i < len && qj_ws(p[i]))
			i++;
		if (i >= len)
			return false;
		if (want_value) {
			unsigned char c = p[i];

			if (c == '{' || c == '[') {
				if (depth >= QJ_MAX_DEPTH)
					return false;
				stack[depth++] = (char)c;
				i++;
				while (i < len && qj_ws(p[i]))
					i++;
				if (i < len && p[i] == (c == '{' ? '}' : ']')) {
					depth--;
					i++;
					want_value = false;
					goto after_value;
				}
				if (c == '{')
					goto key;
				continue;
			}
			if (c == '"') {
				i++;
				if (!qj_string(p, len, &i))
					return false;
			} else if (c == '-' || (c >= '0' && c <= '9')) {
				if (!qj_number(p, len, &i))
					return false;
			} else if (len - i >= 4 &&
				   memcmp(p + i, "true", 4) == 0) {
				i += 4;
			} else if (len - i >= 5 &&
				   memcmp(p + i, "false", 5) == 0) {
				i += 5;
			} else if (len - i >= 4 &&
				   memcmp(p + i, "null", 4) == 0) {
				i += 4;
			} else {
				return false;
			}
			want_value = false;
			goto after_value;
		}
		/* After a value inside a container. */
		if (p[i] == ',') {
			i++;
			if (stack[depth - 1] == '{')
				goto key;
			want_value = true;
			continue;
		}
		if (p[i] != (stack[depth - 1] == '{' ? '}' : ']'))
			return false;
		depth--;
		i++;
	after_value:
		if (depth == 0) {
			while (i < len && qj_ws(p[i]))
				i++;
			return i == len;
		}
		continue;
	key:
		while (i < len && qj_ws(p[i]))
			i++;
		if (i >= len || p[i] != '"')
			return false;
		i++;
		if (!qj_string(p, len, &i))
			return false;
		while (i < len && qj_ws(p[i]))
			i++;
		if (i >= len || p[i] != ':')
			return false;
		i++;
		want_value = true;
	}
}

static bool
is_json(const char *buf, size_t len)
{
	json_t *j;
	json_error_t e;

	if (qj_sure(buf, len))
		return true;
	j = json_loadb(buf, len, JSON_DECODE_ANY, &e);
	if (j == NULL)
		return false;
	json_decref(j);
	return true;
}

static void
free_chunks_locked(struct gw_req *r)
{
	struct gw_chunk *c;

	while ((c = r->chunks) != NULL) {
		r->chunks = c->next;
		free(c);
	}
	r->buffered = 0;
}

/* Ends a started stream early with an error event (the reader writes the
 * contiguous chunks it has first). */
static void
stream_abort_locked(struct gw_req *r, const char *reason)
{
	if (r->aborted || r->finished)
		return;
	r->aborted = true;
	r->abort_reason = reason;
	log_warn(r->request_id, "stream ended by the gateway",
	    LF_S("reason", reason), LF_I("chunks_written", r->next_seq));
}

/* A failed call before any byte was streamed, or a non-stream call. */
static void
set_call_error_locked(struct gw_req *r, const struct msg_chat_resp *resp)
{
	int status = (int)resp->status;
	const char *code =
	    resp->error_code[0] != '\0' ? resp->error_code : "upstream_error";

	if (status < 400 || status > 599)
		status = 502;
	if ((status == 429 || status == 503) && resp->retry_after_ms > 0)
		r->retry_after_ms = resp->retry_after_ms;
	/* aiproxy retried already: the SDKs must not multiply that. */
	if (resp->attempts > 1)
		r->no_retry = true;
	/* The drop-in routes return the provider's own error body. */
	if (r->route->provider == NULL && resp->upstream_status != 0 &&
	    resp->payload_len > 0 &&
	    is_json(resp->payload, resp->payload_len)) {
		buf_reset(&r->out);
		if (buf_append(&r->out, resp->payload, resp->payload_len) ==
		    0) {
			r->status = status;
			r->ctype = "application/json";
			snprintf(r->code, sizeof(r->code), "%s", code);
			r->state = GW_RS_READY;
			return;
		}
	}
	gw_req_set_error_locked(r, status, code, NULL);
}

static void
set_success_locked(struct gw_req *r, const struct msg_chat_resp *resp)
{
	int rv;

	if (!is_json(resp->payload, resp->payload_len)) {
		log_warn(r->request_id, "upstream body is not JSON",
		    LF_I("bytes", resp->payload_len));
		gw_req_set_error_locked(r, 502, "upstream_invalid_body",
		    "the provider answered with an invalid body");
		return;
	}
	buf_reset(&r->out);
	if (r->route->provider != NULL)
		rv = gw_fmt_envelope_ok(&r->out, resp->payload,
		    resp->payload_len, resp->cost_micro_usd,
		    gw_req_elapsed_ms(r), r->request_id, r->provider, r->model);
	else
		rv = buf_append(&r->out, resp->payload, resp->payload_len);
	if (rv != 0) {
		gw_req_set_error_locked(r, 502, "upstream_too_large",
		    "the provider's answer is too large");
		return;
	}
	/* The envelope says when a fallback upstream served the call. */
	if (rv == 0 && resp->fallback && r->route->provider != NULL &&
	    r->out.len > 0 && r->out.data[r->out.len - 1] == '}') {
		r->out.len--;
		if (buf_append_str(&r->out, ",\"fallback\":true}") != 0) {
			gw_req_set_error_locked(r, 502, "upstream_too_large",
			    "the provider's answer is too large");
			return;
		}
	}
	r->status = 200;
	r->ctype = "application/json";
	r->state = GW_RS_READY;
}

static void
call_failed_locked(struct gw_req *r, int err, bool sent)
{
	const char *code;
	int status;

	if (err == -EBADF || err == -ECANCELED) {
		status = 503;
		code = "shutting_down";
	} else if (!sent && err == -ETIMEDOUT) {
		status = 503;
		code = "no_workers";
	} else if (err == -ETIMEDOUT) {
		status = 504;
		code = "worker_timeout";
	} else {
		status = 502;
		code = "worker_unavailable";
	}
	log_warn(r->request_id, "worker call failed", LF_S("error", code),
	    LF_I("errno", err), LF_B("sent", sent));
	if (r->stream_started) {
		stream_abort_locked(r, code);
		return;
	}
	r->retry_after_ms = status == 503 ? 1000 : 0;
	gw_req_set_error_locked(r, status, code, NULL);
}

static void
chat_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct gw_req *r = arg;
	struct msg_chat_resp resp;
	enum msg_type t = MSG_NONE;
	int rv = -EPROTO;

	if (err == 0)
		rv = msg_chat_resp_decode(buf, len, &resp);
	pthread_mutex_lock(&r->mtx);
	if (r->closed)
		goto out;
	if (err != 0) {
		call_failed_locked(r, err, sent);
		goto wake;
	}
	/* The decoder checks the type: peek only to log a bad reply. */
	if (rv != 0) {
		if (proto_peek_type(buf, len, &t) != 0)
			t = MSG_NONE;
		log_error(r->request_id, "bad reply from the worker",
		    LF_S("type", msg_type_str(t)), LF_I("bytes", len));
		if (r->stream_started)
			stream_abort_locked(r, "worker_error");
		else
			gw_req_set_error_locked(r, 502, "worker_error", NULL);
		goto wake;
	}
	r->cost_micro_usd = resp.cost_micro_usd;
	r->fallback = resp.fallback;
	if (strcmp(resp.provider, "openai") == 0)
		r->provider = "openai"; /* static, as r->provider must be */
	else if (strcmp(resp.provider, "claude") == 0)
		r->provider = "claude";
	if (resp.model[0] != '\0' && strcmp(resp.model, r->model) != 0)
		snprintf(r->model, sizeof(r->model), "%s", resp.model);
	if (resp.error_code[0] != '\0')
		snprintf(r->code, sizeof(r->code), "%s", resp.error_code);
	log_debug(r->request_id, "worker replied", LF_I("status", resp.status),
	    LF_S("error", resp.error_code),
	    LF_I("upstream_status", resp.upstream_status),
	    LF_I("chunks", resp.chunks), LF_I("cost", resp.cost_micro_usd));
	if (!r->is_stream) {
		if (resp.status == 200 && resp.error_code[0] == '\0')
			set_success_locked(r, &resp);
		else
			set_call_error_locked(r, &resp);
		goto wake;
	}
	r->resp_done = true;
	r->resp_done_us = clock_mono_us();
	r->chunks_expected = resp.chunks;
	if (!r->stream_started) {
		if (resp.chunks > 0 ||
		    (resp.status == 200 && resp.error_code[0] == '\0')) {
			r->stream_started = true;
			if (r->state == GW_RS_WAITING)
				r->state = GW_RS_READY;
		} else {
			set_call_error_locked(r, &resp);
		}
	}
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	/* Settle the reservation whatever became of the client: the cost
	 * the worker counted (tokens of a failed call included), else 0.
	 * After the wake: the client need not wait for the bookkeeping. */
	gw_limit_settle(r, rv == 0 ? resp.cost_micro_usd : 0);
	gw_req_unref(r);
}

/* ---- dispatch ---- */

/* Sends the encoded chat_req to the worker pool; holds the request's
 * call reference taken by gw_chat_dispatch(). */
static void
worker_call(struct gw_req *r)
{
	struct gw *gw = r->gw;
	char *buf = r->call_buf;
	int rv;

	/* Once the call is out, chat_done may end r on another thread:
	 * nothing of r is touched after gw_call() succeeds. */
	r->call_buf = NULL;
	rv = gw_call(gw, gw->worker_sock, buf, r->call_len,
	    (int)(gw->cfg->timeout_seconds * 1000 + 5000), chat_done, r);
	free(buf);
	if (rv != 0) {
		gw_limit_settle(r, 0);
		pthread_mutex_lock(&r->mtx);
		call_failed_locked(r, rv, false);
		gw_req_wake_locked(r);
		pthread_mutex_unlock(&r->mtx);
		gw_req_unref(r);
	}
}

enum MHD_Result
gw_chat_dispatch(struct gw_req *r)
{
	struct gw *gw = r->gw;
	const struct cfg *c = gw->cfg;
	struct gw_chat chat;
	struct gw_verr err;
	struct msg_chat_req m;
	char *buf = NULL;
	size_t len = 0;
	int rv;

	memset(&chat, 0, sizeof(chat));
	rv = gw_validate_chat(
	    &gw->vcfg, r->route, r->body.data, r->body.len, &chat, &err);
	buf_free(&r->body);
	if (rv == -EINVAL) {
		log_info(r->request_id, "request rejected",
		    LF_S("error", err.code), LF_I("status", err.status));
		r->no_retry = true;
		/* Malformed requests raise the sender's threat score. */
		if (err.status == 400)
			gw_limit_threat(r, "invalid_request",
			    SUBJECT_THREAT_INVALID_REQUEST, true);
		return gw_req_error(
		    r, err.status, err.code, err.message, err.param);
	}
	if (rv != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	if (r->token_bad) {
		free(chat.upstream);
		log_info(r->request_id, "bad bearer token");
		gw_limit_threat(
		    r, "auth_failure", SUBJECT_THREAT_AUTH_FAILURE, false);
		r->www_auth = true;
		r->no_retry = true;
		return gw_req_error(r, 401, "invalid_token",
		    "the bearer token is invalid or expired", NULL);
	}
	r->provider = chat.provider;
	snprintf(r->model, sizeof(r->model), "%s", chat.model->id);
	r->is_stream = chat.stream;
	atomic_fetch_add(&gw->n_chat, 1);
	if (atomic_load(&gw->worker_pipes) <= 0) {
		free(chat.upstream);
		log_warn(r->request_id, "no worker connected");
		r->retry_after_ms = 1000;
		return gw_req_error(r, 503, "no_workers", NULL, NULL);
	}
	if (chat.stream) {
		atomic_fetch_add(&gw->n_streams, 1);
		stab_insert(gw, r);
	}

	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "%s", r->request_id);
	snprintf(m.provider, sizeof(m.provider), "%s", chat.provider);
	snprintf(m.model, sizeof(m.model), "%s", chat.model->id);
	snprintf(m.api, sizeof(m.api), "%s", chat.api);
	m.stream = chat.stream;
	if (chat.stream)
		snprintf(
		    m.stream_url, sizeof(m.stream_url), "%s", c->stream_url);
	m.deadline_ms = c->timeout_seconds * 1000;
	snprintf(m.subject_type, sizeof(m.subject_type), "%s", r->subj_type);
	snprintf(m.subject_id, sizeof(m.subject_id), "%s", r->subj_id);
	snprintf(m.ip, sizeof(m.ip), "%s", r->ip);
	if (strcmp(chat.provider, "claude") == 0)
		snprintf(
		    m.anthropic_beta, sizeof(m.anthropic_beta), "%s", r->beta);
	m.payload = chat.upstream;
	m.payload_len = chat.upstream_len;
	rv = msg_chat_req_encode(&m, &buf, &len);
	if (rv != 0) {
		free(chat.upstream);
		log_error(
		    r->request_id, "chat_req not encoded", LF_I("error", rv));
		gw_stab_remove(gw, r);
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	}
	log_debug(r->request_id, "chat call", LF_S("provider", r->provider),
	    LF_S("model", r->model), LF_B("stream", r->is_stream),
	    LF_I("bytes", len));
	r->call_buf = buf;
	r->call_len = len;
	gw_req_ref(r); /* the calls' (limit check, then worker) */
	gw_req_wait(r);
	/* The limit check runs worker_call() when the request may go. */
	gw_limit_check(r, chat.upstream, chat.upstream_len, chat.max_tokens,
	    chat.model, worker_call);
	free(chat.upstream);
	return MHD_YES;
}

/* ---- stream chunks ---- */

void
gw_chat_chunk(struct gw *gw, const char *request_id, int64_t seq,
    const char *data, size_t len)
{
	struct gw_chunk *c, **pp;
	struct gw_req *r;
	bool cancel = false;

	pthread_mutex_lock(&gw->mtx);
	if ((r = stab_find_locked(gw, request_id)) != NULL)
		gw_req_ref(r);
	pthread_mutex_unlock(&gw->mtx);
	if (r == NULL) {
		log_debug(request_id, "chunk for no stream dropped",
		    LF_I("seq", seq));
		return;
	}
	pthread_mutex_lock(&r->mtx);
	if (r->closed || r->finished || r->aborted || seq < r->next_seq)
		goto out;
	if (r->buffered + len > GW_STREAM_MAX_BUFFERED) {
		free_chunks_locked(r);
		stream_abort_locked(r, "stream_buffer_full");
		if (!r->stream_started) {
			r->stream_started = true;
			if (r->state == GW_RS_WAITING)
				r->state = GW_RS_READY;
		}
		if (!r->cancel_sent) {
			r->cancel_sent = true;
			cancel = true;
		}
		goto wake;
	}
	if ((c = malloc(sizeof(*c) + len)) == NULL) {
		stream_abort_locked(r, "out_of_memory");
		if (!r->stream_started) {
			r->stream_started = true;
			if (r->state == GW_RS_WAITING)
				r->state = GW_RS_READY;
		}
		goto wake;
	}
	c->seq = seq;
	c->len = len;
	c->off = 0;
	memcpy(c->data, data, len);
	for (pp = &r->chunks; *pp != NULL && (*pp)->seq < seq;
	     pp = &(*pp)->next)
		;
	if (*pp != NULL && (*pp)->seq == seq) {
		free(c); /* a duplicate */
		goto out;
	}
	c->next = *pp;
	*pp = c;
	r->buffered += len;
	if (!r->stream_started) {
		r->stream_started = true;
		if (r->state == GW_RS_WAITING)
			r->state = GW_RS_READY;
	}
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	if (cancel)
		gw_publish_cancel(gw, request_id);
	gw_req_unref(r);
}

/* ---- the stream response ---- */

static void
build_tail_locked(struct gw_req *r)
{
	if (r->tail_built)
		return;
	r->tail_built = true;
	buf_reset(&r->tail);
	if (r->aborted)
		gw_fmt_stream_error(
		    &r->tail, r->provider, gw_code_message(r->abort_reason));
	if (r->route->provider != NULL)
		gw_fmt_aiproxy_event(&r->tail, r->request_id, r->cost_micro_usd,
		    gw_req_elapsed_ms(r));
}

ssize_t
gw_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct gw_req *r = cls;
	struct gw_chunk *c;
	size_t n = 0, k;

	(void)pos;
	pthread_mutex_lock(&r->mtx);
	if (r->closed) {
		pthread_mutex_unlock(&r->mtx);
		return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	while (n < max && (c = r->chunks) != NULL && c->seq == r->next_seq) {
		k = c->len - c->off;
		if (k > max - n)
			k = max - n;
		memcpy(buf + n, c->data + c->off, k);
		c->off += k;
		n += k;
		if (c->off == c->len) {
			r->chunks = c->next;
			r->buffered -= c->len;
			r->next_seq++;
			free(c);
		}
	}
	if (n > 0)
		goto out;
	if (r->aborted || (r->resp_done && r->next_seq >= r->chunks_expected)) {
		build_tail_locked(r);
		if (r->tail_off < r->tail.len) {
			n = r->tail.len - r->tail_off;
			if (n > max)
				n = max;
			memcpy(buf, r->tail.data + r->tail_off, n);
			r->tail_off += n;
			goto out;
		}
		r->finished = true;
		free_chunks_locked(r);
		pthread_mutex_unlock(&r->mtx);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	/* Nothing to write yet: the next chunk (or the end) resumes us. */
	r->suspended = true;
	MHD_suspend_connection(r->conn);
	pthread_mutex_unlock(&r->mtx);
	return 0;
out:
	r->bytes_out += n;
	pthread_mutex_unlock(&r->mtx);
	return (ssize_t)n;
}

void
gw_stream_free(void *cls)
{
	gw_req_unref(cls);
}

/* ---- the sweeper ---- */

void
gw_chat_sweep(struct gw *gw)
{
	int64_t now = clock_mono_us();
	struct gw_req *r;

	pthread_mutex_lock(&gw->mtx);
	for (r = gw->live; r != NULL; r = r->next) {
		pthread_mutex_lock(&r->mtx);
		if (r->is_stream && r->resp_done && !r->aborted &&
		    !r->finished && !r->closed &&
		    r->next_seq < r->chunks_expected &&
		    now - r->resp_done_us > GW_STREAM_GRACE_MS * 1000) {
			stream_abort_locked(r, "stream_chunks_lost");
			gw_req_wake_locked(r);
		}
		pthread_mutex_unlock(&r->mtx);
	}
	pthread_mutex_unlock(&gw->mtx);
}
