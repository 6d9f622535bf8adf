/*
 * Token usage of one upstream call, read from the provider's own usage
 * fields: the "usage" object of a JSON response, or the usage events of an
 * SSE stream (read on the side while the bytes are forwarded untouched).
 *
 * Anthropic: input = input_tokens, cache_read = cache_read_input_tokens,
 * cache writes = cache_creation.ephemeral_5m/1h_input_tokens (else
 * cache_creation_input_tokens as 5m), output = output_tokens (cumulative in
 * message_delta: the last one wins).  OpenAI: cache_read =
 * prompt_tokens_details.cached_tokens, input = prompt_tokens - cached,
 * output = completion_tokens.  Every count is clamped to 0..1e9.
 */
#ifndef PW_USAGE_H
#define PW_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "models.h"
#include "pw_sse.h"

enum pw_prov { PW_PROV_CLAUDE, PW_PROV_OPENAI, PW_PROV_MAX };

/* "claude" / "openai"; PW_PROV_MAX when unknown. */
enum pw_prov pw_prov_from_str(const char *s);
const char *pw_prov_str(enum pw_prov p);

struct pw_usage {
	struct model_usage tokens; /* disjoint counts, as models_cost wants */
	bool seen;                 /* any usage field was read */
};

/* Merges the fields present in a provider "usage" object into u (absent or
 * null fields keep their value).  u borrowed, obj borrowed. */
void pw_usage_merge(enum pw_prov p, const json_t *obj, struct pw_usage *u);
/* Usage of a complete JSON response body (its top-level "usage").
 * -EPROTO when the body is not a JSON object or holds no usage. */
int pw_usage_from_body(
    enum pw_prov p, const char *body, size_t len, struct pw_usage *ret);

/* The usage side-parser of a stream. */
#define PW_STREAM_ERRMSG_MAX 256

struct pw_stream_usage {
	enum pw_prov prov;
	struct pw_sse sse;
	struct pw_usage usage;
	bool error_seen; /* the provider sent an error event */
	char error_message[PW_STREAM_ERRMSG_MAX];
	bool done_seen; /* message_stop / [DONE] */
};

void pw_stream_usage_init(struct pw_stream_usage *s, enum pw_prov p);
void pw_stream_usage_feed(struct pw_stream_usage *s, const char *p, size_t n);
void pw_stream_usage_free(struct pw_stream_usage *s);

#endif
