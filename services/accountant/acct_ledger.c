/*
 * JSON-lines ledger (placeholder, see acct_ledger.h).
 */
#include "acct_ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "daemon.h"
#include "log.h"

/* Far above one event (every string field is bounded by proto.h). */
#define ACCT_LINE_MAX 8192

struct acct_ledger {
	int fd;
	pthread_mutex_t lock;
	char path[PATH_MAX];
};

int
acct_ledger_open(const char *dir, struct acct_ledger **ret)
{
	struct acct_ledger *l;
	int n, rv;

	if ((rv = daemon_mkdirs(dir)) != 0) {
		log_error(NULL, "cannot create the state folder",
		    LF_S("path", dir), LF_S("error", strerror(-rv)));
		return rv;
	}
	if ((l = calloc(1, sizeof(*l))) == NULL)
		return -ENOMEM;
	n = snprintf(l->path, sizeof(l->path), "%s/%s", dir, ACCT_LEDGER_FILE);
	if (n < 0 || (size_t)n >= sizeof(l->path)) {
		free(l);
		return -ENAMETOOLONG;
	}
	l->fd = open(l->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (l->fd < 0) {
		rv = -errno;
		log_error(NULL, "cannot open the ledger", LF_S("path", l->path),
		    LF_S("error", strerror(errno)));
		free(l);
		return rv;
	}
	pthread_mutex_init(&l->lock, NULL);
	*ret = l;
	return 0;
}

const char *
acct_ledger_path(const struct acct_ledger *l)
{
	return l->path;
}

/* The event as a JSON object; caller json_decref()s.  NULL: no memory. */
static json_t *
acct_ledger_json(const struct msg_usage_event *ev, int64_t received_ms)
{
	return json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:s, s:s, s:s, s:s, "
			 "s:s, s:I, s:I, s:I, s:I, s:I, s:b, s:s, s:I, s:I, "
			 "s:I}",
	    "request_id", ev->request_id, "event_id", ev->event_id, "seq",
	    (json_int_t)ev->seq, "worker_id", ev->worker_id, "ts_ms",
	    (json_int_t)ev->ts_ms, "received_ms", (json_int_t)received_ms,
	    "subject_type", ev->subject_type, "subject_id", ev->subject_id,
	    "ip", ev->ip, "provider", ev->provider, "model", ev->model,
	    "input_tokens", (json_int_t)ev->input_tokens, "output_tokens",
	    (json_int_t)ev->output_tokens, "cache_read_tokens",
	    (json_int_t)ev->cache_read_tokens, "cache_write_tokens",
	    (json_int_t)ev->cache_write_tokens, "cost_micro_usd",
	    (json_int_t)ev->cost_micro_usd, "cached", (int)ev->cached, "status",
	    ev->status, "http_status", (json_int_t)ev->http_status,
	    "upstream_ms", (json_int_t)ev->upstream_ms, "total_ms",
	    (json_int_t)ev->total_ms);
}

int
acct_ledger_append(struct acct_ledger *l, const struct msg_usage_event *ev,
    int64_t received_ms)
{
	char line[ACCT_LINE_MAX];
	size_t len, off = 0;
	json_t *doc;
	ssize_t w;
	int rv = 0;

	if ((doc = acct_ledger_json(ev, received_ms)) == NULL)
		return -ENOMEM;
	len = json_dumpb(doc, line, sizeof(line) - 1, JSON_COMPACT);
	json_decref(doc);
	if (len == 0 || len >= sizeof(line) - 1)
		return -EMSGSIZE;
	line[len++] = '\n';
	/* O_APPEND and one lock: lines never interleave. */
	pthread_mutex_lock(&l->lock);
	while (off < len) {
		w = write(l->fd, line + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rv = -errno;
			break;
		}
		off += (size_t)w;
	}
	pthread_mutex_unlock(&l->lock);
	return rv;
}

void
acct_ledger_close(struct acct_ledger *l)
{
	if (l == NULL)
		return;
	close(l->fd);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
