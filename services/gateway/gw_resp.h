/*
 * Response bodies: the envelope of the /api/v1/ai-proxy routes, the
 * providers' own error shapes for the drop-in routes, the model lists,
 * and the events the gateway adds to a stream.  All appended to a bounded
 * buffer; 0 or -EMSGSIZE / -ENOMEM.
 */
#ifndef AIPROXY_GW_RESP_H
#define AIPROXY_GW_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "gw_route.h"
#include "models.h"

/* Exact decimal USD of an integer micro-USD amount, shortest form:
 * 123 -> "0.000123", 1500000 -> "1.5", 0 -> "0".  out >= 32 bytes. */
void gw_cost_str(int64_t micro_usd, char *out, size_t outlen);

/* The provider error "type" a status maps to in shape. */
const char *gw_err_type(enum gw_shape shape, int status);

/*
 * An error body in shape.  param (may be NULL) names the offending field
 * (OpenAI shape only).  The envelope carries code, message, request_id and
 * response_ms; the Anthropic shape carries request_id too.
 */
int gw_fmt_error(struct buf *b, enum gw_shape shape, int status,
    const char *code, const char *message, const char *param,
    const char *request_id, int64_t response_ms);

/* The success envelope; data (data_len bytes of JSON) inserted verbatim,
 * "null" when data_len is 0. */
int gw_fmt_envelope_ok(struct buf *b, const char *data, size_t data_len,
    int64_t cost_micro_usd, int64_t response_ms, const char *request_id,
    const char *provider, const char *model);

/* Final event of a stream on the envelope routes. */
int gw_fmt_aiproxy_event(struct buf *b, const char *request_id,
    int64_t cost_micro_usd, int64_t response_ms);

/* An error event in the provider's stream format ("claude": event:
 * error; "openai": data: {"error":...}), for a stream the gateway must end
 * itself (worker lost, buffer overflow). */
int gw_fmt_stream_error(
    struct buf *b, const char *provider, const char *message);

/* GET /v1/models: OpenAI's list (anthropic false) of the openai models,
 * or Anthropic's page of the claude models. */
int gw_fmt_models(struct buf *b, const struct model_table *t, bool anthropic);

/* A plain message for an error code (never provider text). */
const char *gw_code_message(const char *code);

#endif
