#include "pw_usage.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PW_TOKENS_MAX 1000000000LL
/* The largest SSE line or event the side-parser reads. */
#define PW_SSE_MAX (1u << 20)

static const char *const prov_names[PW_PROV_MAX] = {"claude", "openai"};

enum pw_prov
pw_prov_from_str(const char *s)
{
	for (int i = 0; i < PW_PROV_MAX; i++)
		if (s != NULL && strcmp(s, prov_names[i]) == 0)
			return (enum pw_prov)i;
	return PW_PROV_MAX;
}

const char *
pw_prov_str(enum pw_prov p)
{
	return p < PW_PROV_MAX ? prov_names[p] : "unknown";
}

/* Reads an integer token count at obj[key] into *ret (clamped); false when
 * absent, null or not an integer. */
static bool
tokens_get(const json_t *obj, const char *key, int64_t *ret)
{
	json_t *v = json_object_get(obj, key);
	json_int_t n;

	if (!json_is_integer(v))
		return false;
	n = json_integer_value(v);
	if (n < 0)
		n = 0;
	if (n > PW_TOKENS_MAX)
		n = PW_TOKENS_MAX;
	*ret = (int64_t)n;
	return true;
}

static void
usage_merge_claude(const json_t *o, struct pw_usage *u)
{
	struct model_usage *t = &u->tokens;
	const json_t *cc = json_object_get(o, "cache_creation");
	int64_t v, w5, w1;

	if (tokens_get(o, "input_tokens", &v)) {
		t->input = v;
		u->seen = true;
	}
	if (tokens_get(o, "output_tokens", &v)) {
		t->output = v;
		u->seen = true;
	}
	if (tokens_get(o, "cache_read_input_tokens", &v)) {
		t->cache_read = v;
		u->seen = true;
	}
	if (json_is_object(cc)) {
		bool h5 = tokens_get(cc, "ephemeral_5m_input_tokens", &w5);
		bool h1 = tokens_get(cc, "ephemeral_1h_input_tokens", &w1);

		if (h5 || h1) {
			t->cache_write_5m = h5 ? w5 : 0;
			t->cache_write_1h = h1 ? w1 : 0;
			u->seen = true;
			return;
		}
	}
	if (tokens_get(o, "cache_creation_input_tokens", &v)) {
		/* A total alone: keep a split already read that sums to it,
		 * else bill it all at the 5-minute price. */
		if (t->cache_write_5m + t->cache_write_1h != v) {
			t->cache_write_5m = v;
			t->cache_write_1h = 0;
		}
		u->seen = true;
	}
}

static void
usage_merge_openai(const json_t *o, struct pw_usage *u)
{
	struct model_usage *t = &u->tokens;
	const json_t *det = json_object_get(o, "prompt_tokens_details");
	int64_t prompt = 0, cached = 0, out;
	bool hp, hc = false;

	hp = tokens_get(o, "prompt_tokens", &prompt);
	if (json_is_object(det))
		hc = tokens_get(det, "cached_tokens", &cached);
	if (hp) {
		if (cached > prompt)
			cached = prompt;
		t->input = prompt - cached;
		t->cache_read = cached;
		u->seen = true;
	} else if (hc) {
		t->cache_read = cached;
		u->seen = true;
	}
	if (tokens_get(o, "completion_tokens", &out)) {
		t->output = out;
		u->seen = true;
	}
}

void
pw_usage_merge(enum pw_prov p, const json_t *obj, struct pw_usage *u)
{
	if (!json_is_object(obj))
		return;
	if (p == PW_PROV_CLAUDE)
		usage_merge_claude(obj, u);
	else if (p == PW_PROV_OPENAI)
		usage_merge_openai(obj, u);
}

int
pw_usage_from_body(
    enum pw_prov p, const char *body, size_t len, struct pw_usage *ret)
{
	struct pw_usage u;
	json_t *root;

	memset(&u, 0, sizeof(u));
	if ((root = json_loadb(body, len, 0, NULL)) == NULL)
		return -EPROTO;
	pw_usage_merge(p, json_object_get(root, "usage"), &u);
	json_decref(root);
	if (!u.seen)
		return -EPROTO;
	*ret = u;
	return 0;
}

/* ---- streams ---- */

static void
stream_error(struct pw_stream_usage *s, const json_t *root)
{
	const json_t *err = json_object_get(root, "error");
	const char *msg = json_string_value(json_object_get(err, "message"));

	s->error_seen = true;
	snprintf(s->error_message, sizeof(s->error_message), "%s",
	    msg != NULL ? msg : "upstream stream error");
}

static void
stream_claude(
    struct pw_stream_usage *s, const char *event, const char *data, size_t len)
{
	const char *type;
	json_t *root;

	/* Only these events carry usage or errors; skip the parse for the
	 * (many) others.  An event without a name is judged by its "type". */
	if (event[0] != '\0' && strcmp(event, "message_start") != 0 &&
	    strcmp(event, "message_delta") != 0 &&
	    strcmp(event, "message_stop") != 0 && strcmp(event, "error") != 0)
		return;
	if ((root = json_loadb(data, len, 0, NULL)) == NULL)
		return;
	type = event[0] != '\0'
		   ? event
		   : json_string_value(json_object_get(root, "type"));
	if (type == NULL) {
		/* nothing */
	} else if (strcmp(type, "message_start") == 0) {
		pw_usage_merge(PW_PROV_CLAUDE,
		    json_object_get(json_object_get(root, "message"), "usage"),
		    &s->usage);
	} else if (strcmp(type, "message_delta") == 0) {
		pw_usage_merge(
		    PW_PROV_CLAUDE, json_object_get(root, "usage"), &s->usage);
	} else if (strcmp(type, "message_stop") == 0) {
		s->done_seen = true;
	} else if (strcmp(type, "error") == 0) {
		stream_error(s, root);
	}
	json_decref(root);
}

static void
stream_openai(struct pw_stream_usage *s, const char *data, size_t len)
{
	json_t *root, *err;

	if (len >= 6 && memcmp(data, "[DONE]", 6) == 0) {
		s->done_seen = true;
		return;
	}
	/* Most chunks carry neither usage nor an error: skip their parse. */
	if (memmem(data, len, "\"usage\"", 7) == NULL &&
	    memmem(data, len, "\"error\"", 7) == NULL)
		return;
	if ((root = json_loadb(data, len, 0, NULL)) == NULL)
		return;
	pw_usage_merge(
	    PW_PROV_OPENAI, json_object_get(root, "usage"), &s->usage);
	err = json_object_get(root, "error");
	if (err != NULL && !json_is_null(err) && !json_is_false(err))
		stream_error(s, root);
	json_decref(root);
}

static void
stream_event(void *arg, const char *event, const char *data, size_t len)
{
	struct pw_stream_usage *s = arg;

	if (s->prov == PW_PROV_CLAUDE)
		stream_claude(s, event, data, len);
	else
		stream_openai(s, data, len);
}

void
pw_stream_usage_init(struct pw_stream_usage *s, enum pw_prov p)
{
	memset(s, 0, sizeof(*s));
	s->prov = p;
	pw_sse_init(&s->sse, PW_SSE_MAX, stream_event, s);
}

void
pw_stream_usage_feed(struct pw_stream_usage *s, const char *p, size_t n)
{
	pw_sse_feed(&s->sse, p, n);
}

void
pw_stream_usage_free(struct pw_stream_usage *s)
{
	pw_sse_free(&s->sse);
}
