/*
 * aiproxy-ctl: talks to a daemon over nng, for tests and operators.
 *
 *   aiproxy-ctl ping <nng-url> [-t timeout_ms] [--listen]
 *   aiproxy-ctl status <nng-url> [-t timeout_ms] [-w what] [--listen]
 *   aiproxy-ctl config-table
 *
 * ping sends msg_ping and prints the pong as one JSON line; status sends
 * msg_status_req and prints the status_resp (its payload parsed).  With
 * --listen the tool listens on the URL with its req socket and waits for
 * a daemon that DIALS (a provider-worker dials the gateway's worker URL).
 * config-table prints the configuration table (markdown, for README.md).
 *
 * Exit status: 0 answered, 1 timeout / error / refused (an ack), 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>

#include "cfg.h"
#include "clock.h"
#include "ids.h"
#include "log.h"
#include "nngx.h"
#include "proto.h"

#define CTL_TIMEOUT_MS_DEFAULT 3000
#define CTL_TIMEOUT_MS_MAX     3600000
#define CTL_RECV_MAX           (32u << 20)

enum ctl_exit { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

struct ctl_opts {
	const char *cmd;
	const char *url;
	const char *what;
	int timeout_ms;
	bool listen;
};

/* Peer tracking for --listen. */
struct ctl_peer {
	nng_mtx *mtx;
	nng_cv *cv;
	int npipes;
};

static void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: aiproxy-ctl ping <nng-url> [-t timeout_ms] [--listen]\n"
	    "       aiproxy-ctl status <nng-url> [-t timeout_ms] [-w what] "
	    "[--listen]\n"
	    "       aiproxy-ctl config-table\n"
	    "  --listen  listen on the URL and wait for a daemon that dials "
	    "it\n"
	    "exit: 0 answered, 1 timeout or error, 2 usage\n");
}

static int
ctl_parse(int argc, char **argv, struct ctl_opts *o)
{
	static const struct option longopts[] = {
	    {"listen", no_argument, NULL, 'l'},
	    {"timeout", required_argument, NULL, 't'},
	    {"what", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *end;
	long v;
	int ch;

	memset(o, 0, sizeof(*o));
	o->timeout_ms = CTL_TIMEOUT_MS_DEFAULT;
	o->what = "health";
	if (argc < 2)
		return -EINVAL;
	o->cmd = argv[1];
	/* Options may come before or after the URL (GNU permutation). */
	optind = 2;
	while ((ch = getopt_long(argc, argv, "t:w:lh", longopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' ||
			    v < 1 || v > CTL_TIMEOUT_MS_MAX) {
				fprintf(stderr,
				    "aiproxy-ctl: -t: expected 1..%d ms\n",
				    CTL_TIMEOUT_MS_MAX);
				return -EINVAL;
			}
			o->timeout_ms = (int)v;
			break;
		case 'w':
			o->what = optarg;
			break;
		case 'l':
			o->listen = true;
			break;
		default:
			return -EINVAL;
		}
	}
	if (strcmp(o->cmd, "config-table") == 0)
		return optind == argc ? 0 : -EINVAL;
	if (strcmp(o->cmd, "ping") != 0 && strcmp(o->cmd, "status") != 0)
		return -EINVAL;
	if (optind != argc - 1)
		return -EINVAL;
	o->url = argv[optind];
	return 0;
}

static void
ctl_on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct ctl_peer *peer = arg;

	(void)p;
	nng_mtx_lock(peer->mtx);
	peer->npipes += ev == NNG_PIPE_EV_ADD_POST ? 1 : -1;
	nng_cv_wake(peer->cv);
	nng_mtx_unlock(peer->mtx);
}

/*
 * --listen: a req socket listening on url; waits for a peer to dial in,
 * then sends req and waits for the reply, all within timeout_ms.  Caller
 * frees *ret_buf.
 */
static int
ctl_call_listen(const char *url, const char *req, size_t len, int timeout_ms,
    char **ret_buf, size_t *ret_len)
{
	struct ctl_peer peer = {NULL, NULL, 0};
	nng_time deadline = nng_clock() + (nng_time)timeout_ms;
	nng_socket s = NNG_SOCKET_INITIALIZER;
	nng_msg *m = NULL;
	nng_time now;
	char *out;
	int rv;

	if ((rv = nng_mtx_alloc(&peer.mtx)) != 0)
		return nngx_err(rv);
	if ((rv = nng_cv_alloc(&peer.cv, peer.mtx)) != 0)
		goto out_mtx;
	if ((rv = nng_req0_open(&s)) != 0)
		goto out_cv;
	nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, CTL_RECV_MAX);
	if ((rv = nng_pipe_notify(
		 s, NNG_PIPE_EV_ADD_POST, ctl_on_pipe, &peer)) != 0 ||
	    (rv = nng_pipe_notify(
		 s, NNG_PIPE_EV_REM_POST, ctl_on_pipe, &peer)) != 0)
		goto out_sock;
	if ((rv = nng_listen(s, url, NULL, 0)) != 0) {
		fprintf(stderr, "aiproxy-ctl: cannot listen on %s: %s\n", url,
		    nng_strerror(rv));
		goto out_sock;
	}
	nng_mtx_lock(peer.mtx);
	while (peer.npipes == 0 && rv == 0)
		rv = nng_cv_until(peer.cv, deadline);
	nng_mtx_unlock(peer.mtx);
	if (rv != 0) {
		fprintf(stderr, "aiproxy-ctl: no peer dialed %s in %d ms\n",
		    url, timeout_ms);
		goto out_sock;
	}
	now = nng_clock();
	if (now >= deadline) {
		rv = NNG_ETIMEDOUT;
		goto out_sock;
	}
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, (nng_duration)(deadline - now));
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, (nng_duration)(deadline - now));
	if ((rv = nng_msg_alloc(&m, 0)) != 0 ||
	    (rv = nng_msg_append(m, req, len)) != 0)
		goto out_sock;
	if ((rv = nng_sendmsg(s, m, 0)) != 0)
		goto out_sock;
	m = NULL;
	if ((rv = nng_recvmsg(s, &m, 0)) != 0)
		goto out_sock;
	if ((out = malloc(nng_msg_len(m) + 1)) == NULL) {
		rv = NNG_ENOMEM;
		goto out_sock;
	}
	memcpy(out, nng_msg_body(m), nng_msg_len(m));
	out[nng_msg_len(m)] = '\0';
	*ret_buf = out;
	*ret_len = nng_msg_len(m);
out_sock:
	nng_msg_free(m);
	/* Closing runs the pipe callbacks: peer must outlive it. */
	nng_close(s);
out_cv:
	nng_cv_free(peer.cv);
out_mtx:
	nng_mtx_free(peer.mtx);
	return nngx_err(rv);
}

/* Prints doc as one compact line and frees it. */
static int
ctl_print(json_t *doc)
{
	char *s;

	if (doc == NULL)
		return -ENOMEM;
	s = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(doc);
	if (s == NULL)
		return -ENOMEM;
	printf("%s\n", s);
	free(s);
	return fflush(stdout) == 0 ? 0 : -EIO;
}

/* Payload as JSON when it parses, else as a string. */
static json_t *
ctl_payload(const char *p, size_t len)
{
	json_t *v;

	if (len == 0)
		return json_null();
	v = json_loadb(p, len, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_stringn(p, len);
	if (v == NULL)
		v = json_sprintf("<%zu bytes, not UTF-8>", len);
	return v;
}

/* Prints a reply; returns the exit status. */
static int
ctl_print_reply(
    const char *buf, size_t len, const char *request_id, int64_t sent_us)
{
	int64_t rtt_us = clock_mono_us() - sent_us;
	enum msg_type t;
	union {
		struct msg_pong pong;
		struct msg_status_resp status;
		struct msg_ack ack;
	} r;
	int rv;

	if ((rv = proto_peek_type(buf, len, &t)) != 0)
		goto bad;
	memset(&r, 0, sizeof(r));
	switch (t) {
	case MSG_PONG:
		if ((rv = msg_pong_decode(buf, len, &r.pong)) != 0)
			goto bad;
		if (strcmp(r.pong.request_id, request_id) != 0)
			goto mismatch;
		rv = ctl_print(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}",
		    "type", "pong", "request_id", r.pong.request_id, "daemon",
		    r.pong.daemon, "pid", (json_int_t)r.pong.pid, "ts_us",
		    (json_int_t)r.pong.ts_us, "rtt_us", (json_int_t)rtt_us));
		return rv == 0 ? CTL_OK : CTL_FAIL;
	case MSG_STATUS_RESP:
		if ((rv = msg_status_resp_decode(buf, len, &r.status)) != 0)
			goto bad;
		if (strcmp(r.status.request_id, request_id) != 0)
			goto mismatch;
		rv = ctl_print(json_pack("{s:s, s:s, s:s, s:s, s:o, s:I}",
		    "type", "status_resp", "request_id", r.status.request_id,
		    "daemon", r.status.daemon, "state", r.status.state,
		    "payload",
		    ctl_payload(r.status.payload, r.status.payload_len),
		    "rtt_us", (json_int_t)rtt_us));
		return rv == 0 ? CTL_OK : CTL_FAIL;
	case MSG_ACK:
		if ((rv = msg_ack_decode(buf, len, &r.ack)) != 0)
			goto bad;
		ctl_print(json_pack("{s:s, s:s, s:b, s:s, s:s}", "type", "ack",
		    "request_id", r.ack.request_id, "ok", (int)r.ack.ok, "code",
		    r.ack.code, "message", r.ack.message));
		fprintf(stderr, "aiproxy-ctl: refused: %s\n", r.ack.code);
		return CTL_FAIL;
	default:
		fprintf(stderr, "aiproxy-ctl: unexpected reply type %s\n",
		    msg_type_str(t) != NULL ? msg_type_str(t) : "?");
		return CTL_FAIL;
	}
mismatch:
	fprintf(stderr, "aiproxy-ctl: reply for another request\n");
	return CTL_FAIL;
bad:
	fprintf(stderr, "aiproxy-ctl: undecodable reply (%zu bytes): %s\n", len,
	    strerror(-rv));
	return CTL_FAIL;
}

static int
ctl_request(const struct ctl_opts *o)
{
	char rid[ID_MAX + 1];
	char *req = NULL, *rep = NULL;
	size_t req_len = 0, rep_len = 0;
	int64_t sent_us;
	int rv, status;

	id_new("ctl_", rid, sizeof(rid));
	sent_us = clock_mono_us();
	if (strcmp(o->cmd, "ping") == 0) {
		struct msg_ping p;

		memset(&p, 0, sizeof(p));
		snprintf(p.request_id, sizeof(p.request_id), "%s", rid);
		p.ts_us = clock_real_us();
		rv = msg_ping_encode(&p, &req, &req_len);
	} else {
		struct msg_status_req s;

		memset(&s, 0, sizeof(s));
		snprintf(s.request_id, sizeof(s.request_id), "%s", rid);
		snprintf(s.what, sizeof(s.what), "%s", o->what);
		rv = msg_status_req_encode(&s, &req, &req_len);
	}
	if (rv != 0) {
		fprintf(stderr, "aiproxy-ctl: cannot encode the request: %s\n",
		    strerror(-rv));
		return rv == -EINVAL ? CTL_USAGE : CTL_FAIL;
	}
	if (o->listen)
		rv = ctl_call_listen(
		    o->url, req, req_len, o->timeout_ms, &rep, &rep_len);
	else
		rv = nngx_call(
		    o->url, req, req_len, o->timeout_ms, &rep, &rep_len);
	free(req);
	if (rv != 0) {
		fprintf(stderr, "aiproxy-ctl: %s %s: %s\n", o->cmd, o->url,
		    rv == -ETIMEDOUT ? "timed out" : strerror(-rv));
		return CTL_FAIL;
	}
	status = ctl_print_reply(rep, rep_len, rid, sent_us);
	free(rep);
	return status;
}

int
main(int argc, char **argv)
{
	struct ctl_opts o;
	int status;

	/* Library logs (nngx) go to stderr, warnings only. */
	log_init("ctl", LOG_LVL_WARN);
	if (argc >= 2 &&
	    (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		ctl_usage(stdout);
		return CTL_OK;
	}
	if (ctl_parse(argc, argv, &o) != 0) {
		ctl_usage(stderr);
		return CTL_USAGE;
	}
	if (strcmp(o.cmd, "config-table") == 0) {
		cfg_print_table(stdout);
		return fflush(stdout) == 0 ? CTL_OK : CTL_FAIL;
	}
	status = ctl_request(&o);
	nng_fini();
	return status;
}
