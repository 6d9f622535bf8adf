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
 * Checks AI_PROXY_FALLBACK_MODEL_MAP ("<claude model>=<openai model>,...",
 * "*" for any claude model; "" for none): every key a claude model of the
 * table (or "*"), every value an openai one.  -EINVAL with a message in
 * err naming the bad entry.
 */
int pw_xlate_map_check(const char *map, const struct model_table *models,
    char *err, size_t errlen);

#endif
