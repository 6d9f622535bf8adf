/*
 * CORS decisions.  AI_PROXY_CORS_ORIGINS is a comma-separated list of
 * origins; an allowed Origin is echoed with credentials allowed, "*" in
 * the list allows every origin but then without credentials (never "*"
 * with credentials).  A disallowed origin gets no CORS headers at all.
 */
#ifndef AIPROXY_GW_CORS_H
#define AIPROXY_GW_CORS_H

#include <stdbool.h>
#include <stddef.h>

#define GW_CORS_MAX_AGE 600
#define GW_CORS_ALLOW_HEADERS                                                  \
	"Content-Type, Authorization, X-Request-ID, X-Session-ID, "            \
	"anthropic-version, anthropic-beta, "                                  \
	"anthropic-dangerous-direct-browser-access, x-api-key, "               \
	"OpenAI-Organization, OpenAI-Project, OpenAI-Beta, "                   \
	"X-Stainless-Arch, X-Stainless-Lang, X-Stainless-OS, "                 \
	"X-Stainless-Package-Version, X-Stainless-Retry-Count, "               \
	"X-Stainless-Runtime, X-Stainless-Runtime-Version, "                   \
	"X-Stainless-Timeout, X-Stainless-Async, X-Stainless-Read-Timeout"
#define GW_CORS_EXPOSE_HEADERS                                                 \
	"X-Request-ID, Retry-After, retry-after-ms, x-should-retry"

enum gw_cors_verdict {
	GW_CORS_NONE,      /* no Origin header: not a CORS request */
	GW_CORS_ALLOW,     /* echo the origin, credentials allowed */
	GW_CORS_ALLOW_ANY, /* "*" configured: ACAO "*", no credentials */
	GW_CORS_DENY,      /* no CORS headers; a preflight gets 403 */
	GW_CORS_MAX
};

struct gw_cors;

/* Parses the list (NULL or "" allows nothing).  Caller frees. */
int gw_cors_new(const char *origins, struct gw_cors **ret);
void gw_cors_free(struct gw_cors *c);
/* The verdict for a request's Origin header (NULL when absent). */
enum gw_cors_verdict gw_cors_check(const struct gw_cors *c, const char *origin);
size_t gw_cors_count(const struct gw_cors *c);

#endif
