#include "pw_call.h"

#include <stdlib.h>

struct pw_call *
pw_call_new(void)
{
	struct pw_call *c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	atomic_init(&c->refs, 1);
	atomic_init(&c->pending_bytes, 0);
	atomic_init(&c->paused, false);
	atomic_init(&c->finished, false);
	c->new_cmd.kind = PW_CMD_NEW;
	c->new_cmd.call = c;
	c->unpause_cmd.kind = PW_CMD_UNPAUSE;
	c->unpause_cmd.call = c;
	c->fail = PW_FAIL_NONE;
	c->status_word = "error";
	buf_init(&c->body, PROTO_PAYLOAD_MAX);
	return c;
}

void
pw_call_ref(struct pw_call *c)
{
	atomic_fetch_add(&c->refs, 1);
}

void
pw_call_release(struct pw_call *c)
{
	if (c->easy != NULL) {
		curl_easy_cleanup(c->easy);
		c->easy = NULL;
	}
	curl_slist_free_all(c->hdrs);
	c->hdrs = NULL;
	buf_free(&c->body);
	free(c->xbody);
	c->xbody = NULL;
	if (c->su_init) {
		pw_stream_usage_free(&c->su);
		c->su_init = false;
	}
}

void
pw_call_unref(struct pw_call *c)
{
	if (c == NULL)
		return;
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	pw_call_release(c);
	free(c);
}
