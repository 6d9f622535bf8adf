/*
 * Shared by the accountant's unit tests: temporary folders, usage events
 * and a reply catcher for acct_server_request().
 */
#ifndef AIPROXY_ACCT_UNIT_H
#define AIPROXY_ACCT_UNIT_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "proto.h"

/* A new empty folder under $TMPDIR; au_rmtree() removes it. */
void au_tmpdir(char *out, size_t len);
void au_rmtree(const char *path);

/* A valid usage event of stream worker_id, number seq, at ts_ms. */
void au_event(struct msg_usage_event *ev, const char *event_id,
    const char *worker_id, int64_t seq, int64_t ts_ms);

/* Catches one asynchronous reply. */
struct au_reply {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	char *buf; /* NULL: dropped */
	size_t len;
};

void au_reply_init(struct au_reply *r);
void au_reply_free(struct au_reply *r);
/* An acct_reply_fn; arg is a struct au_reply. */
void au_reply_fn(void *arg, const char *buf, size_t len);
/* Waits (up to 10 s) for the reply and checks its type. */
void au_reply_wait(struct au_reply *r, enum msg_type want);

#endif
