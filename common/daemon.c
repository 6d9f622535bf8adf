#include "daemon.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "models.h"

/* AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS, for the watchdog. */
static int64_t stop_max_s = DAEMON_STOP_MAX_S;

static void
daemon_usage(const char *name)
{
	fprintf(stderr,
	    "usage: aiproxy-%s [-dnh] [-f envfile]\n"
	    "  -d          stay in the foreground (always)\n"
	    "  -n          check the configuration and exit (0: valid)\n"
	    "  -f envfile  read NAME=value lines (the environment wins)\n"
	    "  -h          this help\n"
	    "Configuration comes from environment variables; see README.md.\n",
	    name);
}

void
daemon_setup(
    int argc, char **argv, const char *name, unsigned mask, struct cfg *ret)
{
	const char *env_file = NULL;
	bool check_only = false;
	char err[512];
	enum log_level lvl;
	sigset_t set;
	int ch;

	log_init(name, LOG_LVL_INFO);
	while ((ch = getopt(argc, argv, "dnf:h")) != -1) {
		switch (ch) {
		case 'd':
			break;
		case 'n':
			check_only = true;
			break;
		case 'f':
			env_file = optarg;
			break;
		case 'h':
			daemon_usage(name);
			exit(0);
		default:
			daemon_usage(name);
			exit(1);
		}
	}
	if (optind != argc) {
		daemon_usage(name);
		exit(1);
	}
	if (cfg_load(ret, mask, NULL, env_file, err, sizeof(err)) != 0) {
		if (check_only) {
			fprintf(stderr, "configuration invalid: %s\n", err);
			exit(1);
		}
		fatal("configuration invalid: %s", err);
	}
	if (ret->models_file != NULL) {
		struct model_table *models = NULL;

		/* The model table is configuration too: check it here. */
		if (models_load(ret->models_file, &models, err, sizeof(err)) !=
		    0) {
			cfg_free(ret);
			if (check_only) {
				fprintf(stderr,
				    "configuration invalid: "
				    "AI_PROXY_MODELS_FILE: %s\n",
				    err);
				exit(1);
			}
			fatal("configuration invalid: AI_PROXY_MODELS_FILE: %s",
			    err);
		}
		models_free(models);
	}
	if (check_only) {
		fprintf(stderr, "configuration OK\n");
		cfg_free(ret);
		exit(0);
	}
	stop_max_s = ret->shutdown_timeout_seconds;
	if (log_level_parse(ret->log_level, &lvl) == 0)
		log_set_level(ret->debug ? LOG_LVL_DEBUG : lvl);
	cfg_log(ret, mask);

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/*
 * Runs once the stop signal has come: a shutdown still running after
 * AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS (a drain takes 5 s; nng 1.5's nng_close()
 * can hang when a peer vanished mid-handshake) ends the process.  Nothing is
 * lost by it: usage events not yet in the database are in the workers'
 * journals, and in-process limits die with the process anyway.  Further
 * stop signals are ignored meanwhile (they stay blocked).
 */
static void *
stop_watchdog(void *arg)
{
	struct timespec ts = {(time_t)stop_max_s, 0};

	(void)arg;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	log_error(NULL, "shutdown still running: exiting now",
	    LF_I("seconds", stop_max_s));
	_exit(EXIT_FAILURE);
	return NULL;
}

int
daemon_wait_signal(void)
{
	pthread_attr_t attr;
	pthread_t t;
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	while (sigwait(&set, &sig) != 0)
		;
	if (pthread_attr_init(&attr) == 0) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, stop_watchdog, NULL) != 0)
			log_warn(NULL, "no shutdown watchdog");
		pthread_attr_destroy(&attr);
	}
	return sig;
}

int
daemon_mkdirs(const char *path)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}
