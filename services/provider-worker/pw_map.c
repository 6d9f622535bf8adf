#include "pw_map.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PW_MS_MAX 86400000LL

struct pw_outcome
pw_map_http(long s)
{
	if (s >= 200 && s <= 299)
		return (struct pw_outcome){200, "", ""};
	switch (s) {
	case 401:
	case 403:
		return (struct pw_outcome){502, "upstream_auth",
		    "the provider refused the proxy's credentials"};
	case 429:
		return (struct pw_outcome){429, "upstream_rate_limited",
		    "the provider is rate limiting requests"};
	case 400:
	case 404:
	case 413:
	case 422:
		return (struct pw_outcome){(int)s, "upstream_bad_request",
		    "the provider rejected the request"};
	case 408:
	case 504:
		return (struct pw_outcome){
		    504, "upstream_timeout", "the provider timed out"};
	case 409:
	case 502:
	case 503:
	case 529:
		return (struct pw_outcome){503, "upstream_unavailable",
		    "the provider is overloaded or unavailable"};
	default:
		/* 500, other 4xx (402 billing...), other 5xx, 1xx, 3xx. */
		return (struct pw_outcome){502, "upstream_error",
		    "the provider failed to answer the request"};
	}
}

enum pw_fail
pw_map_curl(CURLcode rc, bool got_bytes)
{
	switch (rc) {
	case CURLE_OK:
		return PW_FAIL_NONE;
	case CURLE_OPERATION_TIMEDOUT:
		return PW_FAIL_TIMEOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return PW_FAIL_UNREACHABLE;
	case CURLE_OUT_OF_MEMORY:
		return PW_FAIL_INTERNAL;
	default:
		/* GOT_NOTHING, SEND_ERROR, RECV_ERROR, PARTIAL_FILE, HTTP2...:
		 * the connection broke. */
		return got_bytes ? PW_FAIL_BROKEN : PW_FAIL_UNREACHABLE;
	}
}

struct pw_outcome
pw_map_fail(enum pw_fail f, bool streamed)
{
	struct pw_outcome o;

	switch (f) {
	case PW_FAIL_NONE:
		return (struct pw_outcome){200, "", ""};
	case PW_FAIL_TIMEOUT:
		o = (struct pw_outcome){504, "upstream_timeout",
		    "the provider did not answer in time"};
		break;
	case PW_FAIL_UNREACHABLE:
		o = (struct pw_outcome){502, "upstream_unreachable",
		    "the provider could not be reached"};
		break;
	case PW_FAIL_BROKEN:
		o = (struct pw_outcome){502, "upstream_error",
		    "the connection to the provider broke"};
		break;
	case PW_FAIL_TOO_LARGE:
		o = (struct pw_outcome){502, "upstream_response_too_large",
		    "the provider's response is too large"};
		break;
	case PW_FAIL_CANCELLED:
		/* Nobody reads this reply: the client is gone. */
		return (struct pw_outcome){
		    499, "cancelled", "the request was cancelled"};
	case PW_FAIL_STOPPING:
		o = (struct pw_outcome){503, "worker_stopping",
		    "the provider worker is shutting down"};
		break;
	case PW_FAIL_BREAKER:
		o = (struct pw_outcome){503, "provider_unavailable",
		    "the provider is failing: its circuit breaker is open"};
		break;
	default:
		o = (struct pw_outcome){
		    500, "internal_error", "the provider worker failed"};
		break;
	}
	if (streamed) {
		o.status = 502;
		o.code = "upstream_stream_error";
	}
	return o;
}

const char *
pw_fail_str(enum pw_fail f)
{
	static const char *const names[PW_FAIL_MAX] = {"none", "timeout",
	    "unreachable", "broken", "too_large", "cancelled", "stopping",
	    "internal", "breaker"};

	return f < PW_FAIL_MAX ? names[f] : "unknown";
}

bool
pw_map_retryable(long s, enum pw_fail f)
{
	if (f == PW_FAIL_TIMEOUT || f == PW_FAIL_UNREACHABLE)
		return true;
	if (f != PW_FAIL_NONE)
		return false;
	return s == 429 || s == 500 || s == 502 || s == 503 || s == 504 ||
	       s == 529;
}

bool
pw_map_breaker_failure(long s, enum pw_fail f)
{
	if (f == PW_FAIL_TIMEOUT || f == PW_FAIL_UNREACHABLE ||
	    f == PW_FAIL_BROKEN)
		return true;
	if (f != PW_FAIL_NONE)
		return false;
	return s >= 500 && s <= 599;
}

bool
pw_map_breaker_verdict(enum pw_fail f)
{
	return f == PW_FAIL_NONE || f == PW_FAIL_TIMEOUT ||
	       f == PW_FAIL_UNREACHABLE || f == PW_FAIL_BROKEN;
}

/* A non-negative finite number filling all of s (spaces around allowed). */
static int
parse_number(const char *s, double *ret)
{
	char *end;
	double d;

	while (isspace((unsigned char)*s))
		s++;
	if (*s == '\0' || !(isdigit((unsigned char)*s) || *s == '.'))
		return -EINVAL;
	errno = 0;
	d = strtod(s, &end);
	if (errno != 0 || end == s || !isfinite(d) || d < 0)
		return -EINVAL;
	while (isspace((unsigned char)*end))
		end++;
	if (*end != '\0')
		return -EINVAL;
	*ret = d;
	return 0;
}

static int64_t
ms_clamp(double ms)
{
	ms = ceil(ms);
	if (ms < 0)
		return 0;
	if (ms > (double)PW_MS_MAX)
		return PW_MS_MAX;
	return (int64_t)ms;
}

int
pw_retry_after_parse(
    const char *ms_hdr, const char *s_hdr, time_t now, int64_t *ret)
{
	double d;
	time_t t;

	if (ms_hdr != NULL && parse_number(ms_hdr, &d) == 0) {
		*ret = ms_clamp(d);
		return 0;
	}
	if (s_hdr == NULL)
		return -ENOENT;
	if (parse_number(s_hdr, &d) == 0) {
		*ret = ms_clamp(d * 1000.0);
		return 0;
	}
	if ((t = curl_getdate(s_hdr, NULL)) == (time_t)-1)
		return -ENOENT;
	*ret = ms_clamp(((double)t - (double)now) * 1000.0);
	return 0;
}

int
pw_error_event(
    enum pw_prov p, const char *message, bool at_boundary, struct buf *out)
{
	size_t start = out->len;
	int rv = 0;

	if (!at_boundary)
		rv = buf_append_str(out, "\n\n");
	if (rv == 0 && p == PW_PROV_CLAUDE)
		rv = buf_append_str(out,
		    "event: error\ndata: {\"type\":\"error\",\"error\":"
		    "{\"type\":\"api_error\",\"message\":");
	else if (rv == 0)
		rv = buf_append_str(out, "data: {\"error\":{\"message\":");
	if (rv == 0)
		rv = buf_append_json_str(out, message, strlen(message));
	if (rv == 0 && p == PW_PROV_CLAUDE)
		rv = buf_append_str(out, "}}\n\n");
	else if (rv == 0)
		rv = buf_append_str(out,
		    ",\"type\":\"server_error\",\"param\":null,"
		    "\"code\":\"upstream_error\"}}\n\n");
	if (rv != 0) {
		out->len = start;
		if (out->data != NULL)
			out->data[start] = '\0';
	}
	return rv;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid,
 * -1 if valid so far but cut short by the end. */
static int
utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	int len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return -1;
		if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf))
			return 0;
	}
	return len;
}

void
pw_utf8_clip(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n = strlen(s), i = 0;

	while (i < n) {
		int k = utf8_seq(p + i, n - i);

		if (k > 0) {
			i += (size_t)k;
		} else if (k < 0) {
			p[i] = '\0';
			return;
		} else {
			p[i++] = '?';
		}
	}
}
