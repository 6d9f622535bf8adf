/*
 * One thread resumes suspended connections when their time comes: a
 * min-heap of wake-ups ordered by CLOCK_MONOTONIC milliseconds.  MHD
 * threads never sleep; they suspend and hand the connection here.
 */
#include "mock.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <time.h>

#define TIMER_HEAP_MAX 262144
#define TIMER_BATCH    256

static void
timer_swap(struct mock_timer_entry *a, struct mock_timer_entry *b)
{
	struct mock_timer_entry t = *a;

	*a = *b;
	*b = t;
}

static void
timer_push(struct mock_timer *t, struct mock_timer_entry e)
{
	size_t i = t->n++, parent;

	t->heap[i] = e;
	while (i > 0) {
		parent = (i - 1) / 2;
		if (t->heap[parent].due_ms <= t->heap[i].due_ms)
			break;
		timer_swap(&t->heap[parent], &t->heap[i]);
		i = parent;
	}
}

static struct mock_timer_entry
timer_pop(struct mock_timer *t)
{
	struct mock_timer_entry top = t->heap[0];
	size_t i = 0, l, r, m;

	t->heap[0] = t->heap[--t->n];
	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < t->n && t->heap[l].due_ms < t->heap[m].due_ms)
			m = l;
		if (r < t->n && t->heap[r].due_ms < t->heap[m].due_ms)
			m = r;
		if (m == i)
			break;
		timer_swap(&t->heap[m], &t->heap[i]);
		i = m;
	}
	return top;
}

static void *
timer_main(void *arg)
{
	struct mock_timer *t = arg;
	struct MHD_Connection *batch[TIMER_BATCH];
	struct timespec ts;
	long long now;
	size_t n, i;
	bool stop;

	pthread_mutex_lock(&t->mu);
	for (;;) {
		stop = t->stopping;
		now = mock_now_ms();
		n = 0;
		while (t->n > 0 && n < TIMER_BATCH &&
		       (stop || t->heap[0].due_ms <= now))
			batch[n++] = timer_pop(t).conn;
		if (n > 0) {
			pthread_mutex_unlock(&t->mu);
			for (i = 0; i < n; i++)
				MHD_resume_connection(batch[i]);
			pthread_mutex_lock(&t->mu);
			continue;
		}
		if (stop)
			break;
		if (t->n == 0) {
			pthread_cond_wait(&t->cv, &t->mu);
		} else {
			ts.tv_sec = (time_t)(t->heap[0].due_ms / 1000);
			ts.tv_nsec =
			    (long)(t->heap[0].due_ms % 1000) * 1000000L;
			pthread_cond_timedwait(&t->cv, &t->mu, &ts);
		}
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

int
mock_timer_start(struct mock_timer *t)
{
	pthread_condattr_t ca;
	int rv;

	t->n = 0;
	t->cap = 1024;
	t->stopping = false;
	t->running = false;
	t->heap = calloc(t->cap, sizeof(*t->heap));
	if (t->heap == NULL)
		return -ENOMEM;
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	rv = pthread_create(&t->thread, NULL, timer_main, t);
	if (rv != 0) {
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mu);
		free(t->heap);
		t->heap = NULL;
		return -rv;
	}
	t->running = true;
	return 0;
}

int
mock_timer_add(
    struct mock_timer *t, long long due_ms, struct MHD_Connection *conn)
{
	struct mock_timer_entry e = {due_ms, conn};
	struct mock_timer_entry *nh;
	bool wake;

	pthread_mutex_lock(&t->mu);
	if (t->stopping) {
		pthread_mutex_unlock(&t->mu);
		return -ESHUTDOWN;
	}
	if (t->n == t->cap) {
		if (t->cap >= TIMER_HEAP_MAX) {
			pthread_mutex_unlock(&t->mu);
			return -ENOBUFS;
		}
		nh = realloc(t->heap, 2 * t->cap * sizeof(*nh));
		if (nh == NULL) {
			pthread_mutex_unlock(&t->mu);
			return -ENOMEM;
		}
		t->heap = nh;
		t->cap *= 2;
	}
	timer_push(t, e);
	wake = t->heap[0].conn == conn;
	pthread_mutex_unlock(&t->mu);
	if (wake)
		pthread_cond_signal(&t->cv);
	return 0;
}

void
mock_timer_stop(struct mock_timer *t)
{
	if (!t->running)
		return;
	pthread_mutex_lock(&t->mu);
	t->stopping = true;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	t->running = false;
}

void
mock_timer_free(struct mock_timer *t)
{
	if (t->heap == NULL)
		return;
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	free(t->heap);
	t->heap = NULL;
}
