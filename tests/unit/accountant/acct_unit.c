#include "acct_unit.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

void
au_tmpdir(char *out, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	int n;

	n = snprintf(out, len, "%s/aiproxy-acct-XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	ck_assert_int_lt(n, (int)len);
	ck_assert_ptr_nonnull(mkdtemp(out));
}

static int
au_rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

void
au_rmtree(const char *path)
{
	ck_assert_int_eq(nftw(path, au_rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

void
au_event(struct msg_usage_event *ev, const char *event_id,
    const char *worker_id, int64_t seq, int64_t ts_ms)
{
	memset(ev, 0, sizeof(*ev));
	snprintf(ev->request_id, sizeof(ev->request_id), "req-%s", event_id);
	snprintf(ev->event_id, sizeof(ev->event_id), "%s", event_id);
	ev->seq = seq;
	snprintf(ev->worker_id, sizeof(ev->worker_id), "%s", worker_id);
	ev->ts_ms = ts_ms;
	snprintf(ev->subject_type, sizeof(ev->subject_type), "user");
	snprintf(ev->subject_id, sizeof(ev->subject_id), "alice");
	snprintf(ev->ip, sizeof(ev->ip), "127.0.0.1");
	snprintf(ev->provider, sizeof(ev->provider), "claude");
	snprintf(ev->model, sizeof(ev->model), "claude-3-5-haiku-20241022");
	ev->input_tokens = 100;
	ev->output_tokens = 20;
	ev->cost_micro_usd = 160;
	snprintf(ev->status, sizeof(ev->status), "ok");
	ev->http_status = 200;
	ev->upstream_ms = 40;
	ev->total_ms = 50;
}

void
au_reply_init(struct au_reply *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
}

void
au_reply_free(struct au_reply *r)
{
	free(r->buf);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
}

void
au_reply_fn(void *arg, const char *buf, size_t len)
{
	struct au_reply *r = arg;

	pthread_mutex_lock(&r->mu);
	ck_assert(!r->done);
	if (buf != NULL) {
		r->buf = malloc(len + 1);
		memcpy(r->buf, buf, len);
		r->buf[len] = '\0';
		r->len = len;
	}
	r->done = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

void
au_reply_wait(struct au_reply *r, enum msg_type want)
{
	struct timespec until;
	enum msg_type t = MSG_NONE;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&r->mu);
	while (!r->done && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
		;
	pthread_mutex_unlock(&r->mu);
	ck_assert_msg(r->done, "no reply within 10 s");
	ck_assert_msg(r->buf != NULL, "the request was dropped");
	ck_assert_int_eq(proto_peek_type(r->buf, r->len, &t), 0);
	ck_assert_msg(t == want, "reply %s, want %s", msg_type_str(t),
	    msg_type_str(want));
}
