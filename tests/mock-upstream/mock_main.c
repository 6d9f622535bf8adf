/*
 * aiproxy-mock-upstream: serves POST /v1/messages (Anthropic),
 * POST /v1/chat/completions (OpenAI), GET /v1/models and the /_mock
 * control routes.  libmicrohttpd with an epoll thread pool; delays never
 * block an MHD thread: the connection is suspended and mock_timer.c
 * resumes it.
 */
#include "mock.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAIN_CONN_LIMIT   20000
#define MAIN_BACKLOG      4096
#define MAIN_POOL_MAX     8
#define MAIN_CONN_TIMEOUT 300
#define MAIN_BLOCK_SIZE   (16 * 1024)
#define MAIN_HDR_NAME_MAX 128
#define MAIN_KEY_MAX      512
#define MAIN_ERRMSG_MAX   256

struct mock_req {
	struct MHD_Connection *conn;
	char *body;
	size_t body_len;
	size_t body_cap;
	bool too_large;
	bool provider; /* a provider route with a plan */
	bool waiting;  /* suspended for latency-ms */
	bool stalling; /* suspended by stall-after */
	unsigned long long seq;
	struct mock_plan plan;
	json_t *entry; /* own reference to the request log entry */
	const char *outcome;
	size_t ev_idx;
	size_t ev_off;
	long long start_ms;
};

static struct {
	char akey[MAIN_KEY_MAX];
	char okey[MAIN_KEY_MAX];
	struct mock_timer timer;
	atomic_bool shutting;
	atomic_long requests;
	atomic_long open_conns;
	atomic_long accepted; /* connections ever opened */
	atomic_long client_closed;
} g;

/* ---- helpers ---- */

static const char *
hdr(struct MHD_Connection *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

static bool
bearer_is(const char *auth, const char *key)
{
	return auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0 &&
	       strcmp(auth + 7, key) == 0;
}

static const char *
redact(const char *value, bool ok)
{
	if (value == NULL)
		return "<missing>";
	return ok ? "<ok>" : "<bad>";
}

static enum MHD_Result
collect_header(
    void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	json_t *headers = cls;
	char name[MAIN_HDR_NAME_MAX];
	size_t i;

	(void)kind;
	for (i = 0; key[i] != '\0' && i < sizeof(name) - 1; i++)
		name[i] = (char)tolower((unsigned char)key[i]);
	name[i] = '\0';
	if (strcmp(name, "x-api-key") == 0 ||
	    strcmp(name, "authorization") == 0 ||
	    json_object_get(headers, name) != NULL)
		return MHD_YES;
	json_object_set_new(headers, name, json_string(value ? value : ""));
	return MHD_YES;
}

static void
req_append(struct mock_req *r, const char *data, size_t n)
{
	size_t cap;
	char *nb;

	if (r->too_large || n > MOCK_BODY_MAX - r->body_len) {
		r->too_large = true;
		return;
	}
	if (r->body_len + n + 1 > r->body_cap) {
		cap = r->body_cap != 0 ? r->body_cap : 4096;
		while (cap < r->body_len + n + 1)
			cap *= 2;
		nb = realloc(r->body, cap);
		if (nb == NULL) {
			r->too_large = true;
			return;
		}
		r->body = nb;
		r->body_cap = cap;
	}
	memcpy(r->body + r->body_len, data, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
}

/* Suspends r's connection until due_ms.  The caller returns right after. */
static void
req_sleep_until(struct mock_req *r, long long due_ms)
{
	MHD_suspend_connection(r->conn);
	if (mock_timer_add(&g.timer, due_ms, r->conn) != 0)
		MHD_resume_connection(r->conn);
}

/* ---- control routes ---- */

/* Takes body (malloc'd). */
static enum MHD_Result
respond_json(struct MHD_Connection *conn, unsigned int status, char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (body == NULL)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(
	    strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "content-type", "application/json");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
respond_simple(
    struct MHD_Connection *conn, unsigned int status, const char *msg)
{
	json_t *o = json_pack("{s:s}", "error", msg);
	char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	return respond_json(conn, status, s);
}

static enum MHD_Result
route_config(struct mock_req *r)
{
	struct mock_fault f;
	json_error_t jerr;
	json_t *req, *cnt, *o;
	const char *spec;
	long count = -1;
	char *out;

	req =
	    r->body != NULL ? json_loadb(r->body, r->body_len, 0, &jerr) : NULL;
	spec = json_string_value(json_object_get(req, "fault"));
	if (spec == NULL) {
		json_decref(req);
		return respond_simple(
		    r->conn, 400, "body must be {\"fault\":\"<spec>\"}");
	}
	cnt = json_object_get(req, "count");
	if (json_is_integer(cnt))
		count = (long)json_integer_value(cnt);
	if (spec[0] != '\0' && (mock_fault_parse(spec, strlen(spec), &f) != 0 ||
				   mock_config_set(spec, count) != 0)) {
		json_decref(req);
		return respond_simple(r->conn, 400, "bad fault spec");
	}
	if (spec[0] == '\0')
		mock_config_set("", 0);
	o = json_pack("{s:s,s:I}", "fault", spec, "count",
	    (json_int_t)(spec[0] != '\0' ? count : 0));
	json_decref(req);
	out = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	mock_log("info", "config",
	    json_pack("{s:s,s:I}", "fault", out ? out : "", "count",
		(json_int_t)count));
	return respond_json(r->conn, 200, out);
}

static enum MHD_Result
route_control(struct mock_req *r, const char *method, const char *url)
{
	json_t *o;
	char *s;

	if (strcmp(url, "/_mock/requests") == 0) {
		if (strcmp(method, "GET") == 0)
			return respond_json(r->conn, 200, mock_reqlog_dump());
		if (strcmp(method, "DELETE") == 0) {
			mock_reqlog_clear();
			return respond_json(r->conn, 200, strdup("{}"));
		}
	} else if (strcmp(url, "/_mock/stats") == 0 &&
		   strcmp(method, "GET") == 0) {
		o = json_pack("{s:I,s:I,s:I,s:I}", "requests",
		    (json_int_t)atomic_load(&g.requests), "open_connections",
		    (json_int_t)atomic_load(&g.open_conns), "connections",
		    (json_int_t)atomic_load(&g.accepted), "client_closed",
		    (json_int_t)atomic_load(&g.client_closed));
		s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		return respond_json(r->conn, 200, s);
	} else if (strcmp(url, "/_mock/config") == 0 &&
		   strcmp(method, "POST") == 0) {
		return route_config(r);
	}
	return respond_simple(r->conn, 404, "unknown mock route");
}

/* ---- provider routes ---- */

/* Builds r->plan for a chat request.  Sets *ret_fault to the spec used. */
static int
plan_chat(struct mock_req *r, enum mock_prov prov, json_t *body, char *fault,
    size_t fault_len)
{
	char errmsg[MAIN_ERRMSG_MAX];
	const char *param = NULL, *h;
	struct mock_info info;
	struct mock_fault f;
	long v;
	char *end;

	if (r->too_large)
		return mock_gen_error(prov, 413, NULL, NULL, r->seq, &r->plan);
	if (body == NULL)
		return mock_gen_error(prov, 400,
		    "request body is not valid JSON", NULL, r->seq, &r->plan);
	if (mock_gen_analyze(
		prov, body, &info, errmsg, sizeof(errmsg), &param) != 0)
		return mock_gen_error(
		    prov, 400, errmsg, param, r->seq, &r->plan);

	h = hdr(r->conn, "x-mock-fault");
	if (h != NULL) {
		if (snprintf(fault, fault_len, "%s", h) >= (int)fault_len)
			return mock_gen_error(prov, 400,
			    "x-mock-fault too long", NULL, r->seq, &r->plan);
	} else if (!mock_fault_directive(
		       r->body, r->body_len, fault, fault_len) &&
		   !mock_config_take(fault, fault_len)) {
		fault[0] = '\0';
	}
	if (mock_fault_parse(fault, strlen(fault), &f) != 0)
		return mock_gen_error(
		    prov, 400, "mock: bad fault spec", NULL, r->seq, &r->plan);
	if (f.cache_read < 0 && (h = hdr(r->conn, "x-mock-cache-read"))) {
		v = strtol(h, &end, 10);
		f.cache_read = *end == '\0' && v >= 0 ? v : -1;
	}
	if (f.cache_write < 0 && (h = hdr(r->conn, "x-mock-cache-write"))) {
		v = strtol(h, &end, 10);
		f.cache_write = *end == '\0' && v >= 0 ? v : -1;
	}
	if (f.fail_first >= 0 && mock_failfirst_hit(f.key) > f.fail_first)
		f.status = 0;
	if (f.status != 0) {
		int rv = mock_gen_error(
		    prov, (unsigned int)f.status, NULL, NULL, r->seq, &r->plan);

		r->plan.retry_after = f.retry_after;
		r->plan.retry_after_ms = f.retry_after_ms;
		r->plan.latency_ms = f.latency_ms;
		return rv;
	}
	return mock_gen_success(&info, &f, r->seq, &r->plan);
}

static void
route_provider(struct mock_req *r, const char *method, const char *url)
{
	const char *xkey = hdr(r->conn, "x-api-key");
	const char *auth = hdr(r->conn, "authorization");
	const char *key;
	enum mock_prov prov;
	char fault[MOCK_SPEC_MAX] = "";
	json_error_t jerr;
	json_t *body = NULL, *headers;
	bool authed, chat = false, models = false;
	int rv;

	if (strcmp(url, "/v1/messages") == 0) {
		prov = MOCK_PROV_ANTHROPIC;
		chat = strcmp(method, "POST") == 0;
	} else if (strcmp(url, "/v1/chat/completions") == 0) {
		prov = MOCK_PROV_OPENAI;
		chat = strcmp(method, "POST") == 0;
	} else {
		prov = xkey != NULL || hdr(r->conn, "anthropic-version") != NULL
			   ? MOCK_PROV_ANTHROPIC
			   : MOCK_PROV_OPENAI;
		models = strcmp(url, "/v1/models") == 0 &&
			 strcmp(method, "GET") == 0;
	}
	key = prov == MOCK_PROV_ANTHROPIC ? g.akey : g.okey;
	authed = prov == MOCK_PROV_ANTHROPIC
		     ? (xkey != NULL && strcmp(xkey, key) == 0) ||
			   bearer_is(auth, key)
		     : bearer_is(auth, key);

	r->provider = true;
	r->seq = mock_reqlog_next_seq();
	atomic_fetch_add(&g.requests, 1);
	mock_plan_init(&r->plan, prov);
	if (r->body != NULL && !r->too_large)
		body = json_loadb(r->body, r->body_len, 0, &jerr);

	if (!authed)
		rv = mock_gen_error(prov, 401, NULL, NULL, r->seq, &r->plan);
	else if (chat)
		rv = plan_chat(r, prov, body, fault, sizeof(fault));
	else if (models)
		rv = mock_gen_models(prov, &r->plan);
	else
		rv = mock_gen_error(prov, 404, NULL, NULL, r->seq, &r->plan);
	if (rv != 0) {
		mock_plan_reset(&r->plan);
		mock_gen_error(
		    prov, 500, "mock: out of memory", NULL, r->seq, &r->plan);
	}

	headers = json_object();
	if (headers != NULL) {
		MHD_get_connection_values(
		    r->conn, MHD_HEADER_KIND, collect_header, headers);
		json_object_set_new(headers, "x-api-key",
		    json_string(
			redact(xkey, xkey != NULL && strcmp(xkey, key) == 0)));
		json_object_set_new(headers, "authorization",
		    json_string(redact(auth, bearer_is(auth, key))));
	}
	r->entry = json_object();
	if (r->entry != NULL) {
		char req_id[48];
		json_t *model = json_object_get(body, "model");

		snprintf(req_id, sizeof(req_id), "req_%llu", r->seq);
		json_object_set_new(
		    r->entry, "seq", json_integer((json_int_t)r->seq));
		json_object_set_new(
		    r->entry, "request_id", json_string(req_id));
		json_object_set_new(
		    r->entry, "ts_ms", json_integer(mock_wall_ms()));
		json_object_set_new(r->entry, "method", json_string(method));
		json_object_set_new(r->entry, "path", json_string(url));
		json_object_set_new(
		    r->entry, "provider", json_string(mock_prov_str(prov)));
		json_object_set_new(r->entry, "headers",
		    headers != NULL ? headers : json_object());
		headers = NULL;
		json_object_set(
		    r->entry, "body", body != NULL ? body : json_null());
		json_object_set(r->entry, "model",
		    json_is_string(model) ? model : json_null());
		json_object_set_new(r->entry, "stream",
		    json_boolean(
			json_is_true(json_object_get(body, "stream"))));
		json_object_set_new(r->entry, "fault", json_string(fault));
		json_object_set_new(
		    r->entry, "status", json_integer(r->plan.status));
		json_object_set_new(
		    r->entry, "outcome", json_string("pending"));
		mock_reqlog_add(r->entry);
	}
	json_decref(headers);
	json_decref(body);
}

static ssize_t
req_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct mock_req *r = cls;
	struct mock_plan *p = &r->plan;
	long long now = mock_now_ms(), due;
	size_t out = 0, n;

	(void)pos;
	if (atomic_load(&g.shutting))
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (r->stalling) /* woken after MOCK_STALL_MAX_MS */
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (r->start_ms == 0)
		r->start_ms = now;
	while (out < max) {
		if (r->ev_off == 0) {
			if (r->ev_idx == p->n_events) {
				if (out > 0)
					break;
				if (p->end == MOCK_END_DROP) {
					r->outcome = "dropped";
					if (r->entry != NULL)
						mock_reqlog_mark(
						    r->entry, r->outcome);
					return MHD_CONTENT_READER_END_WITH_ERROR;
				}
				if (p->end == MOCK_END_STALL) {
					r->outcome = "stalled";
					if (r->entry != NULL)
						mock_reqlog_mark(
						    r->entry, r->outcome);
					r->stalling = true;
					req_sleep_until(
					    r, now + MOCK_STALL_MAX_MS);
					return 0;
				}
				return MHD_CONTENT_READER_END_OF_STREAM;
			}
			due = r->start_ms;
			if (r->ev_idx > 0 && p->duration_ms > 0 &&
			    p->n_events > 1)
				due += p->duration_ms * (long long)r->ev_idx /
				       (long long)(p->n_events - 1);
			else if (r->ev_idx > 0 && p->chunk_delay_ms > 0)
				due += p->chunk_delay_ms * (long long)r->ev_idx;
			if (due > now) {
				if (out > 0)
					break;
				req_sleep_until(r, due);
				return 0;
			}
		}
		n = p->event_lens[r->ev_idx] - r->ev_off;
		if (n > max - out)
			n = max - out;
		memcpy(buf + out, p->events[r->ev_idx] + r->ev_off, n);
		out += n;
		r->ev_off += n;
		if (r->ev_off == p->event_lens[r->ev_idx]) {
			r->ev_off = 0;
			r->ev_idx++;
		}
	}
	return (ssize_t)out;
}

static enum MHD_Result
req_queue(struct mock_req *r)
{
	struct mock_plan *p = &r->plan;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char v[48];

	if (p->stream) {
		resp = MHD_create_response_from_callback(
		    MHD_SIZE_UNKNOWN, MAIN_BLOCK_SIZE, req_read, r, NULL);
	} else {
		resp = MHD_create_response_from_buffer(
		    p->body_len, p->body, MHD_RESPMEM_MUST_FREE);
		if (resp != NULL)
			p->body = NULL;
	}
	if (resp == NULL)
		return MHD_NO;
	snprintf(v, sizeof(v), "req_%llu", r->seq);
	MHD_add_response_header(resp,
	    p->prov == MOCK_PROV_ANTHROPIC ? "request-id" : "x-request-id", v);
	if (p->stream) {
		MHD_add_response_header(
		    resp, "content-type", "text/event-stream");
		MHD_add_response_header(resp, "cache-control", "no-cache");
	} else {
		MHD_add_response_header(
		    resp, "content-type", "application/json");
	}
	if (p->retry_after >= 0) {
		snprintf(v, sizeof(v), "%ld", p->retry_after);
		MHD_add_response_header(resp, "retry-after", v);
	}
	if (p->retry_after_ms >= 0) {
		snprintf(v, sizeof(v), "%ld", p->retry_after_ms);
		MHD_add_response_header(resp, "retry-after-ms", v);
	}
	ret = MHD_queue_response(r->conn, p->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct mock_req *r = *con_cls;

	(void)cls;
	(void)version;
	if (r == NULL) {
		r = calloc(1, sizeof(*r));
		if (r == NULL)
			return MHD_NO;
		r->conn = conn;
		mock_plan_init(&r->plan, MOCK_PROV_OPENAI);
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		req_append(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (atomic_load(&g.shutting))
		return MHD_NO;
	if (r->waiting) {
		r->waiting = false;
		return req_queue(r);
	}
	if (strncmp(url, "/_mock/", 7) == 0)
		return route_control(r, method, url);
	route_provider(r, method, url);
	if (r->plan.latency_ms > 0) {
		r->waiting = true;
		req_sleep_until(r, mock_now_ms() + r->plan.latency_ms);
		return MHD_YES;
	}
	return req_queue(r);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct mock_req *r = *con_cls;
	const char *outcome;

	(void)cls;
	(void)conn;
	if (r == NULL)
		return;
	*con_cls = NULL;
	if (r->outcome != NULL)
		outcome = r->outcome;
	else if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		outcome = "completed";
	else if (toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
		outcome = "dropped";
	else
		outcome = "client_closed";
	if (r->provider) {
		if (strcmp(outcome, "client_closed") == 0)
			atomic_fetch_add(&g.client_closed, 1);
		if (r->entry != NULL) {
			mock_reqlog_finish(r->entry, outcome);
			mock_log("info", "request",
			    json_pack("{s:I,s:O,s:O,s:O,s:s}", "seq",
				(json_int_t)r->seq, "provider",
				json_object_get(r->entry, "provider"), "path",
				json_object_get(r->entry, "path"), "status",
				json_object_get(r->entry, "status"), "outcome",
				outcome));
		}
	}
	json_decref(r->entry);
	mock_plan_reset(&r->plan);
	free(r->body);
	free(r);
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
    enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	(void)conn;
	(void)socket_ctx;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		atomic_fetch_add(&g.open_conns, 1);
		atomic_fetch_add(&g.accepted, 1);
	} else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
		atomic_fetch_sub(&g.open_conns, 1);
}

__attribute__((format(printf, 2, 0))) static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	size_t n;

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	mock_log("warn", "microhttpd", json_pack("{s:s}", "detail", msg));
}

/* ---- start-up ---- */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: aiproxy-mock-upstream [-d] [-H host] [-p port] "
	    "[-P portfile]\n"
	    "\t[-k anthropic_key] [-K openai_key] [-l request_log]\n");
	exit(2);
}

static int
parse_port(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > 65535)
		return -1;
	return (int)v;
}

static int
set_key(char *dst, const char *flag_val, const char *env, const char *def)
{
	const char *v = flag_val;

	if (v == NULL)
		v = getenv(env);
	if (v == NULL || v[0] == '\0')
		v = def;
	if (snprintf(dst, MAIN_KEY_MAX, "%s", v) >= MAIN_KEY_MAX)
		return -E2BIG;
	return 0;
}

static int
write_portfile(const char *path, int port)
{
	char tmp[4096];
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	f = fopen(tmp, "we");
	if (f == NULL)
		return -errno;
	fprintf(f, "%d\n", port);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		int e = errno;

		unlink(tmp);
		return -e;
	}
	return 0;
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			mock_log("warn", "cannot raise RLIMIT_NOFILE", NULL);
	}
}

int
main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *portfile = NULL, *reqlog = NULL;
	const char *akey = NULL, *okey = NULL;
	struct sockaddr_in sa4;
	struct sockaddr_in6 sa6;
	struct sockaddr *sa;
	const union MHD_DaemonInfo *info;
	struct MHD_Daemon *d;
	unsigned int flags, pool;
	sigset_t sigs;
	int opt, port = 0, sig, rv, bound;
	long ncpu;

	while ((opt = getopt(argc, argv, "dH:p:P:k:K:l:")) != -1) {
		switch (opt) {
		case 'd':
			break;
		case 'H':
			host = optarg;
			break;
		case 'p':
			port = parse_port(optarg);
			if (port < 0)
				usage();
			break;
		case 'P':
			portfile = optarg;
			break;
		case 'k':
			akey = optarg;
			break;
		case 'K':
			okey = optarg;
			break;
		case 'l':
			reqlog = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (set_key(g.akey, akey, "MOCK_ANTHROPIC_KEY", "test-anthropic-key") !=
		0 ||
	    set_key(g.okey, okey, "MOCK_OPENAI_KEY", "test-openai-key") != 0) {
		mock_log("error", "key too long", NULL);
		return 1;
	}
	flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	memset(&sa4, 0, sizeof(sa4));
	memset(&sa6, 0, sizeof(sa6));
	if (inet_pton(AF_INET, host, &sa4.sin_addr) == 1) {
		sa4.sin_family = AF_INET;
		sa4.sin_port = htons((uint16_t)port);
		sa = (struct sockaddr *)&sa4;
	} else if (inet_pton(AF_INET6, host, &sa6.sin6_addr) == 1) {
		sa6.sin6_family = AF_INET6;
		sa6.sin6_port = htons((uint16_t)port);
		sa = (struct sockaddr *)&sa6;
		flags |= MHD_USE_IPv6;
	} else {
		mock_log("error", "bad -H address (numeric IP expected)",
		    json_pack("{s:s}", "host", host));
		return 1;
	}

	raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	atomic_init(&g.shutting, false);
	if (mock_state_init(reqlog) != 0)
		return 1;
	rv = mock_timer_start(&g.timer);
	if (rv != 0) {
		mock_log("error", "cannot start timer thread", NULL);
		goto out_state;
	}
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pool = ncpu < 1               ? 1
	       : ncpu > MAIN_POOL_MAX ? MAIN_POOL_MAX
				      : (unsigned int)ncpu;
	d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request,
	    NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
	    MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned int)MAIN_CONN_LIMIT, MHD_OPTION_THREAD_POOL_SIZE, pool,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)MAIN_CONN_TIMEOUT,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)MAIN_BACKLOG,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
	if (d == NULL) {
		mock_log("error", "cannot start HTTP daemon",
		    json_pack("{s:s,s:i}", "host", host, "port", port));
		rv = -EADDRINUSE;
		goto out_timer;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	bound = info != NULL ? (int)info->port : port;
	if (portfile != NULL && (rv = write_portfile(portfile, bound)) != 0) {
		mock_log("error", "cannot write port file",
		    json_pack(
			"{s:s,s:s}", "path", portfile, "error", strerror(-rv)));
		goto out_daemon;
	}
	mock_log("info", "listening",
	    json_pack("{s:s,s:i,s:i}", "host", host, "port", bound, "threads",
		(int)pool));

	do {
		rv = sigwait(&sigs, &sig);
	} while (rv == EINTR);
	mock_log("info", "stopping", json_pack("{s:i}", "signal", sig));
	rv = 0;
	{
		MHD_socket lfd = MHD_quiesce_daemon(d);

		if (lfd != MHD_INVALID_SOCKET)
			close(lfd);
	}
out_daemon:
	atomic_store(&g.shutting, true);
	mock_timer_stop(&g.timer);
	MHD_stop_daemon(d);
out_timer:
	mock_timer_stop(&g.timer);
	mock_timer_free(&g.timer);
out_state:
	mock_state_free();
	if (rv == 0)
		mock_log("info", "stopped", NULL);
	return rv == 0 ? 0 : 1;
}
