/*
 * Choosing the database from DATABASE_URL; see acct_db.h.
 */
#include "acct_db.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "daemon.h"

#define ACCT_SQLITE_FILE "aiproxy.db"

static int
db_copy(char *out, size_t len, const char *s)
{
	int n = snprintf(out, len, "%s", s);

	return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

/* "postgresql://host:port/db" from a libpq URL, leaving out the user and
 * the password. */
static int
db_pg_describe(
    const char *url, char *out, size_t len, char *err, size_t err_len)
{
	const char *host = "", *port = "", *db = "";
	PQconninfoOption *opts, *o;
	char *msg = NULL;

	opts = PQconninfoParse(url, &msg);
	if (opts == NULL) {
		snprintf(err, err_len,
		    "DATABASE_URL is not a valid "
		    "PostgreSQL URL");
		PQfreemem(msg);
		return -EINVAL;
	}
	for (o = opts; o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
	}
	snprintf(out, len, "postgresql://%s%s%s/%s", host, port[0] ? ":" : "",
	    port, db);
	PQconninfoFree(opts);
	return 0;
}

int
acct_db_resolve(const char *url, const char *state_dir,
    const struct acct_db_ops **ret_ops, char *target, size_t target_len,
    char *describe, size_t describe_len, char *err, size_t err_len)
{
	static const char sqlite_prefix[] = "sqlite://";
	int n, rv;

	if (url == NULL || url[0] == '\0') {
		if ((rv = daemon_mkdirs(state_dir)) != 0) {
			snprintf(err, err_len,
			    "cannot create AI_PROXY_STATE_DIR %s: %s",
			    state_dir, strerror(-rv));
			return rv;
		}
		n = snprintf(
		    target, target_len, "%s/%s", state_dir, ACCT_SQLITE_FILE);
		if (n < 0 || (size_t)n >= target_len) {
			snprintf(
			    err, err_len, "AI_PROXY_STATE_DIR is too long");
			return -ENAMETOOLONG;
		}
		*ret_ops = &acct_sqlite_ops;
		n = snprintf(describe, describe_len, "sqlite://%s", target);
		(void)n;
		return 0;
	}
	if (strncmp(url, sqlite_prefix, sizeof(sqlite_prefix) - 1) == 0) {
		const char *path = url + sizeof(sqlite_prefix) - 1;

		if (path[0] == '\0' || strcmp(path, "/") == 0) {
			snprintf(err, err_len,
			    "DATABASE_URL sqlite:// names no file");
			return -EINVAL;
		}
		if ((rv = db_copy(target, target_len, path)) != 0) {
			snprintf(err, err_len, "DATABASE_URL is too long");
			return rv;
		}
		*ret_ops = &acct_sqlite_ops;
		snprintf(describe, describe_len, "%s", url);
		return 0;
	}
	if (strncmp(url, "postgresql://", 13) == 0 ||
	    strncmp(url, "postgres://", 11) == 0) {
		if ((rv = db_pg_describe(
			 url, describe, describe_len, err, err_len)) != 0)
			return rv;
		if ((rv = db_copy(target, target_len, url)) != 0) {
			snprintf(err, err_len, "DATABASE_URL is too long");
			return rv;
		}
		*ret_ops = &acct_pg_ops;
		return 0;
	}
	snprintf(err, err_len,
	    "DATABASE_URL must start with postgresql://, postgres:// or "
	    "sqlite://");
	return -EINVAL;
}

int64_t
acct_pct_rank(double p, int64_t n)
{
	int64_t r;

	if (n <= 0)
		return 0;
	r = (int64_t)ceil(p * (double)n);
	return r < 1 ? 1 : r > n ? n : r;
}

size_t
acct_hwm_streams(
    const struct msg_usage_event *ev, size_t n, struct acct_hwm *hwm)
{
	size_t i, k, nh = 0;

	for (i = 0; i < n; i++) {
		if (ev[i].seq <= 0)
			continue;
		for (k = 0; k < nh; k++)
			if (strcmp(hwm[k].worker_id, ev[i].worker_id) == 0)
				break;
		if (k == nh) {
			memcpy(hwm[nh].worker_id, ev[i].worker_id,
			    sizeof(hwm[nh].worker_id));
			nh++;
		}
	}
	return nh;
}
