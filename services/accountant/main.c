/*
 * aiproxy-accountant: receives the workers' usage events, writes them to
 * PostgreSQL (DATABASE_URL=postgresql://...) or SQLite (the default, in
 * AI_PROXY_STATE_DIR/aiproxy.db), and answers analytics, quota and
 * journal catch-up requests.  Listens (rep) on AI_PROXY_ACCOUNTANT_URL
 * and (sub) on AI_PROXY_USAGE_URL.  Pending schema migrations are applied
 * at start (aiproxy-migrate inspects and rolls back).  Flags: see
 * daemon.h.
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
	struct acct_server_opts o;
	struct acct_ledger_stats st;
	struct acct_server *s;
	struct cfg cfg;
	char err[512];
	int rv, sig;

	daemon_setup(argc, argv, ACCT_DAEMON_NAME, CFG_ACCT, &cfg);
	memset(&o, 0, sizeof(o));
	o.database_url = cfg.database_url;
	o.state_dir = cfg.state_dir;
	if ((rv = acct_server_new(&o, &s, err, sizeof(err))) != 0) {
		cfg_free(&cfg);
		fatal("%s", err);
	}
	if ((rv = acct_server_listen(s, cfg.accountant_url, cfg.usage_url)) !=
	    0) {
		acct_server_free(s);
		fatal("cannot listen on %s / %s: %s", cfg.accountant_url,
		    cfg.usage_url, strerror(-rv));
	}
	log_info(NULL, "ready",
	    LF_S("ledger", acct_ledger_backend(acct_server_ledger(s))));

	sig = daemon_wait_signal();
	acct_ledger_stats(acct_server_ledger(s), &st);
	log_info(NULL, "stopping", LF_S("signal", sigabbrev_np(sig)),
	    LF_I("events_received", acct_server_events(s)),
	    LF_I("events_rejected", acct_server_events_rejected(s)),
	    LF_I("events_committed", st.committed), LF_I("queued", st.queued),
	    LF_I("bad_requests", acct_server_bad_requests(s)));
	acct_server_free(s);
	cfg_free(&cfg);
	nng_fini();
	log_info(NULL, "stopped");
	return EXIT_SUCCESS;
}
