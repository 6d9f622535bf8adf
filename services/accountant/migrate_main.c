/*
 * aiproxy-migrate: the accountant's schema migrations, for PostgreSQL
 * (DATABASE_URL=postgresql://...) and SQLite (DATABASE_URL unset: the
 * accountant's default file in AI_PROXY_STATE_DIR, or sqlite:///path).
 *
 *   aiproxy-migrate                  apply every pending step
 *   aiproxy-migrate --verify-only    list applied and pending steps, check
 *                                    tables and indexes; exit 0 only when
 *                                    up to date; changes nothing
 *   aiproxy-migrate --rollback --yes roll the last applied step back
 *
 * The accountant applies pending steps itself at start; this tool is for
 * checks, for migrating ahead of a deploy and for going back.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acct_db.h"
#include "acct_migrate.h"
#include "cfg.h"
#include "log.h"

#define MIGRATE_TARGET_MAX 2048

static void
migrate_usage(FILE *f)
{
	fprintf(f,
	    "usage: aiproxy-migrate [-f envfile] [--verify-only | --rollback "
	    "--yes]\n"
	    "  (no option)    apply every pending migration\n"
	    "  --verify-only  list applied/pending steps, check tables and "
	    "indexes;\n"
	    "                 exit 0 when up to date, 1 otherwise\n"
	    "  --rollback     roll the last applied step back (needs --yes)\n"
	    "  -f envfile     read NAME=value lines (the environment wins)\n"
	    "Uses DATABASE_URL and AI_PROXY_STATE_DIR like aiproxy-accountant."
	    "\n");
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"verify-only", no_argument, NULL, 'V'},
	    {"rollback", no_argument, NULL, 'R'},
	    {"yes", no_argument, NULL, 'Y'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	bool verify = false, rollback = false, yes = false, ok = false;
	char target[MIGRATE_TARGET_MAX], describe[512], err[512];
	const struct acct_db_ops *ops = NULL;
	const char *env_file = NULL;
	void *conn = NULL;
	struct cfg cfg;
	int ch, rv, status = EXIT_FAILURE;

	log_init("migrate", LOG_LVL_WARN);
	while ((ch = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'V':
			verify = true;
			break;
		case 'R':
			rollback = true;
			break;
		case 'Y':
			yes = true;
			break;
		case 'f':
			env_file = optarg;
			break;
		case 'h':
			migrate_usage(stdout);
			return EXIT_SUCCESS;
		default:
			migrate_usage(stderr);
			return EXIT_FAILURE;
		}
	}
	if (optind != argc || (verify && rollback) || (yes && !rollback)) {
		migrate_usage(stderr);
		return EXIT_FAILURE;
	}
	if (cfg_load(&cfg, CFG_ACCT, NULL, env_file, err, sizeof(err)) != 0) {
		fprintf(stderr, "configuration invalid: %s\n", err);
		return EXIT_FAILURE;
	}
	if ((rv = acct_db_resolve(cfg.database_url, cfg.state_dir, &ops, target,
		 sizeof(target), describe, sizeof(describe), err,
		 sizeof(err))) != 0) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	printf("database: %s (%s)\n", ops->name, describe);
	if ((rv = ops->connect(target, &conn)) != 0) {
		fprintf(stderr, "cannot connect to %s: %s\n", describe,
		    strerror(-rv));
		goto out;
	}
	if (verify) {
		rv = acct_migrate_verify(ops, conn, stdout, &ok);
		status = rv == 0 && ok ? EXIT_SUCCESS : EXIT_FAILURE;
	} else if (rollback) {
		rv = acct_migrate_rollback(ops, conn, yes, stdout);
		status = rv == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	} else {
		rv = acct_migrate_up(ops, conn, stdout, NULL);
		status = rv == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
	}
	if (rv != 0 && rv != -EPERM)
		fprintf(stderr, "failed: %s\n", strerror(-rv));
out:
	if (ops != NULL)
		ops->disconnect(conn);
	cfg_free(&cfg);
	return status;
}
