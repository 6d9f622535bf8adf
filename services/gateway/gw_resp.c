#include "gw_resp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"

void
gw_cost_str(int64_t micro_usd, char *out, size_t outlen)
{
	char frac[8];
	uint64_t v;
	int n;
	bool neg = micro_usd < 0;

	v = neg ? (uint64_t)0 - (uint64_t)micro_usd : (uint64_t)micro_usd;
	snprintf(frac, sizeof(frac), "%06" PRIu64, v % 1000000u);
	for (n = 6; n > 0 && frac[n - 1] == '0'; n--)
		frac[n - 1] = '\0';
	if (n == 0)
		snprintf(
		    out, outlen, "%s%" PRIu64, neg ? "-" : "", v / 1000000u);
	else
		snprintf(out, outlen, "%s%" PRIu64 ".%s", neg ? "-" : "",
		    v / 1000000u, frac);
}

const char *
gw_err_type(enum gw_shape shape, int status)
{
	if (shape == GW_SHAPE_ANTHROPIC) {
		switch (status) {
		case 401:
			return "authentication_error";
		case 403:
			return "permission_error";
		case 404:
			return "not_found_error";
		case 413:
			return "request_too_large";
		case 429:
			return "rate_limit_error";
		case 503:
		case 529:
			return "overloaded_error";
		default:
			return status >= 500 ? "api_error"
					     : "invalid_request_error";
		}
	}
	switch (status) {
	case 401:
		return "authentication_error";
	case 403:
		return "permission_error";
	case 404:
		return "not_found_error";
	case 429:
		return "rate_limit_error";
	default:
		return status >= 500 ? "server_error" : "invalid_request_error";
	}
}

int
gw_fmt_error(struct buf *b, enum gw_shape shape, int status, const char *code,
    const char *message, const char *param, const char *request_id,
    int64_t response_ms)
{
	const char *type = gw_err_type(shape, status);
	int rv = 0;

	if (message == NULL)
		message = gw_code_message(code);
	switch (shape) {
	case GW_SHAPE_OPENAI:
		rv |= buf_append_str(b, "{\"error\":{\"message\":");
		rv |= buf_append_json_str(b, message, strlen(message));
		rv |= buf_append_str(b, ",\"type\":");
		rv |= buf_append_json_str(b, type, strlen(type));
		rv |= buf_append_str(b, ",\"param\":");
		if (param != NULL)
			rv |= buf_append_json_str(b, param, strlen(param));
		else
			rv |= buf_append_str(b, "null");
		rv |= buf_append_str(b, ",\"code\":");
		rv |= buf_append_json_str(b, code, strlen(code));
		rv |= buf_append_str(b, "}}");
		break;
	case GW_SHAPE_ANTHROPIC:
		rv |= buf_append_str(
		    b, "{\"type\":\"error\",\"error\":{\"type\":");
		rv |= buf_append_json_str(b, type, strlen(type));
		rv |= buf_append_str(b, ",\"message\":");
		rv |= buf_append_json_str(b, message, strlen(message));
		rv |= buf_append_str(b, "},\"request_id\":");
		rv |= buf_append_json_str(b, request_id, strlen(request_id));
		rv |= buf_append_str(b, "}");
		break;
	default:
		rv |= buf_append_str(
		    b, "{\"success\":false,\"data\":null,\"error\":");
		rv |= buf_append_json_str(b, code, strlen(code));
		rv |= buf_append_str(b, ",\"message\":");
		rv |= buf_append_json_str(b, message, strlen(message));
		rv |= buf_printf(b,
		    ",\"cached\":false,\"cost\":0,\"response_time_ms\":%lld,"
		    "\"request_id\":",
		    (long long)response_ms);
		rv |= buf_append_json_str(b, request_id, strlen(request_id));
		rv |= buf_append_str(b, "}");
		break;
	}
	return rv != 0 ? -EMSGSIZE : 0;
}

int
gw_fmt_envelope_ok(struct buf *b, const char *data, size_t data_len,
    int64_t cost_micro_usd, int64_t response_ms, const char *request_id,
    const char *provider, const char *model)
{
	char cost[32];
	int rv = 0;

	gw_cost_str(cost_micro_usd, cost, sizeof(cost));
	rv |= buf_append_str(b, "{\"success\":true,\"data\":");
	if (data_len == 0)
		rv |= buf_append_str(b, "null");
	else
		rv |= buf_append(b, data, data_len);
	rv |= buf_printf(b,
	    ",\"error\":null,\"message\":null,\"cached\":false,\"cost\":%s,"
	    "\"response_time_ms\":%lld,\"request_id\":",
	    cost, (long long)response_ms);
	rv |= buf_append_json_str(b, request_id, strlen(request_id));
	rv |= buf_append_str(b, ",\"provider\":");
	rv |= buf_append_json_str(b, provider, strlen(provider));
	rv |= buf_append_str(b, ",\"model\":");
	rv |= buf_append_json_str(b, model, strlen(model));
	rv |= buf_append_str(b, "}");
	return rv != 0 ? -EMSGSIZE : 0;
}

int
gw_fmt_aiproxy_event(struct buf *b, const char *request_id,
    int64_t cost_micro_usd, int64_t response_ms)
{
	char cost[32];
	int rv = 0;

	gw_cost_str(cost_micro_usd, cost, sizeof(cost));
	rv |= buf_append_str(b, "event: aiproxy\ndata: {\"request_id\":");
	rv |= buf_append_json_str(b, request_id, strlen(request_id));
	rv |= buf_printf(b,
	    ",\"cost\":%s,\"cached\":false,\"response_time_ms\":%lld}\n\n",
	    cost, (long long)response_ms);
	return rv != 0 ? -EMSGSIZE : 0;
}

int
gw_fmt_stream_error(struct buf *b, const char *provider, const char *message)
{
	int rv = 0;

	if (strcmp(provider, "openai") == 0) {
		rv |= buf_append_str(b, "data: {\"error\":{\"message\":");
		rv |= buf_append_json_str(b, message, strlen(message));
		rv |=
		    buf_append_str(b, ",\"type\":\"server_error\",\"param\":"
				      "null,\"code\":\"upstream_error\"}}\n\n");
	} else {
		rv |= buf_append_str(b,
		    "event: error\ndata: {\"type\":\"error\",\"error\":{"
		    "\"type\":\"api_error\",\"message\":");
		rv |= buf_append_json_str(b, message, strlen(message));
		rv |= buf_append_str(b, "}}\n\n");
	}
	return rv != 0 ? -EMSGSIZE : 0;
}

int
gw_fmt_models(struct buf *b, const struct model_table *t, bool anthropic)
{
	const char *want = anthropic ? "claude" : "openai";
	const struct model *first = NULL, *last = NULL;
	bool sep = false;
	int rv = 0;

	rv |= buf_append_str(
	    b, anthropic ? "{\"data\":[" : "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < models_count(t); i++) {
		const struct model *m = models_at(t, i);

		if (strcmp(m->provider, want) != 0)
			continue;
		if (first == NULL)
			first = m;
		last = m;
		if (sep)
			rv |= buf_append_str(b, ",");
		sep = true;
		if (anthropic) {
			char when[32];
			time_t tt = (time_t)m->created;
			struct tm tm;

			gmtime_r(&tt, &tm);
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			rv |= buf_append_str(b, "{\"type\":\"model\",\"id\":");
			rv |= buf_append_json_str(b, m->id, strlen(m->id));
			rv |= buf_append_str(b, ",\"display_name\":");
			rv |= buf_append_json_str(b, m->id, strlen(m->id));
			rv |= buf_printf(b, ",\"created_at\":\"%s\"}", when);
		} else {
			rv |= buf_append_str(b, "{\"id\":");
			rv |= buf_append_json_str(b, m->id, strlen(m->id));
			rv |= buf_printf(b,
			    ",\"object\":\"model\",\"created\":%lld,"
			    "\"owned_by\":\"openai\"}",
			    (long long)m->created);
		}
	}
	if (!anthropic) {
		rv |= buf_append_str(b, "]}");
		return rv != 0 ? -EMSGSIZE : 0;
	}
	rv |= buf_append_str(b, "],\"has_more\":false,\"first_id\":");
	if (first != NULL)
		rv |= buf_append_json_str(b, first->id, strlen(first->id));
	else
		rv |= buf_append_str(b, "null");
	rv |= buf_append_str(b, ",\"last_id\":");
	if (last != NULL)
		rv |= buf_append_json_str(b, last->id, strlen(last->id));
	else
		rv |= buf_append_str(b, "null");
	rv |= buf_append_str(b, "}");
	return rv != 0 ? -EMSGSIZE : 0;
}

const char *
gw_code_message(const char *code)
{
	static const struct {
		const char *code;
		const char *msg;
	} t[] = {
	    {"not_found", "no such route"},
	    {"method_not_allowed", "method not allowed on this route"},
	    {"body_too_large", "request body too large"},
	    {"invalid_json", "request body is not a UTF-8 JSON object"},
	    {"json_too_deep", "request JSON nests deeper than 32 levels"},
	    {"proxy_disabled", "the AI proxy is disabled"},
	    {"no_workers", "no provider worker is connected"},
	    {"worker_unavailable", "the provider worker was lost"},
	    {"worker_timeout", "the provider worker did not answer in time"},
	    {"worker_error", "the provider worker refused the request"},
	    {"upstream_auth", "the provider rejected the proxy's credentials"},
	    {"upstream_rate_limited", "the provider is rate limiting"},
	    {"upstream_bad_request", "the provider rejected the request"},
	    {"upstream_error", "the provider failed"},
	    {"upstream_unavailable", "the provider is unavailable"},
	    {"upstream_timeout", "the provider did not answer in time"},
	    {"upstream_unreachable", "the provider could not be reached"},
	    {"upstream_stream_error", "the provider stream failed"},
	    {"unauthorized", "missing or invalid admin key"},
	    {"unknown_provider", "unknown provider"},
	    {"internal_error", "internal error"},
	    {"shutting_down", "the gateway is shutting down"},
	    {"stream_buffer_full", "the client reads the stream too slowly"},
	    {"stream_chunks_lost", "stream data from the worker was lost"},
	    {"out_of_memory", "the gateway ran out of memory"},
	    {"upstream_invalid_body",
		"the provider answered with an invalid body"},
	    {"upstream_too_large", "the provider's answer is too large"},
	    {"control_unavailable", "the control channel is unavailable"},
	    {"forbidden_origin", "origin not allowed"},
	};

	for (size_t i = 0; code != NULL && i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(t[i].code, code) == 0)
			return t[i].msg;
	return "request failed";
}
