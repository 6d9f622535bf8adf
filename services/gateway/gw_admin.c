/*
 * The ratelimiter's blocks, for the admin:
 *   GET    /api/v1/ai-proxy/admin/blocked            -> block_list
 *   DELETE /api/v1/ai-proxy/admin/blocked/{kind}/{id} -> unblock
 * The router checked the admin key (404 without one configured, 401 on a
 * wrong one).  The path arrives URL-decoded from libmicrohttpd, so ids
 * holding ':' (anon:127.0.0.1, IPv6) or '/' (%2F) work; the id is the
 * whole rest of the path after the kind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw.h"
#include "gw_resp.h"
#include "log.h"
#include "proto.h"

#define GW_ADMIN_TIMEOUT_MS  1000
#define GW_ADMIN_BLOCKED_URL "/api/v1/ai-proxy/admin/blocked/"

static void
admin_unavailable_locked(struct gw_req *r, int err)
{
	log_warn(r->request_id, "ratelimiter unavailable for an admin call",
	    LF_S("error", strerror(err < 0 ? -err : EPROTO)));
	r->retry_after_ms = 1000;
	gw_req_set_error_locked(r, 503, "ratelimiter_unavailable",
	    "the ratelimiter is unavailable: blocks cannot be read or "
	    "lifted now");
}

/* Answers r with data (JSON text) in the success envelope.  Under
 * r->mtx. */
static void
admin_ok_locked(struct gw_req *r, const char *data)
{
	buf_reset(&r->out);
	if (gw_fmt_envelope_ok(&r->out, data, strlen(data), 0,
		gw_req_elapsed_ms(r), r->request_id, "", "") != 0) {
		gw_req_set_error_locked(r, 500, "internal_error", NULL);
		return;
	}
	r->status = 200;
	r->ctype = "application/json";
	r->state = GW_RS_READY;
}

/* {"blocked":[...],"total":N,"degraded":b} from a block_list_resp; the
 * ratelimiter's array is parsed, never copied blindly.  Caller frees. */
static char *
blocked_data(const struct msg_block_list_resp *m)
{
	json_t *arr, *doc;
	char *out;

	arr = json_loadb(m->payload, m->payload_len, 0, NULL);
	if (arr == NULL || !json_is_array(arr)) {
		json_decref(arr);
		return NULL;
	}
	doc = json_pack("{s:o, s:I, s:b}", "blocked", arr, "total",
	    (json_int_t)m->total, "degraded", m->degraded);
	if (doc == NULL)
		return NULL;
	out = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	return out;
}

static void
list_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct gw_req *r = arg;
	struct msg_block_list_resp m;
	char *data = NULL;

	(void)sent;
	pthread_mutex_lock(&r->mtx);
	if (r->closed)
		goto out;
	if (err != 0 || msg_block_list_resp_decode(buf, len, &m) != 0) {
		admin_unavailable_locked(r, err);
		goto wake;
	}
	if ((data = blocked_data(&m)) == NULL) {
		log_error(r->request_id, "bad block list from the ratelimiter",
		    LF_I("bytes", m.payload_len));
		gw_req_set_error_locked(r, 502, "ratelimiter_error",
		    "the ratelimiter answered an invalid block list");
		goto wake;
	}
	admin_ok_locked(r, data);
	free(data);
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	gw_req_unref(r);
}

struct unblock_call {
	struct gw_req *r;
	char kind[PROTO_ENUM_MAX + 1];
	char id[PROTO_SUBJECT_MAX + 1];
};

static void
unblock_done(void *arg, int err, bool sent, const char *buf, size_t len)
{
	struct unblock_call *uc = arg;
	struct gw_req *r = uc->r;
	struct msg_ack a;
	json_t *doc;
	char *data;

	(void)sent;
	pthread_mutex_lock(&r->mtx);
	if (r->closed)
		goto out;
	if (err != 0 || msg_ack_decode(buf, len, &a) != 0) {
		admin_unavailable_locked(r, err);
		goto wake;
	}
	if (!a.ok) {
		if (strcmp(a.code, "not_found") == 0)
			gw_req_set_error_locked(
			    r, 404, "not_found", "this subject is not blocked");
		else
			gw_req_set_error_locked(r, 400, "invalid_parameter",
			    "the ratelimiter refused this kind or id");
		goto wake;
	}
	log_info(r->request_id, "block lifted", LF_S("kind", uc->kind));
	doc = json_pack("{s:s, s:s, s:s, s:b}", "action", "unblock", "kind",
	    uc->kind, "id", uc->id, "unblocked", 1);
	data = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (data == NULL)
		gw_req_set_error_locked(r, 500, "internal_error", NULL);
	else
		admin_ok_locked(r, data);
	free(data);
wake:
	gw_req_wake_locked(r);
out:
	pthread_mutex_unlock(&r->mtx);
	gw_req_unref(r);
	free(uc);
}

/* Sends buf (freed here) to the ratelimiter; fn(arg) completes r. */
static enum MHD_Result
admin_call(struct gw_req *r, char *buf, size_t len, gw_call_fn fn, void *arg)
{
	int rv = -ENOTCONN;

	gw_req_ref(r);
	gw_req_wait(r);
	if (r->gw->rl_open)
		rv = gw_call(r->gw, r->gw->rl_sock, buf, len,
		    GW_ADMIN_TIMEOUT_MS, fn, arg);
	free(buf);
	if (rv != 0)
		fn(arg, rv, false, NULL, 0);
	return MHD_YES;
}

enum MHD_Result
gw_admin_blocked(struct gw_req *r)
{
	struct msg_block_list m;
	char *buf = NULL;
	size_t len;

	memset(&m, 0, sizeof(m));
	snprintf(m.request_id, sizeof(m.request_id), "%s", r->request_id);
	m.max = PROTO_BLOCK_LIST_MAX;
	if (msg_block_list_encode(&m, &buf, &len) != 0)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	return admin_call(r, buf, len, list_done, r);
}

/* kind "user", "session" or "ip"; an ip id must be an address and
 * becomes its canonical text (inet_ntop, as the gateway names clients).
 * false: a 400. */
static bool
unblock_target(const char *kind, char *id, size_t idlen)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (id[0] == '\0')
		return false;
	for (const char *p = id; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	if (strcmp(kind, "user") == 0 || strcmp(kind, "session") == 0)
		return true;
	if (strcmp(kind, "ip") != 0)
		return false;
	if (inet_pton(AF_INET, id, &a4) == 1)
		return inet_ntop(AF_INET, &a4, id, (socklen_t)idlen) != NULL;
	if (inet_pton(AF_INET6, id, &a6) == 1)
		return inet_ntop(AF_INET6, &a6, id, (socklen_t)idlen) != NULL;
	return false;
}

enum MHD_Result
gw_admin_unblock(struct gw_req *r)
{
	struct msg_unblock m;
	struct unblock_call *uc;
	const char *rest, *slash;
	char *buf = NULL;
	size_t len, n, klen;

	/* The router matched GW_ADMIN_BLOCKED_URL "{*}": split the rest
	 * (one trailing '/' dropped, as the router does) at its first '/'. */
	if (strncmp(r->path, GW_ADMIN_BLOCKED_URL,
		strlen(GW_ADMIN_BLOCKED_URL)) != 0)
		return gw_req_error(r, 404, "not_found", NULL, NULL);
	rest = r->path + strlen(GW_ADMIN_BLOCKED_URL);
	n = strlen(rest);
	if (n > 1 && rest[n - 1] == '/')
		n--;
	memset(&m, 0, sizeof(m));
	slash = memchr(rest, '/', n);
	if (slash == NULL || slash == rest || (size_t)(slash - rest) + 1 >= n)
		return gw_req_error(r, 400, "invalid_parameter",
		    "expected /admin/blocked/{user|session|ip}/{id}", NULL);
	klen = (size_t)(slash - rest);
	if (klen > PROTO_ENUM_MAX || n - klen - 1 > PROTO_SUBJECT_MAX)
		return gw_req_error(r, 400, "invalid_parameter",
		    "kind must be user, session or ip; id at most 128 bytes",
		    NULL);
	memcpy(m.kind, rest, klen);
	memcpy(m.id, slash + 1, n - klen - 1);
	if (!unblock_target(m.kind, m.id, sizeof(m.id)))
		return gw_req_error(r, 400, "invalid_parameter",
		    "kind must be user, session or ip (with an IP address)",
		    NULL);
	snprintf(m.request_id, sizeof(m.request_id), "%s", r->request_id);
	if ((uc = calloc(1, sizeof(*uc))) == NULL)
		return gw_req_error(r, 500, "internal_error", NULL, NULL);
	uc->r = r;
	snprintf(uc->kind, sizeof(uc->kind), "%s", m.kind);
	snprintf(uc->id, sizeof(uc->id), "%s", m.id);
	if (msg_unblock_encode(&m, &buf, &len) != 0) {
		free(uc);
		return gw_req_error(r, 400, "invalid_parameter",
		    "the id is not a valid subject id", NULL);
	}
	return admin_call(r, buf, len, unblock_done, uc);
}
