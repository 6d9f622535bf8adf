#include "pw_engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "pw_push.h"
#include "pw_xlate.h"

#define PW_CONNECT_TIMEOUT_MS 10000
/* Idle upstream connections a worker keeps for reuse. */
#define PW_IDLE_CONNS 256L
/* A streamed answer may be longer than a JSON one, never unbounded. */
#define PW_STREAM_MAX (64u << 20)
/* Chunks not yet taken by the gateway: pause the transfer above HIGH,
 * resume at LOW. */
#define PW_PAUSE_HIGH   (1u << 20)
#define PW_PAUSE_LOW    (256u << 10)
#define PW_PUSH_SENDBUF 8192
/* Cancels that found no call, kept this long for a call still on its way. */
#define PW_EARLY_CANCELS   256
#define PW_EARLY_CANCEL_MS 2000
#define PW_POLL_MS         1000
/* Retries: backoff base and cap, and the least time an attempt needs
 * before the deadline to be worth starting. */
#define PW_BACKOFF_BASE_MS 500
#define PW_BACKOFF_CAP_MS  8000
#define PW_ATTEMPT_MIN_MS  100

struct cancel_req {
	STAILQ_ENTRY(cancel_req) link;
	char request_id[PROTO_ID_MAX + 1];
};

struct early_cancel {
	char request_id[PROTO_ID_MAX + 1];
	int64_t expires_ms;
};

struct pw_engine {
	const char *url[PW_TARGETS];
	const char *key[PW_TARGETS]; /* NULL: the target is not set up */
	struct pw_health *health;
	int max_retries;
	const char *xmap;
	const struct model_table *models;
	char *noproxy;
	pw_engine_done_fn done;
	void *arg;
	CURLM *multi;
	pthread_t thread;
	bool thread_started;
	struct pw_push_cache *pushes;
	size_t pause_high, pause_low;

	pthread_mutex_t mu; /* guards the queues and flags below */
	STAILQ_HEAD(, pw_cmd) cmds;
	STAILQ_HEAD(, cancel_req) cancels;
	bool abort_all;
	bool quit;

	/* curl thread only */
	TAILQ_HEAD(, pw_call) active;
	TAILQ_HEAD(, pw_call) waiting; /* retries, by due time */
	uint64_t rng;
	bool closing; /* after abort_all: every call ends at once */
	struct early_cancel early[PW_EARLY_CANCELS];
	size_t early_next;

	atomic_uint_fast64_t chunks, chunks_dropped, cancels_done, pauses;
	atomic_uint_fast64_t nactive;
};

int
pw_endpoint_url(const char *base, enum pw_prov p, char **ret)
{
	const char *path =
	    p == PW_PROV_CLAUDE ? "/messages" : "/chat/completions";
	size_t n = strlen(base);
	struct buf b;

	while (n > 0 && base[n - 1] == '/')
		n--;
	buf_init(&b, 4096);
	if (buf_append(&b, base, n) != 0)
		return -ENAMETOOLONG;
	if ((n < 3 || strncmp(base + n - 3, "/v1", 3) != 0) &&
	    buf_append_str(&b, "/v1") != 0) {
		buf_free(&b);
		return -ENAMETOOLONG;
	}
	if (buf_append_str(&b, path) != 0) {
		buf_free(&b);
		return -ENAMETOOLONG;
	}
	*ret = buf_steal(&b, NULL);
	return *ret != NULL ? 0 : -ENOMEM;
}

/* ---- hand-over to the curl thread ---- */

static void
engine_wake(struct pw_engine *e)
{
	curl_multi_wakeup(e->multi);
}

static void
engine_queue(struct pw_engine *e, struct pw_cmd *cmd)
{
	pthread_mutex_lock(&e->mu);
	STAILQ_INSERT_TAIL(&e->cmds, cmd, link);
	pthread_mutex_unlock(&e->mu);
	engine_wake(e);
}

void
pw_engine_submit(struct pw_engine *e, struct pw_call *c)
{
	engine_queue(e, &c->new_cmd);
}

void
pw_engine_cancel(struct pw_engine *e, const char *request_id)
{
	struct cancel_req *r;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		log_error(request_id, "cancel lost: out of memory");
		return;
	}
	snprintf(r->request_id, sizeof(r->request_id), "%s", request_id);
	pthread_mutex_lock(&e->mu);
	STAILQ_INSERT_TAIL(&e->cancels, r, link);
	pthread_mutex_unlock(&e->mu);
	engine_wake(e);
}

void
pw_engine_abort_all(struct pw_engine *e)
{
	pthread_mutex_lock(&e->mu);
	e->abort_all = true;
	pthread_mutex_unlock(&e->mu);
	engine_wake(e);
}

/* Push callback (any thread): a chunk left or was dropped. */
static void
engine_chunk_sent(void *arg, void *tag, size_t n, bool ok)
{
	struct pw_engine *e = arg;
	struct pw_call *c = tag;
	size_t left = atomic_fetch_sub(&c->pending_bytes, n) - n;

	if (!ok)
		atomic_fetch_add(&e->chunks_dropped, 1);
	if (left <= e->pause_low && !atomic_load(&c->finished) &&
	    atomic_exchange(&c->paused, false)) {
		pw_call_ref(c);
		engine_queue(e, &c->unpause_cmd);
	}
	pw_call_unref(c);
}

/* ---- curl callbacks (curl thread) ---- */

static void
hdr_copy(char *dst, size_t dstlen, const char *v, size_t n)
{
	if (n >= dstlen)
		n = dstlen - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static bool
id_chars_ok(const char *v, size_t n)
{
	if (n == 0 || n > PROTO_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = v[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			(ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
			ch == ':' || ch == '-'))
			return false;
	}
	return true;
}

static bool
hdr_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct pw_call *c = arg;
	size_t n = size * nmemb, nlen, vlen;
	const char *colon, *v;

	if (n >= 5 && strncasecmp(p, "HTTP/", 5) == 0) {
		/* A new response (after a 100 Continue, say): start over. */
		c->content_type[0] = '\0';
		c->retry_after[0] = '\0';
		c->retry_after_ms[0] = '\0';
		c->upstream_request_id[0] = '\0';
		return n;
	}
	if ((colon = memchr(p, ':', n)) == NULL)
		return n;
	nlen = (size_t)(colon - p);
	v = colon + 1;
	vlen = n - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' ||
			       v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	if (hdr_is(p, nlen, "content-type")) {
		hdr_copy(c->content_type, sizeof(c->content_type), v, vlen);
	} else if (hdr_is(p, nlen, "retry-after")) {
		hdr_copy(c->retry_after, sizeof(c->retry_after), v, vlen);
	} else if (hdr_is(p, nlen, "retry-after-ms")) {
		hdr_copy(c->retry_after_ms, sizeof(c->retry_after_ms), v, vlen);
	} else if ((hdr_is(p, nlen, "request-id") ||
		       hdr_is(p, nlen, "x-request-id")) &&
		   c->upstream_request_id[0] == '\0' && id_chars_ok(v, vlen)) {
		hdr_copy(c->upstream_request_id, sizeof(c->upstream_request_id),
		    v, vlen);
	}
	return n;
}

/* First body bytes: stream them, or keep them (JSON answer, error). */
static void
call_decide_mode(struct pw_call *c)
{
	long code = 0;

	c->mode_decided = true;
	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
	c->http_status = code;
	c->streaming =
	    c->req.stream && code == 200 &&
	    strncasecmp(c->content_type, "text/event-stream", 17) == 0;
	if (c->streaming) {
		pw_stream_usage_init(&c->su, c->prov);
		c->su_init = true;
	}
}

static int
chunk_send(struct pw_engine *e, struct pw_call *c, const char *p, size_t n)
{
	struct msg_stream_chunk m;
	nng_msg *msg;
	char *enc;
	size_t len;
	int rv;

	if (c->push == NULL &&
	    (rv = pw_push_get(e->pushes, c->req.stream_url, &c->push)) != 0) {
		log_error(c->req.request_id, "no push socket for the stream",
		    LF_S("stream_url", c->req.stream_url),
		    LF_S("error", strerror(-rv)));
		return rv;
	}
	memset(&m, 0, sizeof(m));
	memcpy(m.request_id, c->req.request_id, sizeof(m.request_id));
	m.seq = c->chunks;
	m.payload = p;
	m.payload_len = n;
	if ((rv = msg_stream_chunk_encode(&m, &enc, &len)) != 0)
		return rv;
	rv = nngx_msg_new(enc, len, &msg);
	free(enc);
	if (rv != 0)
		return rv;
	c->chunks++;
	c->client_started = true;
	atomic_fetch_add(&e->chunks, 1);
	atomic_fetch_add(&c->pending_bytes, n);
	pw_call_ref(c);
	pw_push_send(c->push, msg, c, n);
	return 0;
}

static size_t
on_write(char *p, size_t size, size_t nmemb, void *arg)
{
	struct pw_call *c = arg;
	struct pw_engine *e = c->engine;
	size_t n = size * nmemb;

	if (n == 0)
		return 0;
	c->got_bytes = true;
	if (!c->mode_decided)
		call_decide_mode(c);
	if (!c->streaming) {
		if (buf_append(&c->body, p, n) != 0) {
			c->fail = PW_FAIL_TOO_LARGE;
			return 0;
		}
		return n;
	}
	if (c->stream_bytes + n > PW_STREAM_MAX) {
		c->fail = PW_FAIL_TOO_LARGE;
		return 0;
	}
	if (atomic_load(&c->pending_bytes) > e->pause_high) {
		/* Paused until the gateway took enough (see
		 * engine_chunk_sent); re-checked so that a drain racing
		 * with this cannot leave the call paused for good. */
		atomic_store(&c->paused, true);
		if (!(atomic_load(&c->pending_bytes) <= e->pause_low &&
			atomic_exchange(&c->paused, false))) {
			atomic_fetch_add(&e->pauses, 1);
			return CURL_WRITEFUNC_PAUSE;
		}
	}
	pw_stream_usage_feed(&c->su, p, n);
	if (chunk_send(e, c, p, n) != 0) {
		c->fail = PW_FAIL_INTERNAL;
		return 0;
	}
	c->stream_bytes += n;
	return n;
}

/* ---- starting and finishing calls (curl thread) ---- */

/* Appends "name: value" (value may be NULL: "name:", which removes a
 * header curl would add). */
static int
hdr_add(struct pw_call *c, const char *name, const char *v)
{
	struct curl_slist *l;
	struct buf b;
	int rv;

	buf_init(&b, 2048);
	if ((rv = buf_append_str(&b, name)) != 0 ||
	    (rv = buf_append_str(&b, ":")) != 0 ||
	    (v != NULL && ((rv = buf_append_str(&b, " ")) != 0 ||
			      (rv = buf_append_str(&b, v)) != 0))) {
		if (b.data != NULL)
			explicit_bzero(b.data, b.cap);
		buf_free(&b);
		return rv;
	}
	l = curl_slist_append(c->hdrs, b.data);
	explicit_bzero(b.data, b.cap);
	buf_free(&b);
	if (l == NULL)
		return -ENOMEM;
	c->hdrs = l;
	return 0;
}

static int
call_headers(struct pw_engine *e, struct pw_call *c)
{
	const char *key = e->key[c->target];
	int rv;

	char bearer[600];

	if (PW_TARGET_PROV(c->target) == PW_PROV_CLAUDE) {
		if ((rv = hdr_add(c, "x-api-key", key)) != 0 ||
		    (rv = hdr_add(c, "anthropic-version", "2023-06-01")) != 0)
			return rv;
		if (c->req.anthropic_beta[0] != '\0' &&
		    (rv = hdr_add(
			 c, "anthropic-beta", c->req.anthropic_beta)) != 0)
			return rv;
	} else {
		rv = snprintf(bearer, sizeof(bearer), "Bearer %s", key);
		rv = rv < 0 || (size_t)rv >= sizeof(bearer)
			 ? -ENAMETOOLONG
			 : hdr_add(c, "Authorization", bearer);
		explicit_bzero(bearer, sizeof(bearer));
		if (rv != 0)
			return rv;
	}
	if ((rv = hdr_add(c, "content-type", "application/json")) != 0 ||
	    (rv = hdr_add(c, "x-request-id", c->req.request_id)) != 0 ||
	    (rv = hdr_add(c, "Expect", NULL)) != 0)
		return rv;
	return 0;
}

static int
call_setup(struct pw_engine *e, struct pw_call *c)
{
	const char *url = e->url[c->target];
	long deadline = (long)(c->req.deadline_ms -
			       (clock_mono_us() - c->t_recv_us) / 1000);
	CURL *h;
	int rv;

	if (e->key[c->target] == NULL || url == NULL)
		return -ENOKEY;
	if (deadline < 1)
		deadline = 1;
	if ((h = curl_easy_init()) == NULL)
		return -ENOMEM;
	c->easy = h;
	if ((rv = call_headers(e, c)) != 0)
		return rv;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	if (PW_TARGET_PROV(c->target) != c->prov) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->xbody);
		curl_easy_setopt(
		    h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->xbody_len);
	} else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->req.payload);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)c->req.payload_len);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(h, CURLOPT_PRIVATE, c);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, deadline);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
	    deadline < PW_CONNECT_TIMEOUT_MS ? deadline
					     : (long)PW_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
	    strncasecmp(url, "http://", 7) == 0 ? (long)CURL_HTTP_VERSION_1_1
						: (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, e->noproxy);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "aiproxy-provider-worker/0.1");
	if (curl_multi_add_handle(e->multi, h) != CURLM_OK)
		return -ENOMEM;
	c->in_multi = true;
	c->t_upstream_us = clock_mono_us();
	TAILQ_INSERT_TAIL(&e->active, c, link);
	atomic_fetch_add(&e->nactive, 1);
	return 0;
}

/* Replaces every copy of key in b with "[redacted]": a provider error
 * body may quote the key (OpenAI's 401 does, in part). */
static void
body_scrub(struct buf *b, const char *key)
{
	static const char red[] = "[redacted]";
	size_t klen, off = 0;
	struct buf out;
	const char *hit;

	if (key == NULL || (klen = strlen(key)) == 0 || b->len < klen ||
	    memmem(b->data, b->len, key, klen) == NULL)
		return;
	buf_init(&out, b->max);
	while ((hit = memmem(b->data + off, b->len - off, key, klen)) != NULL) {
		size_t seg = (size_t)(hit - (b->data + off));

		if (buf_append(&out, b->data + off, seg) != 0 ||
		    buf_append(&out, red, sizeof(red) - 1) != 0)
			goto fail;
		off += seg + klen;
	}
	if (buf_append(&out, b->data + off, b->len - off) != 0)
		goto fail;
	buf_free(b);
	*b = out;
	return;
fail:
	/* Better no body than one that may hold the key. */
	buf_free(&out);
	buf_reset(b);
}

static void
call_result(struct pw_engine *e, struct pw_call *c, CURLcode rc)
{
	enum pw_fail fail;
	bool streamed = c->chunks > 0;
	bool http_ok = c->http_status >= 200 && c->http_status <= 299;
	bool cross = PW_TARGET_PROV(c->target) != c->prov && c->attempts > 0;

	fail =
	    c->fail != PW_FAIL_NONE ? c->fail : pw_map_curl(rc, c->got_bytes);
	if (fail == PW_FAIL_NONE && !http_ok) {
		c->out = pw_map_http(c->http_status);
		snprintf(c->error_message, sizeof(c->error_message),
		    "%s (HTTP %ld)", c->out.message, c->http_status);
	} else if (fail == PW_FAIL_NONE && c->req.stream && !c->streaming) {
		c->out = (struct pw_outcome){502, "upstream_error",
		    "the provider answered a stream request without a stream"};
		snprintf(c->error_message, sizeof(c->error_message), "%s",
		    c->out.message);
	} else if (fail == PW_FAIL_NONE && c->streaming && c->su.error_seen) {
		/* The provider's own error event already went out. */
		c->out = (struct pw_outcome){502, "upstream_stream_error",
		    "the provider ended the stream with an error"};
		snprintf(c->error_message, sizeof(c->error_message), "%s",
		    c->su.error_message);
	} else if (fail == PW_FAIL_NONE) {
		c->out = pw_map_http(c->http_status);
		c->error_message[0] = '\0';
	} else {
		/* What arrived is no complete answer: never pass it on. */
		buf_reset(&c->body);
		c->out = pw_map_fail(fail, streamed);
		snprintf(c->error_message, sizeof(c->error_message), "%s",
		    pw_map_fail(fail, false).message);
		if (streamed && fail != PW_FAIL_CANCELLED) {
			struct buf ev;

			buf_init(&ev, 4096);
			if (pw_error_event(c->prov, c->error_message,
				pw_sse_at_boundary(&c->su.sse), &ev) == 0)
				chunk_send(e, c, ev.data, ev.len);
			buf_free(&ev);
		}
	}

	memset(&c->usage, 0, sizeof(c->usage));
	if (c->su_init)
		c->usage = c->su.usage;
	else if (http_ok && c->body.len > 0 &&
		 pw_usage_from_body(PW_TARGET_PROV(c->target), c->body.data,
		     c->body.len, &c->usage) != 0 &&
		 c->out.status == 200)
		log_warn(
		    c->req.request_id, "no usage in the provider's answer");
	if (cross) {
		c->cost_micro_usd =
		    c->xmodel != NULL ? models_cost(c->xmodel, &c->usage.tokens)
				      : 0;
		/* The client asked in its provider's shape: answer in it;
		 * the other provider's error body has no place there. */
		if (c->out.status != 200 ||
		    (c->prov == PW_PROV_CLAUDE
			    ? pw_xlate_resp_openai_to_claude(
				  c->body.data, c->body.len, &c->body)
			    : pw_xlate_resp_claude_to_openai(
				  c->body.data, c->body.len, &c->body)) != 0)
			buf_reset(&c->body);
	} else {
		c->cost_micro_usd =
		    c->model != NULL ? models_cost(c->model, &c->usage.tokens)
				     : 0;
	}
	if (fail != PW_FAIL_BREAKER)
		c->retry_after_ms_val = 0;
	if (c->retry_after_ms[0] != '\0' || c->retry_after[0] != '\0')
		pw_retry_after_parse(
		    c->retry_after_ms[0] ? c->retry_after_ms : NULL,
		    c->retry_after[0] ? c->retry_after : NULL, time(NULL),
		    &c->retry_after_ms_val);
	if (fail == PW_FAIL_CANCELLED || fail == PW_FAIL_STOPPING)
		c->status_word = "aborted";
	else if (c->out.status == 200)
		c->status_word = "ok";
	else
		c->status_word = "error";
	c->fail = fail;
	if (fail == PW_FAIL_NONE)
		c->errbuf[0] = '\0';
	for (int t = 0; t < PW_TARGETS; t++)
		body_scrub(&c->body, e->key[t]);
}

/* ---- attempts: breakers, retries, failover (curl thread) ---- */

static uint64_t
engine_rand(struct pw_engine *e)
{
	/* xorshift64* */
	e->rng ^= e->rng >> 12;
	e->rng ^= e->rng << 25;
	e->rng ^= e->rng >> 27;
	return e->rng * 2685821657736338717ULL;
}

static bool
target_usable(struct pw_engine *e, int t)
{
	return e->key[t] != NULL && e->url[t] != NULL;
}

/* Whether t's breaker would refuse an attempt now. */
static bool
target_refuses(struct pw_engine *e, int t)
{
	return e->health != NULL &&
	       pw_health_refuses(e->health, t, clock_real_ms(), NULL);
}

/* Asks t's breaker; on admission c's next attempt goes to t. */
static bool
attempt_admit(struct pw_engine *e, struct pw_call *c, int t, int64_t *retry)
{
	enum pw_breaker_verdict v = PW_BREAKER_ALLOW;

	if (!target_usable(e, t))
		return false;
	if (e->health != NULL)
		v = pw_health_admit(e->health, t, clock_real_ms(), retry);
	if (v == PW_BREAKER_REJECT)
		return false;
	c->target = t;
	c->probe = v == PW_BREAKER_PROBE;
	c->attempt_live = e->health != NULL;
	c->fallback = PW_TARGET_SLOT(t) == PW_SLOT_FALLBACK ||
		      PW_TARGET_PROV(t) != c->prov;
	return true;
}

/* The other provider's primary upstream: where c fails over to. */
#define PW_XTARGET          PW_TARGET(1 - (int)c->prov, PW_SLOT_PRIMARY)
#define PW_XLATE_MAX_TOKENS 1024 /* an OpenAI call that names none */

/* Whether c may fail over to the other provider; prepares the translated
 * request on first use. */
static bool
cross_ready(struct pw_engine *e, struct pw_call *c)
{
	enum pw_prov other =
	    c->prov == PW_PROV_CLAUDE ? PW_PROV_OPENAI : PW_PROV_CLAUDE;
	int rv;

	if (c->req.stream || e->xmap == NULL || e->models == NULL ||
	    c->xfailed || c->model == NULL || !target_usable(e, PW_XTARGET))
		return false;
	if (c->xbody != NULL)
		return true;
	c->xfailed = true;
	if ((c->xmodel = models_fallback(
		 e->models, e->xmap, c->model, pw_prov_str(other))) == NULL)
		return false;
	if (c->prov == PW_PROV_CLAUDE)
		rv = pw_xlate_req_claude_to_openai(c->req.payload,
		    c->req.payload_len, c->xmodel->id, &c->xbody,
		    &c->xbody_len);
	else
		rv = pw_xlate_req_openai_to_claude(c->req.payload,
		    c->req.payload_len, c->xmodel->id, PW_XLATE_MAX_TOKENS,
		    &c->xbody, &c->xbody_len);
	if (rv != 0) {
		log_info(c->req.request_id, "no cross-provider failover",
		    LF_S("error", strerror(-rv)));
		return false;
	}
	c->xfailed = false;
	return true;
}

/* Forgets the previous attempt's transfer before the next one. */
static void
attempt_reset(struct pw_call *c)
{
	curl_slist_free_all(c->hdrs);
	c->hdrs = NULL;
	c->http_status = 0;
	c->got_bytes = false;
	c->mode_decided = false;
	c->streaming = false;
	c->content_type[0] = '\0';
	c->retry_after[0] = '\0';
	c->retry_after_ms[0] = '\0';
	c->upstream_request_id[0] = '\0';
	buf_reset(&c->body);
	if (c->su_init) {
		pw_stream_usage_free(&c->su);
		c->su_init = false;
	}
	c->stream_bytes = 0;
	c->fail = PW_FAIL_NONE;
	c->errbuf[0] = '\0';
	c->error_message[0] = '\0';
	c->retry_after_ms_val = 0;
	c->upstream_ms = 0;
}

/* What the attempt that just ended tells its breaker. */
static void
attempt_account(struct pw_engine *e, struct pw_call *c)
{
	bool failure = pw_map_breaker_failure(c->http_status, c->fail) ||
		       (c->su_init && c->su.error_seen);

	pw_health_done(e->health, c->target, clock_real_ms(), c->probe,
	    pw_map_breaker_verdict(c->fail), failure, c->upstream_ms,
	    c->http_status > 0 ? c->http_status : c->out.status,
	    c->out.status != 200 ? c->out.code : NULL, c->error_message);
	c->probe = false;
}

static void call_finish(struct pw_engine *e, struct pw_call *c, CURLcode rc);

/* Starts the admitted attempt on c->target. */
static void
attempt_start(struct pw_engine *e, struct pw_call *c)
{
	int rv;

	c->attempts++;
	if (PW_TARGET_PROV(c->target) != c->prov)
		c->xtries++;
	else
		c->tries[PW_TARGET_SLOT(c->target)]++;
	if ((rv = call_setup(e, c)) != 0) {
		log_error(c->req.request_id, "cannot start the upstream call",
		    LF_S("error", strerror(-rv)));
		c->fail = PW_FAIL_INTERNAL;
		call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
	}
}

/* Full-jitter exponential backoff for the retry after n attempts. */
static int64_t
backoff_ms(struct pw_engine *e, int n)
{
	int64_t cap = PW_BACKOFF_BASE_MS;

	for (int i = 1; i < n && cap < PW_BACKOFF_CAP_MS; i++)
		cap *= 2;
	if (cap > PW_BACKOFF_CAP_MS)
		cap = PW_BACKOFF_CAP_MS;
	return (int64_t)(engine_rand(e) % (uint64_t)(cap + 1));
}

/*
 * After a failed attempt: another one, if the failure is worth it,
 * nothing reached the client, the budget and the deadline allow and a
 * breaker does not refuse.  An untried fallback goes at once; a retry of
 * the same target waits max(backoff, the upstream's retry-after).
 * Returns true when c waits in the retry list.
 */
static bool
retry_schedule(struct pw_engine *e, struct pw_call *c)
{
	int slot = PW_TARGET_SLOT(c->target), other = 1 - slot;
	int ot = PW_TARGET(c->prov, other);
	int64_t now = clock_mono_ms(), left, delay, ra = c->retry_after_ms_val;
	bool same_ok, other_ok;
	struct pw_call *w;
	int next;

	if (c->attempts == 0 || e->closing || c->client_started ||
	    c->chunks > 0 || !pw_map_retryable(c->http_status, c->fail) ||
	    PW_TARGET_PROV(c->target) != c->prov)
		return false;
	left = c->req.deadline_ms - (now - c->t_recv_us / 1000);
	same_ok =
	    c->tries[slot] <= e->max_retries && !target_refuses(e, c->target);
	other_ok = target_usable(e, ot) && c->tries[other] <= e->max_retries &&
		   !target_refuses(e, ot);
	if (other_ok && c->tries[other] == 0) {
		next = other;
		delay = 0;
	} else if (same_ok || other_ok) {
		next = same_ok ? slot : other;
		delay = backoff_ms(e, c->attempts);
		if (next == slot && ra > delay)
			delay = ra;
	} else if (c->xtries == 0 && !target_refuses(e, PW_XTARGET) &&
		   cross_ready(e, c)) {
		next = -1; /* the other provider */
		delay = 0;
	} else {
		return false;
	}
	if (delay + PW_ATTEMPT_MIN_MS > left)
		return false;
	c->next_target = next < 0 ? PW_XTARGET : PW_TARGET(c->prov, next);
	c->due_ms = now + delay;
	TAILQ_FOREACH(w, &e->waiting, link) {
		if (w->due_ms > c->due_ms)
			break;
	}
	if (w != NULL)
		TAILQ_INSERT_BEFORE(w, c, link);
	else
		TAILQ_INSERT_TAIL(&e->waiting, c, link);
	log_info(c->req.request_id, "upstream attempt failed, retrying",
	    LF_I("attempt", c->attempts), LF_I("status", c->http_status),
	    LF_S("failure", pw_fail_str(c->fail)),
	    LF_S("next",
		next < 0 ? "other_provider" : pw_slot_str((enum pw_slot)next)),
	    LF_I("delay_ms", delay), LF_I("retry_after_ms", ra));
	return true;
}

/* Ends c for good: the done callback, the engine's reference. */
static void
call_complete(struct pw_engine *e, struct pw_call *c)
{
	atomic_store(&c->finished, true);
	e->done(e->arg, c);
	pw_call_release(c);
	pw_call_unref(c);
}

/* A waiting retry is due: start it, unless every breaker refuses now
 * (then the last answer stands). */
static void
retry_start(struct pw_engine *e, struct pw_call *c)
{
	int slot = PW_TARGET_SLOT(c->next_target), other = 1 - slot;
	bool cross = PW_TARGET_PROV(c->next_target) != c->prov;

	if (!attempt_admit(e, c, c->next_target, NULL) &&
	    (cross ||
		!(c->tries[other] <= e->max_retries &&
		    attempt_admit(e, c, PW_TARGET(c->prov, other), NULL)))) {
		log_info(
		    c->req.request_id, "retry dropped: the breaker is open");
		call_complete(e, c);
		return;
	}
	attempt_reset(c);
	attempt_start(e, c);
}

/* Starts the retries that are due; the milliseconds until the next. */
static int
waiting_run(struct pw_engine *e)
{
	int64_t now = clock_mono_ms();
	struct pw_call *c;

	while ((c = TAILQ_FIRST(&e->waiting)) != NULL && c->due_ms <= now) {
		TAILQ_REMOVE(&e->waiting, c, link);
		retry_start(e, c);
	}
	if ((c = TAILQ_FIRST(&e->waiting)) == NULL ||
	    c->due_ms - now >= PW_POLL_MS)
		return PW_POLL_MS;
	return c->due_ms > now ? (int)(c->due_ms - now) : 0;
}

/* Ends an attempt: its result, its breaker's account, then a retry or
 * the end of c.  rc is curl's result when a transfer ran. */
static void
call_finish(struct pw_engine *e, struct pw_call *c, CURLcode rc)
{
	if (c->in_multi) {
		long code = 0;

		curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code != 0)
			c->http_status = code;
		curl_multi_remove_handle(e->multi, c->easy);
		TAILQ_REMOVE(&e->active, c, link);
		atomic_fetch_sub(&e->nactive, 1);
		c->in_multi = false;
		c->upstream_ms = (clock_mono_us() - c->t_upstream_us) / 1000;
	}
	/* The request body is borrowed until the reply: curl lets go now. */
	if (c->easy != NULL) {
		curl_easy_cleanup(c->easy);
		c->easy = NULL;
	}
	call_result(e, c, rc);
	if (c->attempt_live) {
		c->attempt_live = false;
		attempt_account(e, c);
	}
	if (retry_schedule(e, c))
		return;
	call_complete(e, c);
}

static bool
early_cancel_take(struct pw_engine *e, const char *request_id)
{
	int64_t now = clock_mono_ms();

	for (size_t i = 0; i < PW_EARLY_CANCELS; i++) {
		struct early_cancel *ec = &e->early[i];

		if (ec->expires_ms > now &&
		    strcmp(ec->request_id, request_id) == 0) {
			ec->expires_ms = 0;
			return true;
		}
	}
	return false;
}

static void
call_start(struct pw_engine *e, struct pw_call *c)
{
	int pt = PW_TARGET(c->prov, PW_SLOT_PRIMARY);
	int ft = PW_TARGET(c->prov, PW_SLOT_FALLBACK);
	int64_t retry = 1000;

	c->engine = e;
	c->target = pt;
	if (e->closing) {
		c->fail = PW_FAIL_STOPPING;
	} else if (early_cancel_take(e, c->req.request_id)) {
		c->fail = PW_FAIL_CANCELLED;
		atomic_fetch_add(&e->cancels_done, 1);
	} else {
		if (e->health != NULL)
			pw_health_count_request(e->health, pt, clock_real_ms());
		if (attempt_admit(e, c, pt, &retry) ||
		    attempt_admit(e, c, ft, NULL) ||
		    (!target_refuses(e, PW_XTARGET) && cross_ready(e, c) &&
			attempt_admit(e, c, PW_XTARGET, NULL))) {
			attempt_start(e, c);
			return;
		}
		/* Fail fast: no upstream call while the breaker is open. */
		c->fail = PW_FAIL_BREAKER;
		c->retry_after_ms_val = retry;
	}
	call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
}

static void
cancel_apply(struct pw_engine *e, const char *request_id)
{
	struct pw_call *c, *next;
	bool found = false;

	for (c = TAILQ_FIRST(&e->active); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (strcmp(c->req.request_id, request_id) != 0)
			continue;
		found = true;
		c->fail = PW_FAIL_CANCELLED;
		atomic_fetch_add(&e->cancels_done, 1);
		call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
	}
	for (c = TAILQ_FIRST(&e->waiting); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (strcmp(c->req.request_id, request_id) != 0)
			continue;
		found = true;
		TAILQ_REMOVE(&e->waiting, c, link);
		c->fail = PW_FAIL_CANCELLED;
		atomic_fetch_add(&e->cancels_done, 1);
		call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
	}
	if (!found) {
		struct early_cancel *ec = &e->early[e->early_next];

		e->early_next = (e->early_next + 1) % PW_EARLY_CANCELS;
		snprintf(
		    ec->request_id, sizeof(ec->request_id), "%s", request_id);
		ec->expires_ms = clock_mono_ms() + PW_EARLY_CANCEL_MS;
	}
}

static void
abort_active(struct pw_engine *e)
{
	struct pw_call *c;

	while ((c = TAILQ_FIRST(&e->active)) != NULL) {
		c->fail = PW_FAIL_STOPPING;
		call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
	}
	while ((c = TAILQ_FIRST(&e->waiting)) != NULL) {
		TAILQ_REMOVE(&e->waiting, c, link);
		c->fail = PW_FAIL_STOPPING;
		call_finish(e, c, CURLE_ABORTED_BY_CALLBACK);
	}
}

static void
cmd_run(struct pw_engine *e, struct pw_cmd *cmd)
{
	struct pw_call *c = cmd->call;

	switch (cmd->kind) {
	case PW_CMD_NEW:
		call_start(e, c);
		break;
	case PW_CMD_UNPAUSE:
		if (c->in_multi)
			curl_easy_pause(c->easy, CURLPAUSE_CONT);
		pw_call_unref(c);
		break;
	}
}

static void *
engine_main(void *arg)
{
	struct pw_engine *e = arg;

	for (;;) {
		STAILQ_HEAD(, pw_cmd) cmds = STAILQ_HEAD_INITIALIZER(cmds);
		STAILQ_HEAD(, cancel_req)
		cancels = STAILQ_HEAD_INITIALIZER(cancels);
		struct pw_cmd *cmd;
		struct cancel_req *cr;
		struct CURLMsg *m;
		bool quit, abort_all;
		int running, left, wait_ms;

		pthread_mutex_lock(&e->mu);
		STAILQ_CONCAT(&cmds, &e->cmds);
		STAILQ_CONCAT(&cancels, &e->cancels);
		quit = e->quit;
		abort_all = e->abort_all;
		pthread_mutex_unlock(&e->mu);

		if ((abort_all || quit) && !e->closing) {
			e->closing = true;
			abort_active(e);
		}
		while ((cmd = STAILQ_FIRST(&cmds)) != NULL) {
			STAILQ_REMOVE_HEAD(&cmds, link);
			cmd_run(e, cmd);
		}
		while ((cr = STAILQ_FIRST(&cancels)) != NULL) {
			STAILQ_REMOVE_HEAD(&cancels, link);
			cancel_apply(e, cr->request_id);
			free(cr);
		}
		if (quit && TAILQ_EMPTY(&e->active) && TAILQ_EMPTY(&e->waiting))
			break;
		wait_ms = waiting_run(e);
		curl_multi_perform(e->multi, &running);
		while ((m = curl_multi_info_read(e->multi, &left)) != NULL) {
			struct pw_call *c = NULL;
			CURLcode rc = m->data.result;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &c);
			if (c != NULL)
				call_finish(e, c, rc);
		}
		/* Calls finished above may have scheduled retries. */
		if (!TAILQ_EMPTY(&e->waiting)) {
			int64_t d =
			    TAILQ_FIRST(&e->waiting)->due_ms - clock_mono_ms();

			if (d < wait_ms)
				wait_ms = d > 0 ? (int)d : 0;
		}
		curl_multi_poll(e->multi, NULL, 0, wait_ms, NULL);
	}
	return NULL;
}

/* ---- life cycle ---- */

static char *
noproxy_build(void)
{
	const char *env = getenv("no_proxy");
	struct buf b;

	if (env == NULL)
		env = getenv("NO_PROXY");
	buf_init(&b, 8192);
	/* Loopback never goes through a proxy (the tests, a local mock). */
	if (env != NULL && env[0] != '\0' &&
	    (buf_append_str(&b, env) != 0 || buf_append_str(&b, ",") != 0))
		buf_reset(&b);
	if (buf_append_str(&b, "127.0.0.1,localhost,::1") != 0) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b, NULL);
}

int
pw_engine_new(const struct pw_engine_opts *o, pw_engine_done_fn done, void *arg,
    struct pw_engine **ret)
{
	struct pw_engine *e;
	int rv;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	if ((e = calloc(1, sizeof(*e))) == NULL) {
		curl_global_cleanup();
		return -ENOMEM;
	}
	for (int p = 0; p < PW_PROV_MAX; p++) {
		int pt = PW_TARGET(p, PW_SLOT_PRIMARY);
		int ft = PW_TARGET(p, PW_SLOT_FALLBACK);

		e->url[pt] = o->url[p];
		e->key[pt] = o->key[p] != NULL && o->key[p][0] != '\0'
				 ? o->key[p]
				 : NULL;
		e->url[ft] = o->url_fb[p];
		e->key[ft] = o->key_fb[p] != NULL && o->key_fb[p][0] != '\0'
				 ? o->key_fb[p]
				 : NULL;
		if (e->url[ft] == NULL || e->key[ft] == NULL)
			e->url[ft] = e->key[ft] = NULL;
	}
	e->health = o->health;
	e->max_retries = o->max_retries > 0 ? o->max_retries : 0;
	e->xmap = o->xmap != NULL && o->xmap[0] != '\0' ? o->xmap : NULL;
	e->models = o->models;
	e->rng = (uint64_t)clock_real_us() ^ ((uint64_t)(uintptr_t)e << 17);
	if (e->rng == 0)
		e->rng = 0x9e3779b97f4a7c15ULL;
	e->done = done;
	e->arg = arg;
	e->pause_high = o->pause_high > 0 ? o->pause_high : PW_PAUSE_HIGH;
	e->pause_low = o->pause_low > 0 ? o->pause_low : PW_PAUSE_LOW;
	if (e->pause_low > e->pause_high)
		e->pause_low = e->pause_high;
	pthread_mutex_init(&e->mu, NULL);
	STAILQ_INIT(&e->cmds);
	STAILQ_INIT(&e->cancels);
	TAILQ_INIT(&e->active);
	TAILQ_INIT(&e->waiting);
	if ((e->noproxy = noproxy_build()) == NULL ||
	    (e->multi = curl_multi_init()) == NULL) {
		rv = -ENOMEM;
		goto fail;
	}
	curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
	curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
	/* Keep idle upstream connections for reuse.  curl's default cache
	 * holds 4 per transfer in flight, so it shed a connection whenever
	 * the calls in flight dropped: ~10% of calls under load paid a new
	 * TCP (and TLS) handshake. */
	curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, PW_IDLE_CONNS);
	if ((rv = pw_push_cache_new(
		 o->max_stream_urls > 0 ? o->max_stream_urls : 64,
		 o->push_sendbuf > 0 ? o->push_sendbuf : PW_PUSH_SENDBUF,
		 engine_chunk_sent, e, &e->pushes)) != 0)
		goto fail;
	if ((rv = -pthread_create(&e->thread, NULL, engine_main, e)) != 0)
		goto fail;
	e->thread_started = true;
	*ret = e;
	return 0;
fail:
	pw_engine_free(e);
	return rv;
}

int
pw_engine_flush(struct pw_engine *e, int timeout_ms)
{
	return pw_push_cache_flush(e->pushes, timeout_ms);
}

void
pw_engine_stats(struct pw_engine *e, struct pw_engine_stats *ret)
{
	ret->chunks = atomic_load(&e->chunks);
	ret->chunks_dropped = atomic_load(&e->chunks_dropped);
	ret->cancels = atomic_load(&e->cancels_done);
	ret->pauses = atomic_load(&e->pauses);
	ret->active = atomic_load(&e->nactive);
}

void
pw_engine_free(struct pw_engine *e)
{
	struct pw_cmd *cmd;
	struct cancel_req *cr;

	if (e == NULL)
		return;
	if (e->thread_started) {
		pthread_mutex_lock(&e->mu);
		e->quit = true;
		pthread_mutex_unlock(&e->mu);
		engine_wake(e);
		pthread_join(e->thread, NULL);
	}
	/* Stops the push callbacks; every call is finished by now. */
	pw_push_cache_free(e->pushes);
	/* Whatever was handed over after the thread ended. */
	e->closing = true;
	while ((cmd = STAILQ_FIRST(&e->cmds)) != NULL) {
		STAILQ_REMOVE_HEAD(&e->cmds, link);
		cmd_run(e, cmd);
	}
	while ((cr = STAILQ_FIRST(&e->cancels)) != NULL) {
		STAILQ_REMOVE_HEAD(&e->cancels, link);
		free(cr);
	}
	if (e->multi != NULL)
		curl_multi_cleanup(e->multi);
	free(e->noproxy);
	pthread_mutex_destroy(&e->mu);
	free(e);
	curl_global_cleanup();
}
