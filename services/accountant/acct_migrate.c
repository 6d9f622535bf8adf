/*
 * Schema migrations; see acct_migrate.h.
 */
#include "acct_migrate.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "acct_db.h"
#include "log.h"

#define MIG_ROWS_MAX  256
#define MIG_IDENT_MAX 64

const char *
acct_migration_sql(
    const struct acct_migration *m, enum acct_db_kind kind, bool up)
{
	if (kind == ACCT_DB_POSTGRES)
		return m->postgres[up ? 0 : 1];
	return m->sqlite[up ? 0 : 1];
}

void
acct_migration_checksum(const struct acct_migration *m, enum acct_db_kind kind,
    char *out, size_t outlen)
{
	const unsigned char *p =
	    (const unsigned char *)acct_migration_sql(m, kind, true);
	uint64_t h = 1469598103934665603ull;

	for (; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ull;
	}
	snprintf(out, outlen, "%016llx", (unsigned long long)h);
}

static void mig_say(FILE *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
mig_say(FILE *out, const char *fmt, ...)
{
	va_list ap;

	if (out == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fflush(out);
}

static const struct acct_migration *
mig_find(int version)
{
	for (size_t i = 0; i < acct_migrations_n; i++)
		if (acct_migrations[i].version == version)
			return &acct_migrations[i];
	return NULL;
}

/*
 * Checks the applied rows against the steps this binary knows: each one
 * known, recorded with the same checksum, and 1..k without a gap.  Counts
 * the problems (and says them to out).  *ret_top: highest applied.
 */
static int
mig_check_rows(const struct acct_db_ops *ops, const struct acct_mig_row *rows,
    size_t n, FILE *out, int *ret_top)
{
	const struct acct_migration *m;
	char sum[ACCT_CHECKSUM_LEN + 1];
	int bad = 0, top = 0;

	for (size_t i = 0; i < n; i++) {
		m = mig_find(rows[i].version);
		if (m == NULL) {
			mig_say(out, "unknown  %04d %s (not in this build)\n",
			    rows[i].version, rows[i].name);
			log_error(NULL, "database holds an unknown migration",
			    LF_I("version", rows[i].version),
			    LF_S("name", rows[i].name));
			bad++;
		} else {
			acct_migration_checksum(m, ops->kind, sum, sizeof(sum));
			if (strcmp(sum, rows[i].checksum) != 0) {
				mig_say(out,
				    "altered  %04d %s (checksum %s, this build "
				    "%s)\n",
				    m->version, m->name, rows[i].checksum, sum);
				log_error(NULL,
				    "applied migration differs from this build",
				    LF_I("version", m->version),
				    LF_S("name", m->name));
				bad++;
			}
		}
		if (rows[i].version != (int)i + 1) {
			mig_say(out, "gap      before %04d\n", rows[i].version);
			bad++;
		}
		if (rows[i].version > top)
			top = rows[i].version;
	}
	*ret_top = top;
	return bad;
}

/* Reads schema_migrations (empty when it does not exist). */
static int
mig_rows(const struct acct_db_ops *ops, void *c, bool create,
    struct acct_mig_row *rows, size_t *ret_n)
{
	bool exists = false;
	int rv;

	*ret_n = 0;
	if ((rv = ops->mig_table(c, create, &exists)) != 0)
		return rv;
	if (!exists)
		return 0;
	return ops->mig_list(c, rows, MIG_ROWS_MAX, ret_n);
}

int
acct_migrate_up(
    const struct acct_db_ops *ops, void *c, FILE *out, int *ret_applied)
{
	struct acct_mig_row rows[MIG_ROWS_MAX];
	const struct acct_migration *m;
	char sum[ACCT_CHECKSUM_LEN + 1];
	int applied = 0, top, rv = 0;
	size_t n;

	for (;;) {
		if ((rv = ops->mig_begin(c)) != 0)
			break;
		if ((rv = mig_rows(ops, c, true, rows, &n)) != 0)
			goto abort;
		if (mig_check_rows(ops, rows, n, out, &top) != 0) {
			rv = -EPROTO;
			goto abort;
		}
		if ((m = mig_find(top + 1)) == NULL) {
			rv = ops->mig_end(c, false);
			break;
		}
		acct_migration_checksum(m, ops->kind, sum, sizeof(sum));
		if ((rv = ops->exec(
			 c, acct_migration_sql(m, ops->kind, true))) != 0 ||
		    (rv = ops->mig_mark(c, m, sum, true)) != 0)
			goto abort;
		if ((rv = ops->mig_end(c, true)) != 0)
			break;
		applied++;
		mig_say(out, "applied  %04d %s\n", m->version, m->name);
		log_info(NULL, "migration applied", LF_S("database", ops->name),
		    LF_I("version", m->version), LF_S("name", m->name));
		continue;
	abort:
		(void)ops->mig_end(c, false);
		break;
	}
	if (rv == 0 && applied == 0)
		mig_say(out, "up to date (%zu steps)\n", acct_migrations_n);
	if (rv == 0 && ret_applied != NULL)
		*ret_applied = applied;
	return rv;
}

/* ---- verify: which objects a step creates ---- */

/* Copies the next identifier-ish word at *p into out (lower case), moving
 * *p past it.  false at the end of the text. */
static bool
mig_word(const char **p, char *out, size_t outlen)
{
	const char *s = *p;
	size_t n = 0;

	for (;;) {
		while (*s != '\0' && isspace((unsigned char)*s))
			s++;
		if (s[0] == '-' && s[1] == '-') {
			while (*s != '\0' && *s != '\n')
				s++;
			continue;
		}
		break;
	}
	if (*s == '\0')
		return false;
	if (!(isalnum((unsigned char)*s) || *s == '_')) {
		out[0] = *s;
		out[1] = '\0';
		*p = s + 1;
		return true;
	}
	while (isalnum((unsigned char)*s) || *s == '_') {
		if (n + 1 < outlen)
			out[n++] = (char)tolower((unsigned char)*s);
		s++;
	}
	out[n] = '\0';
	*p = s;
	return true;
}

typedef void (*mig_object_fn)(
    void *arg, enum acct_object kind, const char *name);

/* Calls fn for every CREATE [UNIQUE] TABLE|INDEX|TRIGGER [IF NOT EXISTS]
 * <name> in sql. */
static void
mig_objects(const char *sql, mig_object_fn fn, void *arg)
{
	char w[MIG_IDENT_MAX + 1], name[MIG_IDENT_MAX + 1];
	enum acct_object kind;
	const char *p = sql;

	while (mig_word(&p, w, sizeof(w))) {
		if (strcmp(w, "create") != 0)
			continue;
		if (!mig_word(&p, w, sizeof(w)))
			return;
		if (strcmp(w, "unique") == 0 && !mig_word(&p, w, sizeof(w)))
			return;
		if (strcmp(w, "table") == 0)
			kind = ACCT_OBJ_TABLE;
		else if (strcmp(w, "index") == 0)
			kind = ACCT_OBJ_INDEX;
		else if (strcmp(w, "trigger") == 0)
			kind = ACCT_OBJ_TRIGGER;
		else
			continue;
		if (!mig_word(&p, name, sizeof(name)))
			return;
		if (strcmp(name, "if") == 0) {
			/* IF NOT EXISTS */
			if (!mig_word(&p, name, sizeof(name)) ||
			    !mig_word(&p, name, sizeof(name)) ||
			    !mig_word(&p, name, sizeof(name)))
				return;
		}
		fn(arg, kind, name);
	}
}

struct mig_verify {
	const struct acct_db_ops *ops;
	void *c;
	FILE *out;
	int missing;
	int rv;
};

static const char *
mig_kind_str(enum acct_object k)
{
	return k == ACCT_OBJ_TABLE   ? "table"
	       : k == ACCT_OBJ_INDEX ? "index"
				     : "trigger";
}

static void
mig_verify_object(void *arg, enum acct_object kind, const char *name)
{
	struct mig_verify *v = arg;
	bool ok = false;
	int rv;

	if (v->rv != 0)
		return;
	if ((rv = v->ops->has_object(v->c, kind, name, &ok)) != 0) {
		v->rv = rv;
		return;
	}
	mig_say(v->out, "object   %-7s %s: %s\n", mig_kind_str(kind), name,
	    ok ? "ok" : "MISSING");
	if (!ok)
		v->missing++;
}

int
acct_migrate_verify(
    const struct acct_db_ops *ops, void *c, FILE *out, bool *ret_ok)
{
	struct acct_mig_row rows[MIG_ROWS_MAX];
	struct mig_verify v = {ops, c, out, 0, 0};
	int bad, top, pending = 0, rv;
	size_t n, i;

	if ((rv = mig_rows(ops, c, false, rows, &n)) != 0)
		goto out;
	bad = mig_check_rows(ops, rows, n, out, &top);
	for (i = 0; i < acct_migrations_n; i++) {
		const struct acct_migration *m = &acct_migrations[i];
		bool applied = false;

		for (size_t k = 0; k < n; k++)
			applied |= rows[k].version == m->version;
		mig_say(out, "%-8s %04d %s\n", applied ? "applied" : "pending",
		    m->version, m->name);
		if (!applied) {
			pending++;
			continue;
		}
		mig_objects(acct_migration_sql(m, ops->kind, true),
		    mig_verify_object, &v);
		if ((rv = v.rv) != 0)
			goto out;
	}
	mig_say(out,
	    "verify: %zu applied, %d pending, %d missing object(s), %d "
	    "problem(s): %s\n",
	    n, pending, v.missing, bad,
	    pending == 0 && v.missing == 0 && bad == 0 ? "up to date"
						       : "NOT up to date");
	*ret_ok = pending == 0 && v.missing == 0 && bad == 0;
out:
	return rv;
}

int
acct_migrate_rollback(
    const struct acct_db_ops *ops, void *c, bool yes, FILE *out)
{
	struct acct_mig_row rows[MIG_ROWS_MAX];
	const struct acct_migration *m;
	char sum[ACCT_CHECKSUM_LEN + 1];
	int top, rv;
	size_t n;

	if ((rv = ops->mig_begin(c)) != 0)
		goto out;
	if ((rv = mig_rows(ops, c, false, rows, &n)) != 0)
		goto abort;
	if (mig_check_rows(ops, rows, n, out, &top) != 0) {
		rv = -EPROTO;
		goto abort;
	}
	if (top == 0) {
		mig_say(out, "nothing to roll back\n");
		rv = ops->mig_end(c, false);
		goto out;
	}
	m = mig_find(top);
	if (!yes) {
		mig_say(out,
		    "would roll back %04d %s; run again with --yes to do it\n",
		    m->version, m->name);
		(void)ops->mig_end(c, false);
		rv = -EPERM;
		goto out;
	}
	acct_migration_checksum(m, ops->kind, sum, sizeof(sum));
	if ((rv = ops->exec(c, acct_migration_sql(m, ops->kind, false))) != 0 ||
	    (rv = ops->mig_mark(c, m, sum, false)) != 0)
		goto abort;
	if ((rv = ops->mig_end(c, true)) != 0)
		goto out;
	mig_say(out, "rolled back %04d %s\n", m->version, m->name);
	log_info(NULL, "migration rolled back", LF_S("database", ops->name),
	    LF_I("version", m->version), LF_S("name", m->name));
	goto out;
abort:
	(void)ops->mig_end(c, false);
out:
	return rv;
}
