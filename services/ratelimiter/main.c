/*
 * aiproxy-ratelimiter: answers the gateway's limit checks over nng.
 * Listens (rep) on AI_PROXY_RATELIMITER_URL.  Flags: see daemon.h.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "rl_server.h"
#include "rl_store.h"

int
main(int argc, char **argv)
{
	struct rl_redis_url url;
	struct rl_server *s;
	struct cfg cfg;
	int rv, sig;

	daemon_setup(argc, argv, RL_DAEMON_NAME, CFG_RL, &cfg);
	if (cfg.redis_enabled && rl_redis_url_parse(cfg.redis_url, &url) != 0)
		fatal(
		    "REDIS_URL: expected redis://[[user]:password@]host[:port]"
		    "[/db]");
	explicit_bzero(&url, sizeof(url));
	if ((s = rl_server_new(&cfg)) == NULL)
		fatal("out of memory");
	if ((rv = rl_server_listen(s, cfg.ratelimiter_url)) != 0) {
		rl_server_free(s);
		fatal("cannot listen on %s: %s", cfg.ratelimiter_url,
		    strerror(-rv));
	}
	log_info(NULL, "ready", LF_S("limits", "enforced"),
	    LF_S("backend", cfg.redis_enabled ? "redis" : "memory"),
	    LF_B("degraded", rl_server_degraded(s)),
	    LF_I("per_minute", cfg.rate_limit_per_minute),
	    LF_I("per_hour", cfg.rate_limit_per_hour),
	    LF_I("per_ip_minute", cfg.rate_limit_per_ip_minute));

	sig = daemon_wait_signal();
	log_info(NULL, "stopping", LF_S("signal", sigabbrev_np(sig)),
	    LF_I("requests", rl_server_requests(s)),
	    LF_I("bad_requests", rl_server_bad_requests(s)));
	rl_server_free(s);
	cfg_free(&cfg);
	nng_fini();
	log_info(NULL, "stopped");
	return EXIT_SUCCESS;
}
