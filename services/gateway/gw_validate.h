/*
 * Validation of a chat request body, and the upstream body built from
 * it.  Nothing leaves the gateway before this passed.  Pure: no I/O, no
 * globals, so the unit tests drive it table by table.
 */
#ifndef AIPROXY_GW_VALIDATE_H
#define AIPROXY_GW_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_route.h"
#include "models.h"

#define GW_JSON_MAX_DEPTH 32

/* What validation needs from the configuration (all borrowed). */
struct gw_vcfg {
	const struct model_table *models;
	const char *default_model; /* DEFAULT_AI_MODEL */
	int64_t max_tokens;        /* AI_PROXY_MAX_TOKENS */
	int64_t default_max_tokens;
	size_t max_body_bytes;
};

/* A rejected request: the status, a stable code, a plain message and
 * the offending field (may be NULL). */
struct gw_verr {
	int status;
	const char *code;
	const char *param;
	char message[256];
};

/* A validated chat call. */
struct gw_chat {
	const struct model *model; /* borrowed from the table */
	const char *provider;      /* "claude" | "openai" (static) */
	const char *api;           /* "messages" | "chat_completions" */
	bool stream;
	int64_t max_tokens;
	char *upstream; /* the upstream body (JSON), caller frees */
	size_t upstream_len;
};

/*
 * Validates body (len bytes) for the chat route r and builds the upstream
 * body.  On success fills *ret (caller frees ret->upstream with free())
 * and returns 0; on a rejection fills *err and returns -EINVAL; -ENOMEM
 * on allocation failure.
 */
int gw_validate_chat(const struct gw_vcfg *cfg, const struct gw_route *r,
    const char *body, size_t len, struct gw_chat *ret, struct gw_verr *err);

/* The model a route uses when the request names none: DEFAULT_AI_MODEL
 * when it belongs to provider, else the first model of provider.  NULL
 * when the table has none. */
const struct model *gw_default_model(
    const struct gw_vcfg *cfg, const char *provider);

#endif
