/*
 * Cross-provider failover: an Anthropic Messages request carried to
 * OpenAI Chat Completions, and the answer brought back in Anthropic's
 * shape (non-streaming calls with text content only).
 */
#ifndef PW_XLATE_H
#define PW_XLATE_H

#include <stddef.h>

#include "buf.h"
#include "models.h"

/*
 * The OpenAI request for an Anthropic request body, with model: system
 * (string or text blocks) becomes the first "system" message, text
 * blocks are joined, max_tokens, temperature, top_p and stop_sequences
 * are carried over.  -ENOTSUP when the request cannot be carried
 * faithfully (a stream, tools, images or other non-text content),
 * -EINVAL when it is not an Anthropic request.  Caller frees *ret.
 */
int pw_xlate_req_claude_to_openai(const char *body, size_t len,
    const char *model, char **ret, size_t *ret_len);

/*
 * An OpenAI chat.completion body as an Anthropic Message (id, model,
 * one text block, stop_reason from finish_reason, usage).  Replaces the
 * contents of out.  -EINVAL when body is no chat.completion.
 */
int pw_xlate_resp_openai_to_claude(
    const char *body, size_t len, struct buf *out);

/*
 * The other way: an OpenAI chat request as an Anthropic one ("system"
 * messages joined into system, text parts joined, max_completion_tokens
 * or max_tokens, else default_max_tokens; temperature clamped to 0..1,
 * top_p; stop as stop_sequences), and an Anthropic Message as a
 * chat.completion.  Same errors as above.
 */
int pw_xlate_req_openai_to_claude(const char *body, size_t len,
    const char *model, long default_max_tokens, char **ret, size_t *ret_len);
int pw_xlate_resp_claude_to_openai(
    const char *body, size_t len, struct buf *out);

/*
 * Checks AI_PROXY_FALLBACK_MODEL_MAP ("<model>=<model of the other
 * provider>,...", "*" for any model; "" for none): every key a model of
 * the table (or "*"), every value a model of the table, of the other
 * provider than its key's ("*=" entries may name either: they apply to
 * the calls of the other provider).  -EINVAL with a message in err naming
 * the bad entry.
 */
int pw_xlate_map_check(const char *map, const struct model_table *models,
    char *err, size_t errlen);

#endif
