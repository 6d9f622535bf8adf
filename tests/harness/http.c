/*
 * Harness HTTP client (one libcurl easy handle per call, never shared)
 * and a WHATWG-style Server-Sent Events parser.
 */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_BODY_MAX    (64u * 1024 * 1024)
#define HTTP_HEADERS_MAX (1024u * 1024)
#define SSE_EVENTS_MAX   (1024u * 1024)

struct http_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
};

static pthread_once_t http_once = PTHREAD_ONCE_INIT;

static void
http_global_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Appends n bytes and keeps the buffer NUL-terminated; -E2BIG past max. */
static int
http_buf_add(struct http_buf *b, const char *p, size_t n)
{
	size_t need, cap;
	char *nd;

	if (n > b->max || b->len > b->max - n)
		return -E2BIG;
	need = b->len + n + 1;
	if (need > b->cap) {
		cap = b->cap != 0 ? b->cap : 1024;
		while (cap < need)
			cap *= 2;
		nd = realloc(b->data, cap);
		if (nd == NULL)
			return -ENOMEM;
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static size_t
http_on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	size_t n = size * nmemb;

	if (http_buf_add(arg, p, n) != 0)
		return 0;
	return n;
}

static size_t
http_on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct http_buf *b = arg;
	size_t n = size * nmemb;

	/* A new status line (after 100 Continue) starts a new block. */
	if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
		b->len = 0;
	if (http_buf_add(b, p, n) != 0)
		return 0;
	return n;
}

static int
http_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	case CURLE_WRITE_ERROR:
		return -E2BIG;
	default:
		return -EIO;
	}
}

int
h_http(const char *method, const char *url, const char *const headers[],
    const char *body, size_t body_len, int timeout_ms, struct h_resp *ret)
{
	struct http_buf rbody = {NULL, 0, 0, HTTP_BODY_MAX};
	struct http_buf rhdr = {NULL, 0, 0, HTTP_HEADERS_MAX};
	struct curl_slist *list = NULL, *nl;
	CURL *c;
	CURLcode cc;
	long status = 0;
	size_t i;
	int rv;

	if (ret == NULL || method == NULL || url == NULL)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	pthread_once(&http_once, http_global_init);
	c = curl_easy_init();
	if (c == NULL)
		return -ENOMEM;
	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		nl = curl_slist_append(list, headers[i]);
		if (nl == NULL) {
			rv = -ENOMEM;
			goto out;
		}
		list = nl;
	}
	nl = curl_slist_append(list, "Expect:");
	if (nl == NULL) {
		rv = -ENOMEM;
		goto out;
	}
	list = nl;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &rbody);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, http_on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &rhdr);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(
		    c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	}
	if (strcmp(method, "GET") == 0 && body == NULL)
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	else if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "POST") != 0 || body == NULL)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);

	cc = curl_easy_perform(c);
	rv = http_errno(cc);
	if (rv != 0)
		goto out;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (rbody.data == NULL && http_buf_add(&rbody, "", 0) != 0) {
		rv = -ENOMEM;
		goto out;
	}
	if (rhdr.data == NULL && http_buf_add(&rhdr, "", 0) != 0) {
		rv = -ENOMEM;
		goto out;
	}
	ret->status = status;
	ret->body = rbody.data;
	ret->body_len = rbody.len;
	ret->headers = rhdr.data;
	rbody.data = NULL;
	rhdr.data = NULL;
out:
	free(rbody.data);
	free(rhdr.data);
	curl_slist_free_all(list);
	curl_easy_cleanup(c);
	return rv;
}

const char *
h_resp_header(
    const struct h_resp *r, const char *name, char *out, size_t outlen)
{
	const char *line, *end, *colon, *v, *ve;
	size_t name_len, n;

	if (r == NULL || r->headers == NULL || name == NULL || out == NULL ||
	    outlen == 0)
		return NULL;
	name_len = strlen(name);
	for (line = r->headers; *line != '\0'; line = end) {
		end = strchr(line, '\n');
		end = end != NULL ? end + 1 : line + strlen(line);
		colon = memchr(line, ':', (size_t)(end - line));
		if (colon == NULL || (size_t)(colon - line) != name_len ||
		    strncasecmp(line, name, name_len) != 0)
			continue;
		v = colon + 1;
		ve = end;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == '\n' || ve[-1] == '\r' ||
				     ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		n = (size_t)(ve - v);
		if (n >= outlen)
			n = outlen - 1;
		memcpy(out, v, n);
		out[n] = '\0';
		return out;
	}
	return NULL;
}

void
h_resp_free(struct h_resp *r)
{
	if (r == NULL)
		return;
	free(r->body);
	free(r->headers);
	memset(r, 0, sizeof(*r));
}

/* ---- SSE ---- */

struct sse_state {
	struct h_sse_event *ev;
	size_t n;
	size_t cap;
	struct http_buf data;
	char *event;
	bool have_data;
};

static int
sse_dispatch(struct sse_state *s)
{
	struct h_sse_event *nev;
	size_t cap;
	char *d;

	if (!s->have_data) {
		free(s->event);
		s->event = NULL;
		return 0;
	}
	if (s->n >= SSE_EVENTS_MAX)
		return -E2BIG;
	if (s->n == s->cap) {
		cap = s->cap != 0 ? s->cap * 2 : 16;
		nev = realloc(s->ev, cap * sizeof(*nev));
		if (nev == NULL)
			return -ENOMEM;
		s->ev = nev;
		s->cap = cap;
	}
	d = s->data.data != NULL ? s->data.data : strdup("");
	if (d == NULL)
		return -ENOMEM;
	s->ev[s->n].event = s->event;
	s->ev[s->n].data = d;
	s->n++;
	s->event = NULL;
	s->data.data = NULL;
	s->data.len = s->data.cap = 0;
	s->have_data = false;
	return 0;
}

static int
sse_line(struct sse_state *s, const char *p, size_t n)
{
	const char *colon, *v;
	size_t fn, vn;
	int rv;

	if (n == 0)
		return sse_dispatch(s);
	if (p[0] == ':')
		return 0;
	colon = memchr(p, ':', n);
	fn = colon != NULL ? (size_t)(colon - p) : n;
	v = colon != NULL ? colon + 1 : p + n;
	vn = (size_t)(p + n - v);
	if (vn > 0 && v[0] == ' ') {
		v++;
		vn--;
	}
	if (fn == 4 && memcmp(p, "data", 4) == 0) {
		if (s->have_data && (rv = http_buf_add(&s->data, "\n", 1)) != 0)
			return rv;
		if ((rv = http_buf_add(&s->data, v, vn)) != 0)
			return rv;
		s->have_data = true;
	} else if (fn == 5 && memcmp(p, "event", 5) == 0) {
		free(s->event);
		s->event = strndup(v, vn);
		if (s->event == NULL)
			return -ENOMEM;
	}
	return 0;
}

int
h_sse_parse(
    const char *body, size_t len, struct h_sse_event **ret, size_t *ret_n)
{
	struct sse_state s;
	size_t i = 0, start;
	int rv = 0;

	if (ret == NULL || ret_n == NULL || (body == NULL && len > 0))
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.data.max = HTTP_BODY_MAX;
	while (i < len) {
		start = i;
		while (i < len && body[i] != '\n' && body[i] != '\r')
			i++;
		if (i == len)
			break; /* an unterminated last line is discarded */
		rv = sse_line(&s, body + start, i - start);
		if (rv != 0)
			goto fail;
		if (body[i] == '\r' && i + 1 < len && body[i + 1] == '\n')
			i++;
		i++;
	}
	/* An event without its closing blank line is discarded (WHATWG). */
	free(s.event);
	free(s.data.data);
	*ret = s.ev;
	*ret_n = s.n;
	return 0;
fail:
	free(s.event);
	free(s.data.data);
	h_sse_free(s.ev, s.n);
	return rv;
}

void
h_sse_free(struct h_sse_event *ev, size_t n)
{
	size_t i;

	if (ev == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(ev[i].event);
		free(ev[i].data);
	}
	free(ev);
}
