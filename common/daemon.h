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
/* Blocks until SIGINT or SIGTERM arrives; returns the signal number. */
int daemon_wait_signal(void);
/* Creates path and its parents (mode 0700). */
int daemon_mkdirs(const char *path);

#endif
