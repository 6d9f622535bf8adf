#include "pw_push.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <nng/protocol/pipeline0/push.h>
#include <nng/supplemental/util/platform.h>

#include "clock.h"
#include "log.h"
#include "nngx.h"

/* A gateway that takes nothing for this long loses the message. */
#define PW_PUSH_TIMEOUT_MS 60000
#define PW_PUSH_URL_MAX    256

struct push_item {
	STAILQ_ENTRY(push_item) link;
	nng_msg *m;
	void *tag;
	size_t n;
};

STAILQ_HEAD(push_items, push_item);

struct pw_push {
	struct pw_push_cache *cache;
	char url[PW_PUSH_URL_MAX + 1];
	nng_socket sock;
	nng_aio *aio;
	pthread_mutex_t mu;
	struct push_items queue; /* head is in flight when busy */
	size_t nqueued;
	bool busy;
	bool closing;
};

struct pw_push_cache {
	pthread_mutex_t mu;
	struct pw_push **v;
	size_t n, max;
	int sendbuf;
	pw_push_done_fn done;
	void *arg;
};

static void push_aio_cb(void *arg);

int
pw_push_cache_new(size_t max, int sendbuf, pw_push_done_fn done, void *arg,
    struct pw_push_cache **ret)
{
	struct pw_push_cache *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -ENOMEM;
	if ((c->v = calloc(max, sizeof(*c->v))) == NULL) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	c->max = max;
	c->sendbuf = sendbuf;
	c->done = done;
	c->arg = arg;
	*ret = c;
	return 0;
}

static int
push_open(struct pw_push_cache *c, const char *url, struct pw_push **ret)
{
	struct pw_push *p;
	int rv;

	if (strlen(url) > PW_PUSH_URL_MAX)
		return -ENAMETOOLONG;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	p->cache = c;
	memcpy(p->url, url, strlen(url) + 1);
	STAILQ_INIT(&p->queue);
	pthread_mutex_init(&p->mu, NULL);
	if ((rv = nng_push0_open(&p->sock)) != 0) {
		rv = nngx_err(rv);
		goto fail_mu;
	}
	if ((rv = nng_aio_alloc(&p->aio, push_aio_cb, p)) != 0) {
		rv = nngx_err(rv);
		goto fail_sock;
	}
	nng_aio_set_timeout(p->aio, PW_PUSH_TIMEOUT_MS);
	nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, c->sendbuf);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 20);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 1000);
	if ((rv = nngx_dial(p->sock, url, "push")) != 0)
		goto fail_aio;
	*ret = p;
	return 0;
fail_aio:
	nng_aio_free(p->aio);
fail_sock:
	nng_close(p->sock);
fail_mu:
	pthread_mutex_destroy(&p->mu);
	free(p);
	return rv;
}

int
pw_push_get(struct pw_push_cache *c, const char *url, struct pw_push **ret)
{
	struct pw_push *p = NULL;
	int rv = 0;

	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->v[i]->url, url) == 0) {
			*ret = c->v[i];
			goto out;
		}
	}
	if (c->n == c->max) {
		rv = -ENOSPC;
		goto out;
	}
	if ((rv = push_open(c, url, &p)) == 0) {
		c->v[c->n++] = p;
		*ret = p;
	}
out:
	pthread_mutex_unlock(&c->mu);
	return rv;
}

/*
 * Sends from the head of the queue while the socket takes messages without
 * blocking; when it would block, the head goes out through the aio.  Items
 * sent are moved to *done.  Called locked, not busy.
 */
static void
push_drain_locked(struct pw_push *p, struct push_items *done)
{
	struct push_item *it;
	int rv;

	while (!p->closing && (it = STAILQ_FIRST(&p->queue)) != NULL) {
		rv = nng_sendmsg(p->sock, it->m, NNG_FLAG_NONBLOCK);
		if (rv == NNG_EAGAIN) {
			p->busy = true;
			nng_aio_set_msg(p->aio, it->m);
			nng_send_aio(p->sock, p->aio);
			return;
		}
		STAILQ_REMOVE_HEAD(&p->queue, link);
		p->nqueued--;
		if (rv != 0) {
			nng_msg_free(it->m);
			it->m = NULL; /* marks the failure for the caller */
		}
		STAILQ_INSERT_TAIL(done, it, link);
	}
}

static void
push_report(struct pw_push *p, struct push_items *done)
{
	struct push_item *it;

	while ((it = STAILQ_FIRST(done)) != NULL) {
		STAILQ_REMOVE_HEAD(done, link);
		p->cache->done(p->cache->arg, it->tag, it->n, it->m != NULL);
		free(it);
	}
}

void
pw_push_send(struct pw_push *p, nng_msg *m, void *tag, size_t n)
{
	struct push_items done = STAILQ_HEAD_INITIALIZER(done);
	struct push_item *it;

	if ((it = calloc(1, sizeof(*it))) == NULL) {
		nng_msg_free(m);
		p->cache->done(p->cache->arg, tag, n, false);
		return;
	}
	it->m = m;
	it->tag = tag;
	it->n = n;
	pthread_mutex_lock(&p->mu);
	if (p->closing) {
		pthread_mutex_unlock(&p->mu);
		nng_msg_free(m);
		free(it);
		p->cache->done(p->cache->arg, tag, n, false);
		return;
	}
	STAILQ_INSERT_TAIL(&p->queue, it, link);
	p->nqueued++;
	if (!p->busy)
		push_drain_locked(p, &done);
	pthread_mutex_unlock(&p->mu);
	push_report(p, &done);
}

static void
push_aio_cb(void *arg)
{
	struct push_items done = STAILQ_HEAD_INITIALIZER(done);
	struct pw_push *p = arg;
	struct push_item *it;
	int rv = nng_aio_result(p->aio);

	pthread_mutex_lock(&p->mu);
	p->busy = false;
	it = STAILQ_FIRST(&p->queue);
	if (it != NULL) {
		STAILQ_REMOVE_HEAD(&p->queue, link);
		p->nqueued--;
		if (rv != 0) {
			/* The message is still ours on failure. */
			nng_msg_free(nng_aio_get_msg(p->aio));
			nng_aio_set_msg(p->aio, NULL);
			it->m = NULL;
			if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
				log_warn(NULL, "stream chunk dropped",
				    LF_S("url", p->url),
				    LF_S("error", nng_strerror(rv)));
		}
		STAILQ_INSERT_TAIL(&done, it, link);
	}
	push_drain_locked(p, &done);
	pthread_mutex_unlock(&p->mu);
	push_report(p, &done);
}

size_t
pw_push_cache_queued(struct pw_push_cache *c)
{
	size_t n = 0;

	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; i < c->n; i++) {
		pthread_mutex_lock(&c->v[i]->mu);
		n += c->v[i]->nqueued;
		pthread_mutex_unlock(&c->v[i]->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return n;
}

int
pw_push_cache_flush(struct pw_push_cache *c, int timeout_ms)
{
	int64_t end = clock_mono_ms() + timeout_ms;

	while (pw_push_cache_queued(c) > 0) {
		if (clock_mono_ms() >= end)
			return -ETIMEDOUT;
		nng_msleep(5);
	}
	return 0;
}

static void
push_close(struct pw_push *p)
{
	struct push_items done = STAILQ_HEAD_INITIALIZER(done);
	struct push_item *it;

	pthread_mutex_lock(&p->mu);
	p->closing = true;
	pthread_mutex_unlock(&p->mu);
	/* Aborts the send in flight; its callback reports it. */
	nng_aio_stop(p->aio);
	pthread_mutex_lock(&p->mu);
	while ((it = STAILQ_FIRST(&p->queue)) != NULL) {
		STAILQ_REMOVE_HEAD(&p->queue, link);
		p->nqueued--;
		nng_msg_free(it->m);
		it->m = NULL;
		STAILQ_INSERT_TAIL(&done, it, link);
	}
	pthread_mutex_unlock(&p->mu);
	push_report(p, &done);
	nng_close(p->sock);
	nng_aio_free(p->aio);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void
pw_push_cache_free(struct pw_push_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		push_close(c->v[i]);
	pthread_mutex_destroy(&c->mu);
	free(c->v);
	free(c);
}
