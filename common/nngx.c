#include "nngx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "log.h"

int
nngx_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_EINVAL:
		return -EINVAL;
	case NNG_EBUSY:
		return -EBUSY;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECONNREFUSED:
		return -ECONNREFUSED;
	case NNG_ECLOSED:
		return -EBADF;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_ENOTSUP:
		return -ENOTSUP;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_ESTATE:
		return -EPROTO;
	case NNG_ENOENT:
		return -ENOENT;
	case NNG_EPROTO:
		return -EPROTO;
	case NNG_EUNREACHABLE:
		return -EHOSTUNREACH;
	case NNG_EADDRINVAL:
		return -EADDRNOTAVAIL;
	case NNG_EPERM:
		return -EPERM;
	case NNG_EMSGSIZE:
		return -EMSGSIZE;
	case NNG_ECONNABORTED:
		return -ECONNABORTED;
	case NNG_ECONNRESET:
		return -ECONNRESET;
	case NNG_ECANCELED:
		return -ECANCELED;
	case NNG_ENOFILES:
		return -EMFILE;
	case NNG_ENOSPC:
		return -ENOSPC;
	case NNG_EEXIST:
		return -EEXIST;
	case NNG_ECONNSHUT:
		return -EPIPE;
	default:
		return -EIO;
	}
}

int
nngx_listen(nng_socket s, const char *url, const char *what)
{
	int rv;

	if ((rv = nng_listen(s, url, NULL, 0)) != 0) {
		log_error(NULL, "cannot listen", LF_S("socket", what),
		    LF_S("url", url), LF_S("error", nng_strerror(rv)));
		return nngx_err(rv);
	}
	return 0;
}

int
nngx_dial(nng_socket s, const char *url, const char *what)
{
	int rv;

	if ((rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
		log_error(NULL, "cannot dial", LF_S("socket", what),
		    LF_S("url", url), LF_S("error", nng_strerror(rv)));
		return nngx_err(rv);
	}
	return 0;
}

int
nngx_msg_new(const void *buf, size_t len, nng_msg **ret)
{
	nng_msg *m;
	int rv;

	if ((rv = nng_msg_alloc(&m, 0)) != 0)
		return nngx_err(rv);
	if ((rv = nng_msg_append(m, buf, len)) != 0) {
		nng_msg_free(m);
		return nngx_err(rv);
	}
	*ret = m;
	return 0;
}

int
nngx_call(const char *url, const void *req, size_t len, int timeout_ms,
    char **ret_buf, size_t *ret_len)
{
	nng_socket s;
	nng_msg *m = NULL;
	char *out;
	int rv;

	if ((rv = nng_req0_open(&s)) != 0)
		return nngx_err(rv);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	if ((rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0)
		goto close;
	if ((rv = nng_msg_alloc(&m, 0)) != 0 ||
	    (rv = nng_msg_append(m, req, len)) != 0)
		goto close;
	if ((rv = nng_sendmsg(s, m, 0)) != 0)
		goto close;
	m = NULL;
	if ((rv = nng_recvmsg(s, &m, 0)) != 0)
		goto close;
	if ((out = malloc(nng_msg_len(m) + 1)) == NULL) {
		rv = NNG_ENOMEM;
		goto close;
	}
	memcpy(out, nng_msg_body(m), nng_msg_len(m));
	out[nng_msg_len(m)] = '\0';
	*ret_buf = out;
	*ret_len = nng_msg_len(m);
close:
	nng_msg_free(m);
	nng_close(s);
	return nngx_err(rv);
}

/* ---- rep server ---- */

enum rep_state { REP_RECV, REP_BUSY, REP_SEND };

struct nngx_rep_ctx {
	struct nngx_rep *rep;
	nng_ctx ctx;
	nng_aio *aio;
	nng_msg *req;
	enum rep_state state;
};

struct nngx_rep {
	nng_mtx *mtx; /* guards stopping against replies being sent */
	bool stopping;
	nng_socket sock;
	nngx_rep_fn fn;
	void *arg;
	int nctx;
	struct nngx_rep_ctx *ctxs;
};

static void
rep_arm(struct nngx_rep_ctx *c)
{
	c->state = REP_RECV;
	nng_ctx_recv(c->ctx, c->aio);
}

static void
rep_cb(void *arg)
{
	struct nngx_rep_ctx *c = arg;
	int rv = nng_aio_result(c->aio);

	switch (c->state) {
	case REP_RECV:
		if (rv != 0) {
			if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
				return;
			rep_arm(c);
			return;
		}
		c->req = nng_aio_get_msg(c->aio);
		c->state = REP_BUSY;
		c->rep->fn(
		    c->rep->arg, c, nng_msg_body(c->req), nng_msg_len(c->req));
		return;
	case REP_SEND:
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(c->aio));
			nng_aio_set_msg(c->aio, NULL);
			if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
				c->state = REP_BUSY;
				return;
			}
		}
		rep_arm(c);
		return;
	case REP_BUSY:
		return;
	}
}

void
nngx_rep_reply(struct nngx_rep_ctx *c, const void *buf, size_t len)
{
	nng_msg *m;
	int rv;

	/* buf may point into the request: copy it before freeing that. */
	rv = nngx_msg_new(buf, len, &m);
	nng_msg_free(c->req);
	c->req = NULL;
	nng_mtx_lock(c->rep->mtx);
	if (c->rep->stopping) {
		/* Shutting down: the reply has nowhere to go. */
		nng_mtx_unlock(c->rep->mtx);
		if (rv == 0)
			nng_msg_free(m);
		return;
	}
	if (rv != 0) {
		nng_mtx_unlock(c->rep->mtx);
		log_error(NULL, "reply dropped: out of memory");
		rep_arm(c);
		return;
	}
	c->state = REP_SEND;
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
	nng_mtx_unlock(c->rep->mtx);
}

void
nngx_rep_drop(struct nngx_rep_ctx *c)
{
	nng_msg_free(c->req);
	c->req = NULL;
	nng_mtx_lock(c->rep->mtx);
	if (!c->rep->stopping)
		rep_arm(c);
	nng_mtx_unlock(c->rep->mtx);
}

int
nngx_rep_start(const char *url, bool listen, int nctx, nngx_rep_fn fn,
    void *arg, struct nngx_rep **ret)
{
	struct nngx_rep *r;
	int rv, i;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return -ENOMEM;
	if ((rv = nng_mtx_alloc(&r->mtx)) != 0) {
		free(r);
		return nngx_err(rv);
	}
	r->fn = fn;
	r->arg = arg;
	if ((r->ctxs = calloc((size_t)nctx, sizeof(*r->ctxs))) == NULL) {
		nng_mtx_free(r->mtx);
		free(r);
		return -ENOMEM;
	}
	if ((rv = nng_rep0_open(&r->sock)) != 0) {
		nng_mtx_free(r->mtx);
		free(r->ctxs);
		free(r);
		return nngx_err(rv);
	}
	nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, 32u << 20);
	for (i = 0; i < nctx; i++) {
		struct nngx_rep_ctx *c = &r->ctxs[i];

		c->rep = r;
		if ((rv = nng_aio_alloc(&c->aio, rep_cb, c)) != 0)
			goto fail;
		if ((rv = nng_ctx_open(&c->ctx, r->sock)) != 0) {
			nng_aio_free(c->aio);
			c->aio = NULL;
			goto fail;
		}
		r->nctx++;
	}
	rv = listen ? nngx_listen(r->sock, url, "rep")
		    : nngx_dial(r->sock, url, "rep");
	if (rv != 0) {
		nngx_rep_free(r);
		return rv;
	}
	for (i = 0; i < r->nctx; i++)
		rep_arm(&r->ctxs[i]);
	*ret = r;
	return 0;
fail:
	nngx_rep_free(r);
	return nngx_err(rv);
}

void
nngx_rep_free(struct nngx_rep *r)
{
	if (r == NULL)
		return;
	nng_mtx_lock(r->mtx);
	r->stopping = true;
	nng_mtx_unlock(r->mtx);
	for (int i = 0; i < r->nctx; i++)
		nng_aio_stop(r->ctxs[i].aio);
	for (int i = 0; i < r->nctx; i++) {
		struct nngx_rep_ctx *c = &r->ctxs[i];

		nng_msg_free(c->req);
		nng_ctx_close(c->ctx);
		nng_aio_free(c->aio);
	}
	nng_close(r->sock);
	nng_mtx_free(r->mtx);
	free(r->ctxs);
	free(r);
}
