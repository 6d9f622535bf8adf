/*
 * aiproxy-provider-worker: the only process that holds the provider keys.
 * Takes chat calls from the gateway over nng, carries them to Anthropic or
 * OpenAI with libcurl, streams answers back, publishes one usage event per
 * call.  See pw_server.h for the sockets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "daemon.h"
#include "log.h"
#include "models.h"
#include "pw_server.h"
#include "pw_xlate.h"

/* Grace for calls in flight at SIGTERM. */
#define PW_STOP_GRACE_MS 5000

static bool
key_set(const char *k)
{
	return k != NULL && k[0] != '\0';
}

static void
key_register(const char *name, const char *k)
{
	if (key_set(k) && log_add_secret(k) != 0)
		log_warn(NULL, "key too short to be redacted from logs",
		    LF_S("variable", name));
}

/*
 * With -n, also checks what daemon_setup() cannot know: that a key is set.
 * Reads the flags the way daemon_setup() does, then rewinds getopt for it;
 * a configuration that does not load is left to daemon_setup() to report.
 */
static void
check_keys_for_n(int argc, char **argv)
{
	const char *env_file = NULL;
	bool check = false;
	struct cfg c;
	char err[512];
	int ch;

	opterr = 0;
	while ((ch = getopt(argc, argv, "dnf:h")) != -1) {
		if (ch == 'n')
			check = true;
		else if (ch == 'f')
			env_file = optarg;
	}
	optind = 0; /* glibc: a full rescan for daemon_setup() */
	opterr = 1;
	if (!check ||
	    cfg_load(&c, CFG_PW, NULL, env_file, err, sizeof(err)) != 0)
		return;
	if (!key_set(c.claude_api_key) && !key_set(c.openai_api_key)) {
		fprintf(stderr, "configuration invalid: neither CLAUDE_API_KEY "
				"nor OPENAI_API_KEY is set\n");
		cfg_free(&c);
		exit(1);
	}
	cfg_free(&c);
}

int
main(int argc, char **argv)
{
	struct pw_server_opts o;
	struct model_table *models = NULL;
	struct pw_server *srv = NULL;
	struct cfg cfg;
	char err[512];
	int rv, sig;

	check_keys_for_n(argc, argv);
	daemon_setup(argc, argv, "provider-worker", CFG_PW, &cfg);
	if (!key_set(cfg.claude_api_key) && !key_set(cfg.openai_api_key))
		fatal("neither CLAUDE_API_KEY nor OPENAI_API_KEY is set: a "
		      "provider worker needs at least one");
	key_register("CLAUDE_API_KEY", cfg.claude_api_key);
	key_register("OPENAI_API_KEY", cfg.openai_api_key);
	key_register("CLAUDE_FALLBACK_API_KEY", cfg.claude_fallback_api_key);
	key_register("OPENAI_FALLBACK_API_KEY", cfg.openai_fallback_api_key);
	if (models_load(cfg.models_file, &models, err, sizeof(err)) != 0)
		fatal("AI_PROXY_MODELS_FILE: %s", err);
	if (pw_xlate_map_check(
		cfg.fallback_model_map, models, err, sizeof(err)) != 0)
		fatal("AI_PROXY_FALLBACK_MODEL_MAP: %s", err);

	memset(&o, 0, sizeof(o));
	o.worker_url = cfg.worker_url;
	o.control_url = cfg.control_url;
	o.usage_url = cfg.usage_url;
	o.accountant_url = cfg.accountant_url;
	o.state_dir = cfg.state_dir;
	o.worker_id = cfg.worker_id;
	o.concurrency = (int)cfg.worker_concurrency;
	o.base_url[PW_PROV_CLAUDE] = cfg.claude_base_url;
	o.base_url[PW_PROV_OPENAI] = cfg.openai_base_url;
	o.key[PW_PROV_CLAUDE] = cfg.claude_api_key;
	o.key[PW_PROV_OPENAI] = cfg.openai_api_key;
	o.fallback_base_url[PW_PROV_CLAUDE] = cfg.claude_fallback_base_url;
	o.fallback_base_url[PW_PROV_OPENAI] = cfg.openai_fallback_base_url;
	o.fallback_key[PW_PROV_CLAUDE] = cfg.claude_fallback_api_key;
	o.fallback_key[PW_PROV_OPENAI] = cfg.openai_fallback_api_key;
	o.models = models;
	o.breaker.failure_threshold = cfg.cb_failure_threshold;
	o.breaker.rate = cfg.cb_expected_exception_rate;
	o.breaker.min_volume = cfg.cb_min_volume;
	o.breaker.recovery_ms = cfg.cb_recovery_timeout * 1000;
	o.max_retries = (int)cfg.max_retries;
	o.fallback_model_map = cfg.fallback_model_map;
	o.report_url = cfg.stream_url;
	if ((rv = pw_server_start(&o, &srv)) != 0)
		fatal("cannot start: %s", strerror(-rv));
	log_info(NULL, "provider-worker started",
	    LF_S("worker_id", cfg.worker_id),
	    LF_S("worker_url", cfg.worker_url),
	    LF_S("control_url", cfg.control_url),
	    LF_S("usage_url", cfg.usage_url),
	    LF_I("concurrency", cfg.worker_concurrency),
	    LF_B("claude", key_set(cfg.claude_api_key)),
	    LF_B("openai", key_set(cfg.openai_api_key)));

	sig = daemon_wait_signal();
	log_info(NULL, "stopping", LF_I("signal", sig));
	pw_server_stop(srv, PW_STOP_GRACE_MS);
	pw_server_free(srv);
	models_free(models);
	log_info(NULL, "stopped");
	log_clear_secrets();
	cfg_free(&cfg);
	return 0;
}
