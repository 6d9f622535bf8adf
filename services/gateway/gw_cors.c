#include "gw_cors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GW_CORS_ORIGIN_MAX 512

struct gw_cors {
	char **origins;
	size_t n;
	bool any;
};

/* Appends s[0..n) (trimmed, trailing '/' dropped). */
static int
cors_add(struct gw_cors *c, const char *s, size_t n)
{
	char **no;

	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (
	    n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '/'))
		n--;
	if (n == 0)
		return 0;
	if (n == 1 && s[0] == '*') {
		c->any = true;
		return 0;
	}
	if (n > GW_CORS_ORIGIN_MAX)
		return -EINVAL;
	if ((no = realloc(c->origins, (c->n + 1) * sizeof(*no))) == NULL)
		return -ENOMEM;
	c->origins = no;
	if ((c->origins[c->n] = strndup(s, n)) == NULL)
		return -ENOMEM;
	c->n++;
	return 0;
}

int
gw_cors_new(const char *origins, struct gw_cors **ret)
{
	struct gw_cors *c;
	const char *p;
	int rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	for (p = origins; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, ",");

		if ((rv = cors_add(c, p, n)) != 0) {
			gw_cors_free(c);
			return rv;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	*ret = c;
	return 0;
}

void
gw_cors_free(struct gw_cors *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		free(c->origins[i]);
	free(c->origins);
	free(c);
}

size_t
gw_cors_count(const struct gw_cors *c)
{
	return c->n + (c->any ? 1 : 0);
}

enum gw_cors_verdict
gw_cors_check(const struct gw_cors *c, const char *origin)
{
	size_t n;

	if (origin == NULL || origin[0] == '\0')
		return GW_CORS_NONE;
	n = strlen(origin);
	if (n > GW_CORS_ORIGIN_MAX || strcmp(origin, "null") == 0)
		return GW_CORS_DENY;
	/* Header values must not smuggle control characters back out. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)origin[i] < 0x20 ||
		    (unsigned char)origin[i] == 0x7f)
			return GW_CORS_DENY;
	for (size_t i = 0; i < c->n; i++)
		if (strcasecmp(c->origins[i], origin) == 0)
			return GW_CORS_ALLOW;
	if (c->any)
		return GW_CORS_ALLOW_ANY;
	return GW_CORS_DENY;
}
