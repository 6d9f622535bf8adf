/*
 * Push sockets to the gateways' stream URLs: one per URL, dialed on first
 * use and cached.  Messages given to one socket leave in the order given
 * and none is dropped while the socket lives: a send that would block is
 * queued and finished by an aio, never by blocking the caller.
 */
#ifndef PW_PUSH_H
#define PW_PUSH_H

#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>

/* Called once per message handed to pw_push_send(), from any thread,
 * when the socket took it (ok) or it was dropped (closing, timeout). */
typedef void (*pw_push_done_fn)(void *arg, void *tag, size_t n, bool ok);

struct pw_push;
struct pw_push_cache;

/* At most max URLs, each socket buffering sendbuf messages (1..8192).
 * done/arg: see pw_push_done_fn. */
int pw_push_cache_new(size_t max, int sendbuf, pw_push_done_fn done, void *arg,
    struct pw_push_cache **ret);
/* The socket for url, dialed on first use.  -ENOSPC when max URLs are
 * cached already; nng errors as errno.  *ret borrowed from the cache. */
int pw_push_get(struct pw_push_cache *c, const char *url, struct pw_push **ret);
/* Sends m (always taken) after every message sent before on p.  The done
 * callback gets tag and n (may run before this returns). */
void pw_push_send(struct pw_push *p, nng_msg *m, void *tag, size_t n);
/* Waits up to timeout_ms until every queue is empty; -ETIMEDOUT if not. */
int pw_push_cache_flush(struct pw_push_cache *c, int timeout_ms);
/* Messages queued in all sockets. */
size_t pw_push_cache_queued(struct pw_push_cache *c);
/* Drops what is still queued (done with ok false), closes the sockets. */
void pw_push_cache_free(struct pw_push_cache *c);

#endif
