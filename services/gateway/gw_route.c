#include "gw_route.h"

#include <stdio.h>
#include <string.h>

#include "ids.h"

static const struct gw_route gw_routes[GW_R_MAX] = {
    {GW_R_CLAUDE_CHAT, "/api/v1/ai-proxy/claude/chat", GW_M_POST,
	GW_SHAPE_ENVELOPE, true, false, "claude"},
    {GW_R_OPENAI_CHAT, "/api/v1/ai-proxy/openai/chat", GW_M_POST,
	GW_SHAPE_ENVELOPE, true, false, "openai"},
    {GW_R_CHAT_COMPLETIONS, "/v1/chat/completions", GW_M_POST, GW_SHAPE_OPENAI,
	true, false, NULL},
    {GW_R_MESSAGES, "/v1/messages", GW_M_POST, GW_SHAPE_ANTHROPIC, true, false,
	NULL},
    {GW_R_MODELS, "/v1/models", GW_M_GET | GW_M_HEAD, GW_SHAPE_OPENAI, false,
	false, NULL},
    {GW_R_HEALTH, "/health", GW_M_GET | GW_M_HEAD, GW_SHAPE_ENVELOPE, false,
	false, NULL},
    {GW_R_HEALTH_DETAILED, "/health/detailed", GW_M_GET | GW_M_HEAD,
	GW_SHAPE_ENVELOPE, false, false, NULL},
    {GW_R_BREAKER_RESET, "/api/v1/ai-proxy/circuit-breaker/{}/reset", GW_M_POST,
	GW_SHAPE_ENVELOPE, false, true, NULL},
    {GW_R_CACHE_CLEAR, "/api/v1/ai-proxy/cache/clear", GW_M_DELETE,
	GW_SHAPE_ENVELOPE, false, true, NULL},
    {GW_R_QUOTA, "/api/v1/ai-proxy/usage/quota", GW_M_GET, GW_SHAPE_ENVELOPE,
	false, false, NULL},
    {GW_R_ANALYTICS, "/api/v1/ai-proxy/usage/analytics", GW_M_GET,
	GW_SHAPE_ENVELOPE, false, false, NULL},
    {GW_R_BLOCKED, "/api/v1/ai-proxy/admin/blocked", GW_M_GET,
	GW_SHAPE_ENVELOPE, false, true, NULL},
    {GW_R_UNBLOCK, "/api/v1/ai-proxy/admin/blocked/{*}", GW_M_DELETE,
	GW_SHAPE_ENVELOPE, false, true, NULL},
    {GW_R_PROVIDERS_STATUS, "/api/v1/ai-proxy/providers/status",
	GW_M_GET | GW_M_HEAD, GW_SHAPE_ENVELOPE, false, false, NULL},
};

unsigned
gw_method_bit(const char *method)
{
	static const struct {
		const char *name;
		unsigned bit;
	} m[] = {
	    {"GET", GW_M_GET},
	    {"POST", GW_M_POST},
	    {"DELETE", GW_M_DELETE},
	    {"OPTIONS", GW_M_OPTIONS},
	    {"HEAD", GW_M_HEAD},
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (method != NULL && strcmp(method, m[i].name) == 0)
			return m[i].bit;
	return GW_M_OTHER;
}

/* Matches path against pattern; "{}" takes one non-empty segment, a
 * final "{*}" the non-empty rest. */
static bool
route_match(const char *pattern, const char *path, char *param, size_t paramlen)
{
	const char *p = pattern, *s = path;

	while (*p != '\0') {
		if (strcmp(p, "{*}") == 0) {
			if (*s == '\0')
				return false;
			if (param != NULL && paramlen > 0)
				snprintf(param, paramlen, "%s", s);
			return true;
		}
		if (p[0] == '{' && p[1] == '}') {
			size_t n = strcspn(s, "/");

			if (n == 0)
				return false;
			if (param != NULL && paramlen > 0)
				snprintf(param, paramlen, "%.*s", (int)n, s);
			s += n;
			p += 2;
			continue;
		}
		if (*p != *s)
			return false;
		p++;
		s++;
	}
	return *s == '\0';
}

const struct gw_route *
gw_route_lookup(const char *path, char *param, size_t paramlen)
{
	char tmp[512];
	size_t n;

	if (path == NULL)
		return NULL;
	/* One trailing slash is tolerated ("/health/"). */
	n = strlen(path);
	if (n > 1 && path[n - 1] == '/' && n < sizeof(tmp)) {
		memcpy(tmp, path, n - 1);
		tmp[n - 1] = '\0';
		path = tmp;
	}
	for (size_t i = 0; i < GW_R_MAX; i++)
		if (route_match(gw_routes[i].pattern, path, param, paramlen))
			return &gw_routes[i];
	return NULL;
}

bool
gw_route_allows(const struct gw_route *r, unsigned method)
{
	return (r->methods & method) != 0;
}

void
gw_route_allow_str(const struct gw_route *r, char *out, size_t outlen)
{
	static const struct {
		unsigned bit;
		const char *name;
	} m[] = {
	    {GW_M_GET, "GET"},
	    {GW_M_HEAD, "HEAD"},
	    {GW_M_POST, "POST"},
	    {GW_M_DELETE, "DELETE"},
	};
	size_t off = 0;

	if (outlen == 0)
		return;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		if ((r->methods & m[i].bit) == 0)
			continue;
		off += (size_t)snprintf(
		    out + off, outlen - off, "%s, ", m[i].name);
		if (off >= outlen)
			return;
	}
	snprintf(out + off, outlen - off, "OPTIONS");
}

enum gw_shape
gw_route_shape_for_path(const char *path)
{
	if (path != NULL && strncmp(path, "/v1/messages", 12) == 0)
		return GW_SHAPE_ANTHROPIC;
	if (path != NULL && strncmp(path, "/v1/", 4) == 0)
		return GW_SHAPE_OPENAI;
	return GW_SHAPE_ENVELOPE;
}

bool
gw_request_id(const char *client, char *out, size_t outlen)
{
	if (client != NULL && id_valid(client) && strlen(client) < outlen) {
		snprintf(out, outlen, "%s", client);
		return true;
	}
	id_new("req_", out, outlen);
	return false;
}
