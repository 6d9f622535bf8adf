/*
 * aiproxy-accountant: receives the workers' usage events and answers
 * analytics.  Listens (rep) on AI_PROXY_ACCOUNTANT_URL and (sub) on
 * AI_PROXY_USAGE_URL.  Flags: see daemon.h.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>

#include "acct_server.h"
#include "cfg.h"
#include "daemon.h"
#include "log.h"

int
main(int argc, char **argv)
{
	struct acct_server *s;
	struct cfg cfg;
	int rv, sig;

	daemon_setup(argc, argv, ACCT_DAEMON_NAME, CFG_ACCT, &cfg);
	if ((rv = acct_server_new(&cfg, &s)) != 0) {
		cfg_free(&cfg);
		fatal("cannot open the ledger: %s", strerror(-rv));
	}
	if ((rv = acct_server_listen(s, cfg.accountant_url, cfg.usage_url)) !=
	    0) {
		acct_server_free(s);
		fatal("cannot listen on %s / %s: %s", cfg.accountant_url,
		    cfg.usage_url, strerror(-rv));
	}
	log_info(NULL, "ready", LF_S("ledger", "jsonl"),
	    LF_S("analytics", "not implemented yet"));

	sig = daemon_wait_signal();
	log_info(NULL, "stopping", LF_S("signal", sigabbrev_np(sig)),
	    LF_I("events_received", acct_server_events(s)),
	    LF_I("events_rejected", acct_server_events_rejected(s)),
	    LF_I("bad_requests", acct_server_bad_requests(s)));
	acct_server_free(s);
	cfg_free(&cfg);
	nng_fini();
	log_info(NULL, "stopped");
	return EXIT_SUCCESS;
}
