#include "gw_validate.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsonx.h"

/* Top-level fields the envelope routes forward; others are dropped (the
 * drop-in routes forward everything unchanged). */
static const char *const claude_fields[] = {"model", "messages", "max_tokens",
    "system", "temperature", "top_p", "top_k", "stop_sequences", "stream",
    "tools", "tool_choice", "metadata", "thinking", "service_tier", NULL};
static const char *const openai_fields[] = {"model", "messages", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "n", "stop", "stream",
    "stream_options", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "user", "seed", "frequency_penalty", "presence_penalty",
    "logit_bias", "logprobs", "top_logprobs", "reasoning_effort",
    "service_tier", "metadata", "modalities", "prediction", "verbosity",
    "safety_identifier", "prompt_cache_key", NULL};

static const char *const claude_roles[] = {"user", "assistant", NULL};
static const char *const openai_roles[] = {
    "system", "user", "assistant", "tool", "developer", "function", NULL};

static int verr(struct gw_verr *err, int status, const char *code,
    const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int
verr(struct gw_verr *err, int status, const char *code, const char *param,
    const char *fmt, ...)
{
	va_list ap;

	err->status = status;
	err->code = code;
	err->param = param;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool
in_list(const char *const *list, const char *s)
{
	for (; *list != NULL; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

const struct model *
gw_default_model(const struct gw_vcfg *cfg, const char *provider)
{
	const struct model *m = NULL;

	if (cfg->default_model != NULL)
		m = models_lookup(cfg->models, cfg->default_model);
	if (m != NULL && strcmp(m->provider, provider) == 0)
		return m;
	for (size_t i = 0; i < models_count(cfg->models); i++) {
		m = models_at(cfg->models, i);
		if (strcmp(m->provider, provider) == 0)
			return m;
	}
	return NULL;
}

/* content: a string, or an array of objects each with a string "type". */
static bool
content_ok(const json_t *c)
{
	size_t i;
	json_t *part;

	if (json_is_string(c))
		return true;
	if (!json_is_array(c))
		return false;
	json_array_foreach(c, i, part) {
		if (!json_is_object(part) ||
		    !json_is_string(json_object_get(part, "type")))
			return false;
	}
	return true;
}

static int
check_messages(const json_t *msgs, bool claude, struct gw_verr *err)
{
	const char *const *roles = claude ? claude_roles : openai_roles;
	size_t i;
	json_t *m;

	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return verr(err, 400, "invalid_messages", "messages",
		    "messages must be a non-empty array");
	json_array_foreach(msgs, i, m) {
		const json_t *role, *content;

		if (!json_is_object(m))
			return verr(err, 400, "invalid_messages", "messages",
			    "messages[%zu] must be an object", i);
		role = json_object_get(m, "role");
		if (!json_is_string(role) ||
		    !in_list(roles, json_string_value(role)))
			return verr(err, 400, "invalid_messages", "messages",
			    "messages[%zu].role must be one of %s", i,
			    claude ? "user, assistant"
				   : "system, user, assistant, tool, "
				     "developer, function");
		content = json_object_get(m, "content");
		/* OpenAI assistant turns may carry only tool calls. */
		if (!claude &&
		    strcmp(json_string_value(role), "assistant") == 0 &&
		    (content == NULL || json_is_null(content)))
			continue;
		if (content == NULL || !content_ok(content))
			return verr(err, 400, "invalid_messages", "messages",
			    "messages[%zu].content must be a string or an "
			    "array of objects with a string \"type\"",
			    i);
	}
	return 0;
}

/* A max_tokens-like field: absent (*ret_set false), or an integer in
 * 1..max. */
static int
check_tokens(const json_t *root, const char *key, bool null_ok, int64_t max,
    int64_t *ret, bool *ret_set, struct gw_verr *err)
{
	const json_t *v = json_object_get(root, key);
	json_int_t n;

	*ret_set = false;
	if (v == NULL || (null_ok && json_is_null(v)))
		return 0;
	if (!json_is_integer(v) || (n = json_integer_value(v)) < 1)
		return verr(err, 400, "invalid_max_tokens", key,
		    "%s must be an integer between 1 and %lld", key,
		    (long long)max);
	if (n > max)
		return verr(err, 400, "max_tokens_too_large", key,
		    "%s %lld exceeds the limit of %lld", key, (long long)n,
		    (long long)max);
	*ret = n;
	*ret_set = true;
	return 0;
}

static int
check_model(const struct gw_vcfg *cfg, const struct gw_route *r,
    const json_t *root, const char *provider, const struct model **ret,
    struct gw_verr *err)
{
	const json_t *v = json_object_get(root, "model");
	const struct model *m;

	if (v == NULL || json_is_null(v)) {
		if (r->provider == NULL)
			return verr(err, 400, "invalid_model", "model",
			    "model: field required");
		if ((m = gw_default_model(cfg, provider)) == NULL)
			return verr(err, 400, "unknown_model", "model",
			    "no default model for %s", provider);
		*ret = m;
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0)
		return verr(err, 400, "invalid_model", "model",
		    "model must be a non-empty string");
	if ((m = models_lookup(cfg->models, json_string_value(v))) == NULL)
		/* Never echo client text into an error message. */
		return verr(err, 400, "unknown_model", "model",
		    "unknown model; GET /v1/models lists the models");
	if (strcmp(m->provider, provider) != 0)
		return verr(err, 400, "model_provider_mismatch", "model",
		    "model %s is a %s model, this route serves %s", m->id,
		    m->provider, provider);
	*ret = m;
	return 0;
}

/* Drops the top-level keys the envelope routes do not forward. */
static void
filter_fields(json_t *root, const char *const *keep)
{
	const char *key;
	json_t *v;
	void *tmp;

	json_object_foreach_safe(root, tmp, key, v)
	{
		if (!in_list(keep, key))
			json_object_del(root, key);
	}
}

int
gw_validate_chat(const struct gw_vcfg *cfg, const struct gw_route *r,
    const char *body, size_t len, struct gw_chat *ret, struct gw_verr *err)
{
	const char *provider;
	const struct model *model = NULL;
	json_t *root = NULL, *v;
	json_error_t jerr;
	int64_t max_tokens = 0, mct = 0;
	bool claude, have_mt, have_mct, stream = false;
	char *out;
	int rv;

	memset(err, 0, sizeof(*err));
	if (len > cfg->max_body_bytes)
		return verr(err, 413, "body_too_large", NULL,
		    "request body exceeds %zu bytes", cfg->max_body_bytes);
	if (r->provider != NULL)
		provider = r->provider;
	else
		provider = r->id == GW_R_MESSAGES ? "claude" : "openai";
	claude = strcmp(provider, "claude") == 0;

	if (len == 0)
		return verr(
		    err, 400, "invalid_json", NULL, "request body is empty");
	if (jsonx_depth(body, len, GW_JSON_MAX_DEPTH) < 0)
		return verr(err, 400, "json_too_deep", NULL,
		    "request JSON nests deeper than %d levels",
		    GW_JSON_MAX_DEPTH);
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return verr(err, 400, "invalid_json", NULL,
		    "request body is not valid UTF-8 JSON (line %d, column "
		    "%d)",
		    jerr.line, jerr.column);
	if (!json_is_object(root)) {
		rv = verr(err, 400, "invalid_json", NULL,
		    "request body must be a JSON object");
		goto out;
	}
	if ((rv = check_model(cfg, r, root, provider, &model, err)) != 0)
		goto out;
	if ((rv = check_messages(
		 json_object_get(root, "messages"), claude, err)) != 0)
		goto out;
	if ((rv = check_tokens(root, "max_tokens", !claude, cfg->max_tokens,
		 &max_tokens, &have_mt, err)) != 0)
		goto out;
	have_mct = false;
	if (!claude && (rv = check_tokens(root, "max_completion_tokens", true,
			    cfg->max_tokens, &mct, &have_mct, err)) != 0)
		goto out;
	if (have_mct && (!have_mt || mct > max_tokens))
		max_tokens = mct;
	if (!have_mt && !have_mct) {
		if (r->id == GW_R_MESSAGES) {
			rv = verr(err, 400, "invalid_max_tokens", "max_tokens",
			    "max_tokens: field required");
			goto out;
		}
		max_tokens = cfg->default_max_tokens;
		if (max_tokens > cfg->max_tokens)
			max_tokens = cfg->max_tokens;
		if (json_object_set_new(root,
			claude ? "max_tokens" : "max_completion_tokens",
			json_integer(max_tokens)) != 0) {
			rv = -ENOMEM;
			goto out;
		}
	}
	v = json_object_get(root, "temperature");
	if (v != NULL && !json_is_null(v)) {
		double t = json_number_value(v), hi = claude ? 1.0 : 2.0;

		if (!json_is_number(v) || !isfinite(t) || t < 0.0 || t > hi) {
			rv =
			    verr(err, 400, "invalid_temperature", "temperature",
				"temperature must be a number between 0 and %g",
				hi);
			goto out;
		}
	}
	v = json_object_get(root, "stream");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_boolean(v)) {
			rv = verr(err, 400, "invalid_stream", "stream",
			    "stream must be true or false");
			goto out;
		}
		stream = json_is_true(v);
	}

	/* The upstream body. */
	if (r->provider != NULL)
		filter_fields(root, claude ? claude_fields : openai_fields);
	if (json_object_set_new(root, "model", json_string(model->id)) != 0) {
		rv = -ENOMEM;
		goto out;
	}
	if (stream && !claude) {
		json_t *so = json_object_get(root, "stream_options");

		if (!json_is_object(so)) {
			so = json_object();
			if (so == NULL || json_object_set_new(root,
					      "stream_options", so) != 0) {
				rv = -ENOMEM;
				goto out;
			}
		}
		if (json_object_set_new(so, "include_usage", json_true()) !=
		    0) {
			rv = -ENOMEM;
			goto out;
		}
	}
	if ((out = json_dumps(root, JSON_COMPACT)) == NULL) {
		rv = -ENOMEM;
		goto out;
	}
	ret->model = model;
	ret->provider = claude ? "claude" : "openai";
	ret->api = claude ? "messages" : "chat_completions";
	ret->stream = stream;
	ret->max_tokens = max_tokens;
	ret->upstream = out;
	ret->upstream_len = strlen(out);
	rv = 0;
out:
	json_decref(root);
	return rv;
}
