/*
 * The placeholder ledger: every usage event becomes one JSON line appended
 * to <AI_PROXY_STATE_DIR>/usage-events.jsonl.  SQLite/PostgreSQL ledgers
 * replace it with the accountant issue.
 */
#ifndef AIPROXY_ACCT_LEDGER_H
#define AIPROXY_ACCT_LEDGER_H

#include "proto.h"

#define ACCT_LEDGER_FILE "usage-events.jsonl"

struct acct_ledger;

/* Creates dir (and parents) when missing and opens dir/usage-events.jsonl
 * for appending.  Caller frees with acct_ledger_close(). */
int acct_ledger_open(const char *dir, struct acct_ledger **ret);
/* The file's path, borrowed from l. */
const char *acct_ledger_path(const struct acct_ledger *l);
/* Appends ev as one line (one write(2); safe from several threads). */
int acct_ledger_append(struct acct_ledger *l, const struct msg_usage_event *ev,
    int64_t received_ms);
/* Accepts NULL. */
void acct_ledger_close(struct acct_ledger *l);

#endif
