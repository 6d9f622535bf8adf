/*
 * What every daemon does first: the common flags (-d -n -f -h), the
 * configuration, logging, and signals.
 */
#ifndef AIPROXY_DAEMON_H
#define AIPROXY_DAEMON_H

#include "cfg.h"

/*
 * Parses -d (foreground, the only mode), -n (check the configuration and
 * exit 0/1), -f envfile and -h; loads the configuration for mask; sets up
 * logging as daemon name; blocks SIGINT/SIGTERM in every thread created
 * afterwards and ignores SIGPIPE.  Exits on -n, -h or a bad configuration.
 * Caller frees *ret with cfg_free().
 */
void daemon_setup(
    int argc, char **argv, const char *name, unsigned mask, struct cfg *ret);
/* Seconds a shutdown may take before the process ends itself, unless
 * AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS says otherwise. */
#define DAEMON_STOP_MAX_S 30
/* Blocks until SIGINT or SIGTERM arrives; returns the signal number.
 * A shutdown still running AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS later ends
 * the process with exit status 1 (a watchdog thread). */
int daemon_wait_signal(void);
/* Creates path and its parents (mode 0700). */
int daemon_mkdirs(const char *path);

#endif
