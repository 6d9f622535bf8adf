/*
 * The gateway's route table: path -> route, the methods each route
 * answers (405 with Allow otherwise) and the response shape of its errors.
 */
#ifndef AIPROXY_GW_ROUTE_H
#define AIPROXY_GW_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

enum gw_route_id {
	GW_R_CLAUDE_CHAT,      /* POST /api/v1/ai-proxy/claude/chat */
	GW_R_OPENAI_CHAT,      /* POST /api/v1/ai-proxy/openai/chat */
	GW_R_CHAT_COMPLETIONS, /* POST /v1/chat/completions */
	GW_R_MESSAGES,         /* POST /v1/messages */
	GW_R_MODELS,           /* GET /v1/models */
	GW_R_HEALTH,           /* GET /health */
	GW_R_HEALTH_DETAILED,  /* GET /health/detailed */
	GW_R_BREAKER_RESET, /* POST /api/v1/ai-proxy/circuit-breaker/{p}/reset
			     */
	GW_R_CACHE_CLEAR,   /* DELETE /api/v1/ai-proxy/cache/clear */
	GW_R_QUOTA,         /* GET /api/v1/ai-proxy/usage/quota */
	GW_R_ANALYTICS,     /* GET /api/v1/ai-proxy/usage/analytics */
	GW_R_BLOCKED,       /* GET /api/v1/ai-proxy/admin/blocked */
	GW_R_UNBLOCK, /* DELETE /api/v1/ai-proxy/admin/blocked/{kind}/{id} */
	GW_R_PROVIDERS_STATUS, /* GET /api/v1/ai-proxy/providers/status */
	GW_R_MAX
};

/* Response shape of a route's errors. */
enum gw_shape {
	GW_SHAPE_ENVELOPE,  /* {"success":false,...} */
	GW_SHAPE_OPENAI,    /* {"error":{...}} */
	GW_SHAPE_ANTHROPIC, /* {"type":"error","error":{...}} */
	GW_SHAPE_MAX
};

/* Methods as a bit set. */
#define GW_M_GET     0x01u
#define GW_M_POST    0x02u
#define GW_M_DELETE  0x04u
#define GW_M_OPTIONS 0x08u
#define GW_M_HEAD    0x10u
#define GW_M_OTHER   0x20u

struct gw_route {
	enum gw_route_id id;
	const char *pattern; /* "{}" matches one path segment, a final
				"{*}" the rest of the path (non-empty, '/'
				included) */
	unsigned methods;
	enum gw_shape shape;
	bool chat;            /* a chat call (body, validation, worker) */
	bool admin;           /* needs the admin key */
	const char *provider; /* "claude"/"openai" for the envelope chat
				 routes, NULL otherwise */
};

/* GW_M_* of a method name; GW_M_OTHER when unknown. */
unsigned gw_method_bit(const char *method);

/*
 * Finds the route of path (no query string).  The text matched by "{}"
 * is copied into param (NUL-terminated, may be NULL).  NULL when no route
 * has this path (404).  Borrowed, static.
 */
const struct gw_route *gw_route_lookup(
    const char *path, char *param, size_t paramlen);
/* The route answers method. */
bool gw_route_allows(const struct gw_route *r, unsigned method);
/* "GET, OPTIONS" etc. for an Allow header, into out. */
void gw_route_allow_str(const struct gw_route *r, char *out, size_t outlen);
/* The shape of errors for a path no route matches: the drop-in prefixes
 * answer in their provider's shape. */
enum gw_shape gw_route_shape_for_path(const char *path);

/* The request id: the client's X-Request-ID when id_valid(), else a new
 * "req_" id.  out holds ID_MAX + 1 bytes.  True when the client's was
 * kept. */
bool gw_request_id(const char *client, char *out, size_t outlen);

#endif
