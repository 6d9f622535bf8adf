/*
 * Request analysis, fault specs and response generation for both
 * providers.  Byte layout follows docs/upstream-apis.md sections 1 and 2;
 * the deterministic usage rules are in tests/mock-upstream/README.md.
 */
#include "mock.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEN_PREFIX     "Mock reply to: "
#define GEN_REPLY_MAX  (sizeof(GEN_PREFIX) + MOCK_QUOTE_MAX + 1)
#define GEN_WORDS_MAX  64
#define GEN_FRAG_LEN   8
#define GEN_FRAGS_MAX  64
#define GEN_TEXT_DEPTH 4
#define GEN_ANTHROPIC_ERR_EVENT                                                \
	"event: error\ndata: "                                                 \
	"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","        \
	"\"message\":\"Overloaded\"}}\n\n"
#define GEN_OPENAI_ERR_EVENT                                                   \
	"data: {\"error\":{\"message\":\"The server had an error while "       \
	"processing your request. Sorry about that!\",\"type\":"               \
	"\"server_error\",\"param\":null,\"code\":null}}\n\n"
#define GEN_PING "event: ping\ndata: {\"type\": \"ping\"}\n\n"

/* ---- fault specs ---- */

void
mock_fault_init(struct mock_fault *f)
{
	memset(f, 0, sizeof(*f));
	f->retry_after = -1;
	f->retry_after_ms = -1;
	f->latency_ms = -1;
	f->chunk_delay_ms = -1;
	f->duration_ms = -1;
	f->drop_after = -1;
	f->stall_after = -1;
	f->error_event_after = -1;
	f->fail_first = -1;
	f->cache_read = -1;
	f->cache_write = -1;
}

static int
gen_parse_long(const char *s, size_t len, long max, long *ret)
{
	char buf[32];
	char *end;
	long v;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtol(buf, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0 || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

int
mock_fault_parse(const char *spec, size_t len, struct mock_fault *ret)
{
	static const struct {
		const char *name;
		size_t off;
		long max;
	} keys[] = {
	    {"retry-after", offsetof(struct mock_fault, retry_after), 86400},
	    {"retry-after-ms", offsetof(struct mock_fault, retry_after_ms),
		86400000},
	    {"latency-ms", offsetof(struct mock_fault, latency_ms), 600000},
	    {"chunk-delay-ms", offsetof(struct mock_fault, chunk_delay_ms),
		600000},
	    {"duration-ms", offsetof(struct mock_fault, duration_ms), 3600000},
	    {"drop-after", offsetof(struct mock_fault, drop_after), 1000000},
	    {"stall-after", offsetof(struct mock_fault, stall_after), 1000000},
	    {"error-event-after",
		offsetof(struct mock_fault, error_event_after), 1000000},
	    {"fail-first", offsetof(struct mock_fault, fail_first), 1000000},
	    {"cache-read", offsetof(struct mock_fault, cache_read), 1000000000},
	    {"cache-write", offsetof(struct mock_fault, cache_write),
		1000000000},
	};
	struct mock_fault f;
	const char *p = spec, *end = spec + len, *item_end, *eq;
	size_t i, klen, vlen;
	long v;

	mock_fault_init(&f);
	while (p < end) {
		item_end = memchr(p, ';', (size_t)(end - p));
		if (item_end == NULL)
			item_end = end;
		while (p < item_end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == item_end) {
			p = item_end + 1;
			continue;
		}
		eq = memchr(p, '=', (size_t)(item_end - p));
		if (eq == NULL)
			return -EINVAL;
		klen = (size_t)(eq - p);
		vlen = (size_t)(item_end - eq - 1);
		while (vlen > 0 && (eq[vlen] == ' ' || eq[vlen] == '\t'))
			vlen--;
		if (klen == 6 && memcmp(p, "status", 6) == 0) {
			if (gen_parse_long(eq + 1, vlen, 599, &v) != 0 ||
			    v < 400)
				return -EINVAL;
			f.status = (int)v;
		} else if (klen == 3 && memcmp(p, "key", 3) == 0) {
			if (vlen == 0 || vlen >= sizeof(f.key))
				return -EINVAL;
			memcpy(f.key, eq + 1, vlen);
			f.key[vlen] = '\0';
		} else {
			for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
				if (strlen(keys[i].name) == klen &&
				    memcmp(keys[i].name, p, klen) == 0)
					break;
			}
			if (i == sizeof(keys) / sizeof(keys[0]))
				return -EINVAL;
			if (gen_parse_long(eq + 1, vlen, keys[i].max, &v) != 0)
				return -EINVAL;
			*(long *)(void *)((char *)&f + keys[i].off) = v;
		}
		p = item_end + 1;
	}
	if (f.fail_first >= 0 && f.status == 0)
		f.status = 500;
	*ret = f;
	return 0;
}

bool
mock_fault_directive(const char *buf, size_t len, char *out, size_t outlen)
{
	static const char open[] = "[[mock:";
	const char *p, *q;
	size_t n;

	if (buf == NULL)
		return false;
	p = memmem(buf, len, open, sizeof(open) - 1);
	if (p == NULL)
		return false;
	p += sizeof(open) - 1;
	q = memmem(p, len - (size_t)(p - buf), "]]", 2);
	if (q == NULL)
		return false;
	n = (size_t)(q - p);
	if (n >= outlen)
		return false;
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* ---- plans ---- */

void
mock_plan_init(struct mock_plan *p, enum mock_prov prov)
{
	memset(p, 0, sizeof(*p));
	p->prov = prov;
	p->retry_after = -1;
	p->retry_after_ms = -1;
	p->latency_ms = -1;
	p->chunk_delay_ms = -1;
	p->duration_ms = -1;
}

void
mock_plan_reset(struct mock_plan *p)
{
	size_t i;

	free(p->body);
	for (i = 0; i < p->n_events; i++)
		free(p->events[i]);
	free(p->events);
	free(p->event_lens);
	mock_plan_init(p, p->prov);
}

static int
plan_add_raw(struct mock_plan *p, char *s, size_t len)
{
	char **ne;
	size_t *nl, cap;

	if (p->n_events == p->cap_events) {
		cap = p->cap_events != 0 ? 2 * p->cap_events : 16;
		ne = realloc(p->events, cap * sizeof(*ne));
		if (ne == NULL)
			goto fail;
		p->events = ne;
		nl = realloc(p->event_lens, cap * sizeof(*nl));
		if (nl == NULL)
			goto fail;
		p->event_lens = nl;
		p->cap_events = cap;
	}
	p->events[p->n_events] = s;
	p->event_lens[p->n_events] = len;
	p->n_events++;
	return 0;
fail:
	free(s);
	return -ENOMEM;
}

static int
plan_add_str(struct mock_plan *p, const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		return -ENOMEM;
	return plan_add_raw(p, d, strlen(d));
}

/* "event: <name>\ndata: <json>\n\n", or "data: <json>\n\n" when name is
 * NULL.  Takes data. */
static int
plan_add_json(struct mock_plan *p, const char *name, json_t *data)
{
	char *js, *ev;
	int n;

	if (data == NULL)
		return -ENOMEM;
	js = json_dumps(data, JSON_COMPACT);
	json_decref(data);
	if (js == NULL)
		return -ENOMEM;
	if (name != NULL)
		n = asprintf(&ev, "event: %s\ndata: %s\n\n", name, js);
	else
		n = asprintf(&ev, "data: %s\n\n", js);
	free(js);
	if (n < 0)
		return -ENOMEM;
	return plan_add_raw(p, ev, (size_t)n);
}

/* Takes body. */
static int
plan_set_body(struct mock_plan *p, unsigned int status, json_t *body)
{
	if (body == NULL)
		return -ENOMEM;
	p->body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (p->body == NULL)
		return -ENOMEM;
	p->body_len = strlen(p->body);
	p->status = status;
	p->stream = false;
	return 0;
}

/* ---- analysis ---- */

struct text_acc {
	size_t total;
	bool quoting;
	char quote[MOCK_QUOTE_MAX + 2];
	size_t quote_len;
};

static void
acc_add(struct text_acc *a, const char *s, size_t n)
{
	size_t room;

	a->total += n;
	if (!a->quoting)
		return;
	room = MOCK_QUOTE_MAX + 1 - a->quote_len;
	if (n > room)
		n = room;
	memcpy(a->quote + a->quote_len, s, n);
	a->quote_len += n;
	a->quote[a->quote_len] = '\0';
}

static void
acc_value(struct text_acc *a, json_t *content, bool anthropic, int depth)
{
	json_t *block, *t;
	size_t i;
	const char *type;

	if (json_is_string(content)) {
		acc_add(
		    a, json_string_value(content), json_string_length(content));
		return;
	}
	if (!json_is_array(content) || depth > GEN_TEXT_DEPTH)
		return;
	json_array_foreach(content, i, block) {
		if (!json_is_object(block))
			continue;
		type = json_string_value(json_object_get(block, "type"));
		if (type == NULL)
			continue;
		if (strcmp(type, "text") == 0) {
			t = json_object_get(block, "text");
			if (json_is_string(t))
				acc_add(a, json_string_value(t),
				    json_string_length(t));
		} else if (anthropic && strcmp(type, "tool_result") == 0) {
			acc_value(a, json_object_get(block, "content"), true,
			    depth + 1);
		}
	}
}

static int
gen_fail(char *errmsg, size_t errlen, const char **ret_param, const char *param,
    const char *msg)
{
	snprintf(errmsg, errlen, "%s", msg);
	*ret_param = param;
	return -EINVAL;
}

/* First entry of schema.required, or "input". */
static const char *
gen_tool_prop(json_t *schema)
{
	json_t *req = json_object_get(schema, "required");
	const char *s = json_string_value(json_array_get(req, 0));

	return s != NULL && s[0] != '\0' ? s : "input";
}

int
mock_gen_analyze(enum mock_prov prov, json_t *req, struct mock_info *ret,
    char *errmsg, size_t errlen, const char **ret_param)
{
	bool anthropic = prov == MOCK_PROV_ANTHROPIC;
	struct text_acc acc;
	struct mock_info info;
	json_t *v, *msgs, *msg, *tools, *tool, *choice, *fn;
	const char *role;
	size_t i, n;

	memset(&info, 0, sizeof(info));
	memset(&acc, 0, sizeof(acc));
	info.prov = prov;
	info.max_tokens = -1;
	*ret_param = NULL;
	if (!json_is_object(req))
		return gen_fail(errmsg, errlen, ret_param, NULL,
		    "request body must be a JSON object");
	info.model = json_string_value(json_object_get(req, "model"));
	if (info.model == NULL)
		return gen_fail(errmsg, errlen, ret_param, "model",
		    "model: Field required");
	msgs = json_object_get(req, "messages");
	if (!json_is_array(msgs) || json_array_size(msgs) == 0)
		return gen_fail(errmsg, errlen, ret_param, "messages",
		    "messages: at least one message is required");
	if (anthropic) {
		v = json_object_get(req, "max_tokens");
		if (!json_is_integer(v) || json_integer_value(v) < 1)
			return gen_fail(errmsg, errlen, ret_param, "max_tokens",
			    "max_tokens: Field required (integer >= 1)");
		info.max_tokens = json_integer_value(v) > LONG_MAX
				      ? LONG_MAX
				      : (long)json_integer_value(v);
	} else {
		static const char *const names[] = {
		    "max_completion_tokens", "max_tokens"};

		for (i = 0; i < 2; i++) {
			v = json_object_get(req, names[i]);
			if (v == NULL || json_is_null(v))
				continue;
			if (!json_is_integer(v) || json_integer_value(v) < 1)
				return gen_fail(errmsg, errlen, ret_param,
				    names[i],
				    "Invalid 'max_tokens': integer below "
				    "minimum value 1.");
			if (info.max_tokens < 0)
				info.max_tokens =
				    json_integer_value(v) > LONG_MAX
					? LONG_MAX
					: (long)json_integer_value(v);
		}
	}
	info.stream = json_is_true(json_object_get(req, "stream"));
	info.include_usage =
	    !anthropic && info.stream &&
	    json_is_true(json_object_get(
		json_object_get(req, "stream_options"), "include_usage"));

	if (anthropic)
		acc_value(&acc, json_object_get(req, "system"), true, 0);
	n = json_array_size(msgs);
	for (i = 0; i < n; i++) {
		msg = json_array_get(msgs, i);
		if (!json_is_object(msg))
			return gen_fail(errmsg, errlen, ret_param, "messages",
			    "messages: each message must be an object");
		role = json_string_value(json_object_get(msg, "role"));
		if (role != NULL && strcmp(role, "user") == 0) {
			acc.quoting = true;
			acc.quote_len = 0;
			acc.quote[0] = '\0';
		}
		acc_value(&acc, json_object_get(msg, "content"), anthropic, 0);
		acc.quoting = false;
	}
	info.text_bytes = acc.total;
	/* Cut at a UTF-8 boundary. */
	n = acc.quote_len;
	if (n > MOCK_QUOTE_MAX) {
		n = MOCK_QUOTE_MAX;
		while (n > 0 && ((unsigned char)acc.quote[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(info.quote, acc.quote, n);
	info.quote[n] = '\0';

	tools = json_object_get(req, "tools");
	tool = json_array_get(tools, 0);
	choice = json_object_get(req, "tool_choice");
	if (json_is_object(tool)) {
		if (anthropic) {
			const char *ct =
			    json_string_value(json_object_get(choice, "type"));

			if (ct == NULL || strcmp(ct, "none") != 0) {
				info.tool_name = json_string_value(
				    json_object_get(tool, "name"));
				info.tool_prop = gen_tool_prop(
				    json_object_get(tool, "input_schema"));
			}
		} else {
			const char *cs = json_string_value(choice);

			fn = json_object_get(tool, "function");
			if (cs == NULL || strcmp(cs, "none") != 0) {
				info.tool_name = json_string_value(
				    json_object_get(fn, "name"));
				info.tool_prop = gen_tool_prop(
				    json_object_get(fn, "parameters"));
			}
		}
	}
	*ret = info;
	return 0;
}

/* ---- replies ---- */

struct gen_reply {
	char text[GEN_REPLY_MAX];
	size_t piece_off[GEN_WORDS_MAX + 1]; /* pieces: word + spaces */
	size_t n_pieces;
	long output_tokens;
	bool cut; /* by max_tokens */
	/* tool call */
	char *args; /* compact JSON of the tool input */
	size_t frag_off[GEN_FRAGS_MAX + 1];
	size_t n_frags;
};

static int
gen_reply_build(const struct mock_info *info, struct gen_reply *r)
{
	size_t len, i, k;
	json_t *input;

	memset(r, 0, sizeof(*r));
	if (info->tool_name != NULL) {
		input = json_pack("{s:s}", info->tool_prop, "mock");
		if (input == NULL)
			return -ENOMEM;
		r->args = json_dumps(input, JSON_COMPACT);
		json_decref(input);
		if (r->args == NULL)
			return -ENOMEM;
		len = strlen(r->args);
		/* Fragments of <= GEN_FRAG_LEN bytes on UTF-8 boundaries. */
		for (i = 0; i < len && r->n_frags < GEN_FRAGS_MAX;) {
			r->frag_off[r->n_frags++] = i;
			k = i + GEN_FRAG_LEN;
			if (k >= len || r->n_frags == GEN_FRAGS_MAX) {
				k = len;
			} else {
				while (k > i + 1 && ((unsigned char)r->args[k] &
							0xC0) == 0x80)
					k--;
			}
			i = k;
		}
		r->frag_off[r->n_frags] = len;
		r->output_tokens = (long)r->n_frags;
		return 0;
	}
	snprintf(r->text, sizeof(r->text), "%s%s", GEN_PREFIX, info->quote);
	len = strlen(r->text);
	for (i = 0; i < len && r->n_pieces < GEN_WORDS_MAX; i++) {
		if (r->text[i] != ' ' && (i == 0 || r->text[i - 1] == ' '))
			r->piece_off[r->n_pieces++] = i;
	}
	r->piece_off[r->n_pieces] = len;
	if (info->max_tokens >= 0 && (size_t)info->max_tokens < r->n_pieces) {
		r->n_pieces = (size_t)info->max_tokens;
		len = r->piece_off[r->n_pieces];
		while (len > 0 && r->text[len - 1] == ' ')
			len--;
		r->text[len] = '\0';
		r->piece_off[r->n_pieces] = len;
		r->cut = true;
	}
	r->output_tokens = (long)r->n_pieces;
	return 0;
}

struct gen_usage {
	long input;
	long output;
	long cache_read;
	long cache_write;
};

static json_t *
gen_anthropic_usage(const struct gen_usage *u, bool with_tier)
{
	json_t *o = json_pack("{s:I,s:I,s:I,s:{s:I,s:I},s:I}", "input_tokens",
	    (json_int_t)u->input, "cache_creation_input_tokens",
	    (json_int_t)u->cache_write, "cache_read_input_tokens",
	    (json_int_t)u->cache_read, "cache_creation",
	    "ephemeral_5m_input_tokens", (json_int_t)u->cache_write,
	    "ephemeral_1h_input_tokens", (json_int_t)0, "output_tokens",
	    (json_int_t)u->output);

	if (o != NULL && with_tier)
		json_object_set_new(o, "service_tier", json_string("standard"));
	return o;
}

static json_t *
gen_openai_usage(const struct gen_usage *u)
{
	json_int_t prompt = (json_int_t)u->input + (json_int_t)u->cache_read;

	return json_pack("{s:I,s:I,s:I,s:{s:I,s:I},s:{s:I,s:I,s:I,s:I}}",
	    "prompt_tokens", prompt, "completion_tokens", (json_int_t)u->output,
	    "total_tokens", prompt + (json_int_t)u->output,
	    "prompt_tokens_details", "cached_tokens", (json_int_t)u->cache_read,
	    "audio_tokens", (json_int_t)0, "completion_tokens_details",
	    "reasoning_tokens", (json_int_t)0, "audio_tokens", (json_int_t)0,
	    "accepted_prediction_tokens", (json_int_t)0,
	    "rejected_prediction_tokens", (json_int_t)0);
}

static json_t *
gen_text_piece(const struct gen_reply *r, size_t i)
{
	size_t a = r->piece_off[i], b = r->piece_off[i + 1];

	return json_stringn(r->text + a, b - a);
}

static json_t *
gen_frag(const struct gen_reply *r, size_t i)
{
	size_t a = r->frag_off[i], b = r->frag_off[i + 1];

	return json_stringn(r->args + a, b - a);
}

static int
gen_anthropic(const struct mock_info *info, const struct gen_reply *r,
    const struct gen_usage *u, unsigned long long seq, struct mock_plan *p)
{
	char id[64], tool_id[64];
	const char *stop = info->tool_name != NULL ? "tool_use"
			   : r->cut                ? "max_tokens"
						   : "end_turn";
	json_t *o, *block;
	struct gen_usage u0 = *u;
	size_t i;
	int rv;

	snprintf(id, sizeof(id), "msg_mock%llu", seq);
	snprintf(tool_id, sizeof(tool_id), "toolu_mock%llu", seq);
	if (!info->stream) {
		if (info->tool_name != NULL)
			block = json_pack("{s:s,s:s,s:s,s:{s:s}}", "type",
			    "tool_use", "id", tool_id, "name", info->tool_name,
			    "input", info->tool_prop, "mock");
		else
			block = json_pack(
			    "{s:s,s:s}", "type", "text", "text", r->text);
		o = json_pack("{s:s,s:s,s:s,s:s,s:[o],s:s,s:n,s:o}", "id", id,
		    "type", "message", "role", "assistant", "model",
		    info->model, "content", block, "stop_reason", stop,
		    "stop_sequence", "usage", gen_anthropic_usage(u, true));
		return plan_set_body(p, 200, o);
	}
	p->status = 200;
	p->stream = true;
	u0.output = 1;
	o = json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}}", "type",
	    "message_start", "message", "id", id, "type", "message", "role",
	    "assistant", "model", info->model, "content", "stop_reason",
	    "stop_sequence", "usage", gen_anthropic_usage(&u0, true));
	if ((rv = plan_add_json(p, "message_start", o)) != 0)
		return rv;
	if (info->tool_name != NULL)
		block = json_pack("{s:s,s:s,s:s,s:{}}", "type", "tool_use",
		    "id", tool_id, "name", info->tool_name, "input");
	else
		block = json_pack("{s:s,s:s}", "type", "text", "text", "");
	o = json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index",
	    0, "content_block", block);
	if ((rv = plan_add_json(p, "content_block_start", o)) != 0)
		return rv;
	if ((rv = plan_add_str(p, GEN_PING)) != 0)
		return rv;
	if (info->tool_name != NULL) {
		o = json_pack("{s:s,s:i,s:{s:s,s:s}}", "type",
		    "content_block_delta", "index", 0, "delta", "type",
		    "input_json_delta", "partial_json", "");
		if ((rv = plan_add_json(p, "content_block_delta", o)) != 0)
			return rv;
		for (i = 0; i < r->n_frags; i++) {
			o = json_pack("{s:s,s:i,s:{s:s,s:o}}", "type",
			    "content_block_delta", "index", 0, "delta", "type",
			    "input_json_delta", "partial_json", gen_frag(r, i));
			rv = plan_add_json(p, "content_block_delta", o);
			if (rv != 0)
				return rv;
		}
	} else {
		for (i = 0; i < r->n_pieces; i++) {
			o = json_pack("{s:s,s:i,s:{s:s,s:o}}", "type",
			    "content_block_delta", "index", 0, "delta", "type",
			    "text_delta", "text", gen_text_piece(r, i));
			rv = plan_add_json(p, "content_block_delta", o);
			if (rv != 0)
				return rv;
		}
	}
	o = json_pack("{s:s,s:i}", "type", "content_block_stop", "index", 0);
	if ((rv = plan_add_json(p, "content_block_stop", o)) != 0)
		return rv;
	o = json_pack("{s:s,s:{s:s,s:n},s:{s:I}}", "type", "message_delta",
	    "delta", "stop_reason", stop, "stop_sequence", "usage",
	    "output_tokens", (json_int_t)u->output);
	if ((rv = plan_add_json(p, "message_delta", o)) != 0)
		return rv;
	o = json_pack("{s:s}", "type", "message_stop");
	return plan_add_json(p, "message_stop", o);
}

/* One chat.completion.chunk; takes delta.  finish may be NULL. */
static int
gen_openai_chunk(struct mock_plan *p, const struct mock_info *info,
    const char *id, long long created, json_t *delta, const char *finish)
{
	json_t *o;

	if (delta == NULL)
		return -ENOMEM;
	o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[{s:i,s:o,s:n,s:o}]}", "id", id,
	    "object", "chat.completion.chunk", "created", (json_int_t)created,
	    "model", info->model, "system_fingerprint", "fp_mock", "choices",
	    "index", 0, "delta", delta, "logprobs", "finish_reason",
	    finish != NULL ? json_string(finish) : json_null());
	if (o != NULL && info->include_usage)
		json_object_set_new(o, "usage", json_null());
	return plan_add_json(p, NULL, o);
}

static int
gen_openai(const struct mock_info *info, const struct gen_reply *r,
    const struct gen_usage *u, unsigned long long seq, struct mock_plan *p)
{
	char id[64], call_id[64];
	long long created = mock_wall_ms() / 1000;
	const char *finish = info->tool_name != NULL ? "tool_calls"
			     : r->cut                ? "length"
						     : "stop";
	json_t *o, *msg, *delta;
	size_t i;
	int rv;

	snprintf(id, sizeof(id), "chatcmpl-mock%llu", seq);
	snprintf(call_id, sizeof(call_id), "call_mock%llu", seq);
	if (!info->stream) {
		if (info->tool_name != NULL)
			msg = json_pack("{s:s,s:n,s:n,s:[],s:[{s:s,s:s,s:{s:s,"
					"s:s}}]}",
			    "role", "assistant", "content", "refusal",
			    "annotations", "tool_calls", "id", call_id, "type",
			    "function", "function", "name", info->tool_name,
			    "arguments", r->args);
		else
			msg =
			    json_pack("{s:s,s:s,s:n,s:[]}", "role", "assistant",
				"content", r->text, "refusal", "annotations");
		o = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s}],s:o,s:s,"
			      "s:s}",
		    "id", id, "object", "chat.completion", "created",
		    (json_int_t)created, "model", info->model, "choices",
		    "index", 0, "message", msg, "logprobs", "finish_reason",
		    finish, "usage", gen_openai_usage(u), "service_tier",
		    "default", "system_fingerprint", "fp_mock");
		return plan_set_body(p, 200, o);
	}
	p->status = 200;
	p->stream = true;
	if (info->tool_name != NULL) {
		delta = json_pack("{s:s,s:n,s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}",
		    "role", "assistant", "content", "tool_calls", "index", 0,
		    "id", call_id, "type", "function", "function", "name",
		    info->tool_name, "arguments", "");
		rv = gen_openai_chunk(p, info, id, created, delta, NULL);
		if (rv != 0)
			return rv;
		for (i = 0; i < r->n_frags; i++) {
			delta = json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls",
			    "index", 0, "function", "arguments",
			    gen_frag(r, i));
			rv =
			    gen_openai_chunk(p, info, id, created, delta, NULL);
			if (rv != 0)
				return rv;
		}
	} else {
		delta = json_pack("{s:s,s:s,s:n}", "role", "assistant",
		    "content", "", "refusal");
		rv = gen_openai_chunk(p, info, id, created, delta, NULL);
		if (rv != 0)
			return rv;
		for (i = 0; i < r->n_pieces; i++) {
			delta =
			    json_pack("{s:o}", "content", gen_text_piece(r, i));
			rv =
			    gen_openai_chunk(p, info, id, created, delta, NULL);
			if (rv != 0)
				return rv;
		}
	}
	rv = gen_openai_chunk(p, info, id, created, json_object(), finish);
	if (rv != 0)
		return rv;
	if (info->include_usage) {
		o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[],s:o}", "id", id,
		    "object", "chat.completion.chunk", "created",
		    (json_int_t)created, "model", info->model,
		    "system_fingerprint", "fp_mock", "choices", "usage",
		    gen_openai_usage(u));
		if ((rv = plan_add_json(p, NULL, o)) != 0)
			return rv;
	}
	return plan_add_str(p, "data: [DONE]\n\n");
}

/* Cuts the stream after n events and ends it as the fault says. */
static int
gen_apply_stream_faults(const struct mock_fault *f, struct mock_plan *p)
{
	long cut = -1;
	enum mock_end end = MOCK_END_OK;
	bool error_event = false;
	size_t i;

	if (f->drop_after >= 0) {
		cut = f->drop_after;
		end = MOCK_END_DROP;
	}
	if (f->stall_after >= 0 && (cut < 0 || f->stall_after < cut)) {
		cut = f->stall_after;
		end = MOCK_END_STALL;
	}
	if (f->error_event_after >= 0 &&
	    (cut < 0 || f->error_event_after < cut)) {
		cut = f->error_event_after;
		end = MOCK_END_OK;
		error_event = true;
	}
	if (cut < 0 || (size_t)cut > p->n_events)
		return 0;
	if ((size_t)cut == p->n_events && !error_event) {
		p->end = end;
		return 0;
	}
	for (i = (size_t)cut; i < p->n_events; i++)
		free(p->events[i]);
	p->n_events = (size_t)cut;
	p->end = end;
	if (error_event)
		return plan_add_str(p, p->prov == MOCK_PROV_ANTHROPIC
					   ? GEN_ANTHROPIC_ERR_EVENT
					   : GEN_OPENAI_ERR_EVENT);
	return 0;
}

int
mock_gen_success(const struct mock_info *info, const struct mock_fault *f,
    unsigned long long seq, struct mock_plan *p)
{
	struct gen_reply r;
	struct gen_usage u;
	int rv;

	rv = gen_reply_build(info, &r);
	if (rv != 0)
		goto out;
	u.input = (long)(info->text_bytes / 4 + 1);
	u.output = r.output_tokens;
	u.cache_read = f->cache_read > 0 ? f->cache_read : 0;
	u.cache_write = f->cache_write > 0 ? f->cache_write : 0;
	if (info->prov == MOCK_PROV_ANTHROPIC)
		rv = gen_anthropic(info, &r, &u, seq, p);
	else
		rv = gen_openai(info, &r, &u, seq, p);
	if (rv == 0 && p->stream)
		rv = gen_apply_stream_faults(f, p);
	p->latency_ms = f->latency_ms;
	p->chunk_delay_ms = f->chunk_delay_ms;
	p->duration_ms = f->duration_ms;
out:
	free(r.args);
	if (rv != 0)
		mock_plan_reset(p);
	return rv;
}

/* ---- errors ---- */

struct gen_err_kind {
	unsigned int status;
	const char *a_type;
	const char *a_msg;
	const char *o_type;
	const char *o_code;
	const char *o_msg;
};

static const struct gen_err_kind gen_errs[] = {
    {400, "invalid_request_error", "Invalid request", "invalid_request_error",
	NULL, "Invalid request"},
    {401, "authentication_error", "invalid x-api-key", "invalid_request_error",
	"invalid_api_key", "Incorrect API key provided."},
    {403, "permission_error",
	"Your API key does not have permission to use the specified "
	"resource.",
	"invalid_request_error", "unsupported_country_region_territory",
	"Country, region, or territory not supported"},
    {404, "not_found_error", "Not found", "invalid_request_error",
	"model_not_found",
	"The model does not exist or you do not have access to it."},
    {413, "request_too_large",
	"Request exceeds the maximum allowed number of bytes.",
	"invalid_request_error", NULL, "Request too large."},
    {429, "rate_limit_error",
	"Number of request tokens has exceeded your per-minute rate limit",
	"requests", "rate_limit_exceeded",
	"Rate limit reached for requests. Please try again later."},
    {500, "api_error", "Internal server error", "server_error", NULL,
	"The server had an error while processing your request. Sorry "
	"about that!"},
    {502, "api_error", "Bad gateway", "server_error", NULL, "Bad gateway."},
    {503, "api_error", "Service unavailable", "server_error", NULL,
	"The engine is currently overloaded, please try again later."},
    {504, "timeout_error", "Request timeout", "server_error", NULL,
	"Request timed out."},
    {529, "overloaded_error", "Overloaded", "server_error", NULL,
	"The engine is currently overloaded, please try again later."},
};

int
mock_gen_error(enum mock_prov prov, unsigned int status, const char *message,
    const char *param, unsigned long long seq, struct mock_plan *p)
{
	const struct gen_err_kind *k = NULL;
	char req_id[64];
	const char *a_type, *o_type, *o_code, *msg;
	size_t i;
	json_t *o;

	for (i = 0; i < sizeof(gen_errs) / sizeof(gen_errs[0]); i++) {
		if (gen_errs[i].status == status)
			k = &gen_errs[i];
	}
	if (k != NULL) {
		a_type = k->a_type;
		o_type = k->o_type;
		o_code = k->o_code;
	} else {
		a_type = status < 500 ? "invalid_request_error" : "api_error";
		o_type =
		    status < 500 ? "invalid_request_error" : "server_error";
		o_code = NULL;
	}
	if (prov == MOCK_PROV_ANTHROPIC) {
		msg = message != NULL ? message
		      : k != NULL     ? k->a_msg
				      : "Error";
		snprintf(req_id, sizeof(req_id), "req_%llu", seq);
		o = json_pack("{s:s,s:{s:s,s:s},s:s}", "type", "error", "error",
		    "type", a_type, "message", msg, "request_id", req_id);
	} else {
		msg = message != NULL ? message
		      : k != NULL     ? k->o_msg
				      : "Error";
		o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", msg,
		    "type", o_type, "param",
		    param != NULL ? json_string(param) : json_null(), "code",
		    o_code != NULL ? json_string(o_code) : json_null());
	}
	return plan_set_body(p, status, o);
}

int
mock_gen_models(enum mock_prov prov, struct mock_plan *p)
{
	json_t *o;

	if (prov == MOCK_PROV_ANTHROPIC)
		o = json_pack("{s:[{s:s,s:s,s:s,s:s},{s:s,s:s,s:s,s:s}],s:b,"
			      "s:s,s:s}",
		    "data", "type", "model", "id", "claude-sonnet-4-5-20250929",
		    "display_name", "Claude Sonnet 4.5", "created_at",
		    "2025-09-29T00:00:00Z", "type", "model", "id",
		    "claude-haiku-4-5-20251001", "display_name",
		    "Claude Haiku 4.5", "created_at", "2025-10-01T00:00:00Z",
		    "has_more", 0, "first_id", "claude-sonnet-4-5-20250929",
		    "last_id", "claude-haiku-4-5-20251001");
	else
		o = json_pack("{s:s,s:[{s:s,s:s,s:I,s:s},{s:s,s:s,s:I,s:s}]}",
		    "object", "list", "data", "id", "gpt-4o-mini", "object",
		    "model", "created", (json_int_t)1721172741, "owned_by",
		    "system", "id", "gpt-4o", "object", "model", "created",
		    (json_int_t)1715367049, "owned_by", "system");
	return plan_set_body(p, 200, o);
}
