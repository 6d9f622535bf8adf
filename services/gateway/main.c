/*
 * aiproxy-gateway: the HTTP front of aiproxy.  See gw.h.
 */
#include <signal.h>
#include <stdlib.h>

#include <nng/nng.h>

#include "daemon.h"
#include "gw.h"
#include "log.h"

#define GW_DRAIN_MS 5000

int
main(int argc, char **argv)
{
	struct cfg cfg;
	struct gw *gw = NULL;
	int rv, sig;

	daemon_setup(argc, argv, "gateway", CFG_GW, &cfg);
	if (cfg.admin_key != NULL)
		log_add_secret(cfg.admin_key);
	if (cfg.jwt_secret != NULL)
		log_add_secret(cfg.jwt_secret);
	if ((rv = gw_start(&cfg, &gw)) != 0) {
		cfg_free(&cfg);
		fatal("cannot start the gateway (error %d)", rv);
	}
	log_info(NULL, "gateway started");
	if (!cfg.rate_limit_enabled)
		log_warn(NULL, "AI_PROXY_RATE_LIMIT_ENABLED=false: no limits, "
			       "budgets or blocks for any caller");
	sig = daemon_wait_signal();
	log_info(NULL, "stopping", LF_I("signal", sig));
	gw_stop(gw, GW_DRAIN_MS);
	gw_free(gw);
	log_info(NULL, "stopped");
	log_clear_secrets();
	cfg_free(&cfg);
	nng_fini(); /* nng's own threads and caches: valgrind stays quiet */
	return 0;
}
