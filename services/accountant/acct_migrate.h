/*
 * Versioned schema migrations, one up and one down SQL script per step and
 * database, from services/accountant/migrations/{postgres,sqlite}/
 * NNNN_name.{up,down}.sql, embedded in the binaries at build time
 * (embed_migrations.cmake).  Applied steps are recorded in
 * schema_migrations (version, name, checksum of the up script, time).
 *
 * Each step runs in its own transaction, holding the migration lock
 * (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE).  A database
 * holding a step this binary does not know, or whose recorded checksum
 * differs, is refused (-EPROTO): the schema is not the one this code
 * writes to.
 */
#ifndef AIPROXY_ACCT_MIGRATE_H
#define AIPROXY_ACCT_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define ACCT_CHECKSUM_LEN 16 /* FNV-1a 64, hex */

enum acct_db_kind { ACCT_DB_POSTGRES, ACCT_DB_SQLITE, ACCT_DB_MAX };

struct acct_migration {
	int version; /* 1, 2, ... without gaps */
	const char *name;
	const char *postgres[2]; /* up, down */
	const char *sqlite[2];
};

/* Generated (acct_migrations_gen.c). */
extern const struct acct_migration acct_migrations[];
extern const size_t acct_migrations_n;

struct acct_db_ops;

/* The up (up=true) or down script of m for kind. */
const char *acct_migration_sql(
    const struct acct_migration *m, enum acct_db_kind kind, bool up);
/* Checksum of m's up script for kind into out (ACCT_CHECKSUM_LEN + 1). */
void acct_migration_checksum(const struct acct_migration *m,
    enum acct_db_kind kind, char *out, size_t outlen);

/*
 * Applies every pending step in order.  Lines for a human go to out (may
 * be NULL); each step is logged.  *ret_applied (may be NULL) counts the
 * steps applied.
 */
int acct_migrate_up(
    const struct acct_db_ops *ops, void *c, FILE *out, int *ret_applied);
/*
 * Lists applied and pending steps and checks that the tables, indexes and
 * triggers the applied steps create exist.  Changes nothing.  *ret_ok:
 * nothing pending, missing, unknown or altered.
 */
int acct_migrate_verify(
    const struct acct_db_ops *ops, void *c, FILE *out, bool *ret_ok);
/*
 * Rolls the last applied step back, only when yes; otherwise says what it
 * would do and returns -EPERM.  0 (and a note) when nothing is applied.
 */
int acct_migrate_rollback(
    const struct acct_db_ops *ops, void *c, bool yes, FILE *out);

#endif
