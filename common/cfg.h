/*
 * Configuration: environment variables (and an optional .env file) read
 * through one table of name, type, bounds and default.  Every daemon loads
 * the same table but only the variables marked for it; secrets are read
 * only by the daemons that need them (provider keys: the workers).
 */
#ifndef AIPROXY_CFG_H
#define AIPROXY_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Which daemons read a variable. */
#define CFG_GW   0x01u
#define CFG_RL   0x02u
#define CFG_PW   0x04u
#define CFG_ACCT 0x08u
#define CFG_ALL  0x0fu

enum cfg_type {
	CFG_T_BOOL,
	CFG_T_INT,
	CFG_T_DBL,
	CFG_T_STR,
	CFG_T_SECRET, /* a string never printed */
	CFG_T_NNG_URL,
	CFG_T_HTTP_URL,
	CFG_T_MAX
};

struct cfg {
	bool enabled;
	bool rate_limit_enabled;
	int64_t rate_limit_per_minute;
	int64_t rate_limit_per_hour;
	int64_t rate_limit_per_ip_minute; /* 0 in the table: 3 x per minute */
	int64_t max_tokens;
	int64_t default_max_tokens;
	int64_t timeout_seconds;
	int64_t cache_ttl_seconds;
	double cost_limit_daily;
	char *redis_url;
	bool redis_enabled;
	int64_t redis_max_connections;
	int64_t redis_timeout_ms;
	int64_t cb_failure_threshold;
	int64_t cb_recovery_timeout;
	double cb_expected_exception_rate;
	int64_t cb_min_volume;
	char *claude_fallback_base_url;
	char *claude_fallback_api_key;
	char *openai_fallback_base_url;
	char *openai_fallback_api_key;
	char *fallback_model_map;
	char *claude_api_key;
	char *openai_api_key;
	char *default_model;
	char *database_url;
	char *log_level;
	bool debug;
	int64_t shutdown_timeout_seconds;
	char *claude_base_url;
	char *openai_base_url;
	char *host;
	int64_t port;
	char *worker_url;
	char *stream_url;
	char *control_url;
	char *gateway_url;
	char *ratelimiter_url;
	char *accountant_url;
	char *usage_url;
	int64_t workers;
	char *worker_id;
	int64_t max_body_bytes;
	int64_t max_header_bytes;
	int64_t max_conns_per_ip;
	int64_t conn_timeout_seconds;
	char *cors_origins;
	char *admin_key;
	char *jwt_secret;
	char *trusted_proxies;
	int64_t block_seconds;
	int64_t ratelimiter_replicas;
	int64_t max_retries;
	char *models_file;
	char *state_dir;
	int64_t worker_concurrency;
};

struct cfg_var {
	const char *name;
	enum cfg_type type;
	unsigned daemons; /* CFG_GW | ... */
	const char *def;  /* NULL: unset (strings) */
	double min, max;  /* numbers: bounds; strings: max length in max */
	size_t offset;
	const char *help;
};

/* The table, for printing and tests.  Borrowed. */
const struct cfg_var *cfg_vars(size_t *ret_n);

/*
 * Fills *c from envp (NULL: environ) plus env_file (may be NULL; its values
 * apply where envp has none) for the daemons in mask.  On failure returns
 * -EINVAL with a message naming the variable in err; *c is left freed.
 * Caller frees with cfg_free().
 */
int cfg_load(struct cfg *c, unsigned mask, char *const *envp,
    const char *env_file, char *err, size_t errlen);
void cfg_free(struct cfg *c);
/* Markdown table of the variables (README). */
void cfg_print_table(FILE *f);
/* Logs the effective configuration (secrets shown as set/unset). */
void cfg_log(const struct cfg *c, unsigned mask);

#endif
