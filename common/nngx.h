/*
 * nng helpers: error translation (once, here), listen/dial with logging,
 * a synchronous call for tools and tests, and an asynchronous rep server
 * (one nng context + aio per in-flight request, driven by callbacks).
 */
#ifndef AIPROXY_NNGX_H
#define AIPROXY_NNGX_H

#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>

/* nng error -> negative errno. */
int nngx_err(int nng_rv);
/* Listens on / dials url; a dial does not wait for the peer (nng keeps
 * retrying in the background).  Logs a failure.  what names the socket. */
int nngx_listen(nng_socket s, const char *url, const char *what);
int nngx_dial(nng_socket s, const char *url, const char *what);
/* A new message holding a copy of len bytes of buf. */
int nngx_msg_new(const void *buf, size_t len, nng_msg **ret);
/* Opens a req socket to url, sends req and waits for the reply.  Caller
 * frees *ret_buf with free().  For tools, tests and start-up checks. */
int nngx_call(const char *url, const void *req, size_t len, int timeout_ms,
    char **ret_buf, size_t *ret_len);

struct nngx_rep;
struct nngx_rep_ctx;

/*
 * Called on an nng thread for each request.  buf (borrowed until the
 * reply) holds the request.  The handler answers with nngx_rep_reply(),
 * now or later from any thread; until then the context is busy.
 */
typedef void (*nngx_rep_fn)(
    void *arg, struct nngx_rep_ctx *ctx, const char *buf, size_t len);

/* Opens a rep socket that listens (listen=true) or dials url, with nctx
 * contexts receiving at once. */
int nngx_rep_start(const char *url, bool listen, int nctx, nngx_rep_fn fn,
    void *arg, struct nngx_rep **ret);
/* Sends the reply (copied) and re-arms the context.  Exactly once per
 * request. */
void nngx_rep_reply(struct nngx_rep_ctx *ctx, const void *buf, size_t len);
/* Ends the request with no reply (the requester times out or resends). */
void nngx_rep_drop(struct nngx_rep_ctx *ctx);
/* Stops receiving, waits for callbacks to finish and frees everything.
 * Requests not yet answered are dropped; a reply a handler sends while
 * this runs is discarded.  Threads that answer asynchronously must have
 * stopped before it is called. */
void nngx_rep_free(struct nngx_rep *r);

#endif
