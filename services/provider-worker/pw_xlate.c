#include "pw_xlate.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

/* The text of a content value, as a new string: a string, or an array of
 * {"type":"text","text":...} (Anthropic's text blocks and OpenAI's text
 * parts have that same shape); -ENOTSUP for any other block or part. */
static int
content_text(const json_t *c, json_t **ret)
{
	json_t *blk;
	size_t i;
	char *all = NULL;
	size_t n = 0;

	if (json_is_string(c)) {
		*ret = json_string(json_string_value(c));
		return *ret != NULL ? 0 : -ENOMEM;
	}
	if (!json_is_array(c))
		return -EINVAL;
	json_array_foreach(c, i, blk) {
		const char *t = json_string_value(json_object_get(blk, "type"));
		const char *s = json_string_value(json_object_get(blk, "text"));
		size_t k;
		char *p;

		if (t == NULL || strcmp(t, "text") != 0 || s == NULL) {
			free(all);
			return -ENOTSUP;
		}
		k = strlen(s);
		if ((p = realloc(all, n + k + 1)) == NULL) {
			free(all);
			return -ENOMEM;
		}
		all = p;
		memcpy(all + n, s, k);
		n += k;
		all[n] = '\0';
	}
	*ret = json_stringn(all != NULL ? all : "", n);
	free(all);
	return *ret != NULL ? 0 : -ENOMEM;
}

static int
add_message(json_t *msgs, const char *role, json_t *text)
{
	json_t *m = json_pack("{s:s, s:o}", "role", role, "content", text);

	if (m == NULL || json_array_append_new(msgs, m) != 0)
		return -ENOMEM;
	return 0;
}

/* Request fields only their own provider understands: such a call is not
 * carried across (nor a stream, nor n > 1 completions). */
static const char *const claude_only[] = {
    "tools", "tool_choice", "thinking", NULL};
static const char *const openai_only[] = {
    "tools", "tool_choice", "functions", "response_format", NULL};

static bool
xlate_unsupported(json_t *in, const char *const keys[], bool check_n)
{
	const char *key;
	json_t *v;

	json_object_foreach(in, key, v) {
		if ((strcmp(key, "stream") == 0 && json_is_true(v)) ||
		    (check_n && strcmp(key, "n") == 0 &&
			json_integer_value(v) > 1))
			return true;
		for (size_t i = 0; keys[i] != NULL; i++)
			if (strcmp(key, keys[i]) == 0)
				return true;
	}
	return false;
}

int
pw_xlate_req_claude_to_openai(const char *body, size_t len, const char *model,
    char **ret, size_t *ret_len)
{
	json_t *in, *out = NULL, *msgs, *m, *v, *text;
	size_t i;
	int rv = -EINVAL;

	if ((in = json_loadb(body, len, 0, NULL)) == NULL ||
	    !json_is_object(in))
		goto done;
	/* Fields that change the answer in ways OpenAI cannot follow. */
	if (xlate_unsupported(in, claude_only, false)) {
		rv = -ENOTSUP;
		goto done;
	}
	if ((out = json_object()) == NULL || (msgs = json_array()) == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	json_object_set_new(out, "model", json_string(model));
	json_object_set_new(out, "messages", msgs);
	if ((v = json_object_get(in, "system")) != NULL) {
		if ((rv = content_text(v, &text)) != 0 ||
		    (rv = add_message(msgs, "system", text)) != 0)
			goto done;
	}
	rv = -EINVAL;
	if (!json_is_array(json_object_get(in, "messages")))
		goto done;
	json_array_foreach(json_object_get(in, "messages"), i, m) {
		const char *role =
		    json_string_value(json_object_get(m, "role"));

		if (role == NULL || (strcmp(role, "user") != 0 &&
					strcmp(role, "assistant") != 0))
			goto done;
		if ((rv = content_text(json_object_get(m, "content"), &text)) !=
			0 ||
		    (rv = add_message(msgs, role, text)) != 0)
			goto done;
		rv = -EINVAL;
	}
	if (json_is_integer(v = json_object_get(in, "max_tokens")))
		json_object_set(out, "max_tokens", v);
	if (json_is_number(v = json_object_get(in, "temperature")))
		json_object_set(out, "temperature", v);
	if (json_is_number(v = json_object_get(in, "top_p")))
		json_object_set(out, "top_p", v);
	if (json_is_array(v = json_object_get(in, "stop_sequences")) &&
	    json_array_size(v) > 0)
		json_object_set(out, "stop", v);
	if ((*ret = json_dumps(out, JSON_COMPACT)) == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	*ret_len = strlen(*ret);
	rv = 0;
done:
	json_decref(in);
	json_decref(out);
	return rv;
}

int
pw_xlate_map_check(
    const char *map, const struct model_table *models, char *err, size_t errlen)
{
	char key[MODEL_ID_MAX + 1], val[MODEL_ID_MAX + 1];
	const struct model *m;
	const char *kp;

	for (const char *p = map; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, ","), k = strcspn(p, "=");

		if (k >= n || k == 0 || k > MODEL_ID_MAX || n - k - 1 == 0 ||
		    n - k - 1 > MODEL_ID_MAX) {
			snprintf(err, errlen,
			    "expected <claude model>=<openai model>, got "
			    "\"%.*s\"",
			    (int)(n > 80 ? 80 : n), p);
			return -EINVAL;
		}
		memcpy(key, p, k);
		key[k] = '\0';
		memcpy(val, p + k + 1, n - k - 1);
		val[n - k - 1] = '\0';
		kp = NULL;
		if (strcmp(key, "*") != 0) {
			if ((m = models_lookup(models, key)) == NULL) {
				snprintf(
				    err, errlen, "\"%s\" is no model", key);
				return -EINVAL;
			}
			kp = m->provider;
		}
		if ((m = models_lookup(models, val)) == NULL) {
			snprintf(err, errlen, "\"%s\" is no model", val);
			return -EINVAL;
		}
		if (kp != NULL && strcmp(kp, m->provider) == 0) {
			snprintf(err, errlen,
			    "\"%s\" and \"%s\" are of the same provider", key,
			    val);
			return -EINVAL;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

int
pw_xlate_req_openai_to_claude(const char *body, size_t len, const char *model,
    long default_max_tokens, char **ret, size_t *ret_len)
{
	json_t *in, *out = NULL, *msgs, *m, *v, *text = NULL;
	char *system = NULL;
	size_t i, slen = 0;
	int rv = -EINVAL;

	if ((in = json_loadb(body, len, 0, NULL)) == NULL ||
	    !json_is_object(in))
		goto done;
	if (xlate_unsupported(in, openai_only, true)) {
		rv = -ENOTSUP;
		goto done;
	}
	if ((out = json_object()) == NULL || (msgs = json_array()) == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	json_object_set_new(out, "model", json_string(model));
	json_object_set_new(out, "messages", msgs);
	if (!json_is_array(json_object_get(in, "messages")))
		goto done;
	json_array_foreach(json_object_get(in, "messages"), i, m) {
		const char *role =
		    json_string_value(json_object_get(m, "role"));

		rv = -EINVAL;
		if (role == NULL)
			goto done;
		if ((rv = content_text(json_object_get(m, "content"), &text)) !=
		    0)
			goto done;
		if (strcmp(role, "system") == 0 ||
		    strcmp(role, "developer") == 0) {
			size_t k = json_string_length(text);
			char *p = realloc(system, slen + k + 2);

			if (p == NULL) {
				rv = -ENOMEM;
				goto done;
			}
			system = p;
			if (slen > 0)
				system[slen++] = '\n';
			memcpy(system + slen, json_string_value(text), k);
			slen += k;
			system[slen] = '\0';
			json_decref(text);
			text = NULL;
			continue;
		}
		if (strcmp(role, "user") != 0 &&
		    strcmp(role, "assistant") != 0) {
			rv = -ENOTSUP;
			goto done;
		}
		rv = add_message(msgs, role, text); /* takes text */
		text = NULL;
		if (rv != 0)
			goto done;
	}
	rv = -EINVAL;
	if (json_array_size(msgs) == 0)
		goto done;
	if (system != NULL)
		json_object_set_new(out, "system", json_stringn(system, slen));
	if (json_is_integer(v = json_object_get(in, "max_completion_tokens")) ||
	    json_is_integer(v = json_object_get(in, "max_tokens")))
		json_object_set(out, "max_tokens", v);
	else
		json_object_set_new(out, "max_tokens",
		    json_integer((json_int_t)default_max_tokens));
	if (json_is_number(v = json_object_get(in, "temperature")))
		json_object_set_new(out, "temperature",
		    json_real(json_number_value(v) > 1.0
				  ? 1.0
				  : json_number_value(v)));
	if (json_is_number(v = json_object_get(in, "top_p")))
		json_object_set(out, "top_p", v);
	if (json_is_string(v = json_object_get(in, "stop")))
		json_object_set_new(out, "stop_sequences", json_pack("[O]", v));
	else if (json_is_array(v) && json_array_size(v) > 0)
		json_object_set(out, "stop_sequences", v);
	if ((*ret = json_dumps(out, JSON_COMPACT)) == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	*ret_len = strlen(*ret);
	rv = 0;
done:
	free(system);
	json_decref(text);
	json_decref(in);
	json_decref(out);
	return rv;
}

static const char *
finish_reason(const char *stop)
{
	if (stop != NULL && strcmp(stop, "max_tokens") == 0)
		return "length";
	if (stop != NULL && strcmp(stop, "tool_use") == 0)
		return "tool_calls";
	return "stop";
}

int
pw_xlate_resp_claude_to_openai(const char *body, size_t len, struct buf *out)
{
	json_t *in, *blk, *usage, *m = NULL;
	char *text = NULL, *s = NULL, *p;
	size_t i, n = 0;
	int64_t pin, pout;
	int rv = -EINVAL;

	if ((in = json_loadb(body, len, 0, NULL)) == NULL)
		return -EINVAL;
	usage = json_object_get(in, "usage");
	if (!json_is_array(json_object_get(in, "content")) ||
	    !json_is_object(usage))
		goto done;
	json_array_foreach(json_object_get(in, "content"), i, blk) {
		const char *t = json_string_value(json_object_get(blk, "text"));
		size_t k;

		if (t == NULL)
			continue;
		k = strlen(t);
		if ((p = realloc(text, n + k + 1)) == NULL) {
			rv = -ENOMEM;
			goto done;
		}
		text = p;
		memcpy(text + n, t, k);
		n += k;
		text[n] = '\0';
	}
	pin = (int64_t)json_integer_value(
		  json_object_get(usage, "input_tokens")) +
	      (int64_t)json_integer_value(
		  json_object_get(usage, "cache_read_input_tokens")) +
	      (int64_t)json_integer_value(
		  json_object_get(usage, "cache_creation_input_tokens"));
	pout = (int64_t)json_integer_value(
	    json_object_get(usage, "output_tokens"));
	m = json_pack("{s:s?, s:s, s:I, s:s?, s:[{s:i, s:{s:s, s:s%}, s:n, "
		      "s:s}], s:{s:I, s:I, s:I}}",
	    "id", json_string_value(json_object_get(in, "id")), "object",
	    "chat.completion", "created", (json_int_t)time(NULL), "model",
	    json_string_value(json_object_get(in, "model")), "choices", "index",
	    0, "message", "role", "assistant", "content",
	    text != NULL ? text : "", n, "logprobs", "finish_reason",
	    finish_reason(
		json_string_value(json_object_get(in, "stop_reason"))),
	    "usage", "prompt_tokens", (json_int_t)pin, "completion_tokens",
	    (json_int_t)pout, "total_tokens", (json_int_t)(pin + pout));
	if (m == NULL || (s = json_dumps(m, JSON_COMPACT)) == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	buf_reset(out);
	rv = buf_append_str(out, s);
done:
	free(s);
	free(text);
	json_decref(m);
	json_decref(in);
	return rv;
}

static const char *
stop_reason(const char *finish)
{
	if (finish == NULL)
		return "end_turn";
	if (strcmp(finish, "length") == 0)
		return "max_tokens";
	if (strcmp(finish, "tool_calls") == 0)
		return "tool_use";
	return "end_turn";
}

int
pw_xlate_resp_openai_to_claude(const char *body, size_t len, struct buf *out)
{
	json_t *in, *choice, *usage, *msg;
	const char *text;
	char *s = NULL;
	int rv = -EINVAL;

	if ((in = json_loadb(body, len, 0, NULL)) == NULL)
		return -EINVAL;
	choice = json_array_get(json_object_get(in, "choices"), 0);
	msg = json_object_get(choice, "message");
	usage = json_object_get(in, "usage");
	text = json_string_value(json_object_get(msg, "content"));
	if (!json_is_object(choice) || !json_is_object(usage))
		goto done;
	{
		json_t *m = json_pack("{s:s?, s:s, s:s, s:s?, s:[{s:s, s:s}], "
				      "s:s, s:n, s:{s:I, s:I}}",
		    "id", json_string_value(json_object_get(in, "id")), "type",
		    "message", "role", "assistant", "model",
		    json_string_value(json_object_get(in, "model")), "content",
		    "type", "text", "text", text != NULL ? text : "",
		    "stop_reason",
		    stop_reason(json_string_value(
			json_object_get(choice, "finish_reason"))),
		    "stop_sequence", "usage", "input_tokens",
		    (json_int_t)json_integer_value(
			json_object_get(usage, "prompt_tokens")),
		    "output_tokens",
		    (json_int_t)json_integer_value(
			json_object_get(usage, "completion_tokens")));

		if (m == NULL) {
			rv = -ENOMEM;
			goto done;
		}
		s = json_dumps(m, JSON_COMPACT);
		json_decref(m);
	}
	if (s == NULL) {
		rv = -ENOMEM;
		goto done;
	}
	buf_reset(out);
	rv = buf_append_str(out, s);
done:
	free(s);
	json_decref(in);
	return rv;
}
