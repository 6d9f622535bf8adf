#include "cfg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#ifndef AIPROXY_MODELS_DEFAULT
#define AIPROXY_MODELS_DEFAULT "config/models.json"
#endif

extern char **environ;

#define OFF(f) offsetof(struct cfg, f)
#define NNG(name, def, who, field, help)                                       \
	{                                                                      \
		name, CFG_T_NNG_URL, who, def, 0, 256, OFF(field), help        \
	}

static const struct cfg_var cfg_table[] = {
    {"AI_PROXY_ENABLED", CFG_T_BOOL, CFG_GW, "true", 0, 0, OFF(enabled),
	"master switch: false answers 503 on the chat routes"},
    {"AI_PROXY_RATE_LIMIT_ENABLED", CFG_T_BOOL, CFG_GW, "true", 0, 0,
	OFF(rate_limit_enabled),
	"false: no per-caller limits, budgets or threat blocks (internal use)"},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE", CFG_T_INT, CFG_GW | CFG_RL, "60", 1, 1e6,
	OFF(rate_limit_per_minute), "requests per minute per user or session"},
    {"AI_PROXY_RATE_LIMIT_PER_HOUR", CFG_T_INT, CFG_GW | CFG_RL, "500", 1, 1e7,
	OFF(rate_limit_per_hour), "requests per hour per user or session"},
    {"AI_PROXY_RATE_LIMIT_PER_IP_MINUTE", CFG_T_INT, CFG_GW | CFG_RL, "0", 0,
	1e7, OFF(rate_limit_per_ip_minute),
	"requests per minute per client IP (0: 3 x the per-minute limit)"},
    {"AI_PROXY_MAX_TOKENS", CFG_T_INT, CFG_GW | CFG_PW, "4000", 1, 1e6,
	OFF(max_tokens), "largest max_tokens a request may ask for"},
    {"AI_PROXY_DEFAULT_MAX_TOKENS", CFG_T_INT, CFG_GW, "1024", 1, 1e6,
	OFF(default_max_tokens),
	"max_tokens used when a request gives none (capped by "
	"AI_PROXY_MAX_TOKENS)"},
    {"AI_PROXY_TIMEOUT_SECONDS", CFG_T_INT, CFG_GW | CFG_RL | CFG_PW, "60", 1,
	3600, OFF(timeout_seconds), "upstream deadline per request (then 504)"},
    {"AI_PROXY_CACHE_TTL_SECONDS", CFG_T_INT, CFG_PW, "3600", 0, 604800,
	OFF(cache_ttl_seconds), "response cache lifetime (0: no cache)"},
    {"AI_PROXY_COST_LIMIT_DAILY", CFG_T_DBL, CFG_GW | CFG_RL | CFG_ACCT, "10.0",
	0, 1e6, OFF(cost_limit_daily), "USD per user or session per UTC day"},
    {"REDIS_URL", CFG_T_STR, CFG_RL | CFG_PW, "redis://127.0.0.1:6379", 0, 512,
	OFF(redis_url), "Redis for shared limits and breakers"},
    {"REDIS_ENABLED", CFG_T_BOOL, CFG_RL | CFG_PW, "false", 0, 0,
	OFF(redis_enabled), "false: in-process limits (one machine)"},
    {"REDIS_MAX_CONNECTIONS", CFG_T_INT, CFG_RL | CFG_PW, "10", 1, 1000,
	OFF(redis_max_connections), "Redis connection pool size"},
    {"AI_PROXY_REDIS_TIMEOUT_MS", CFG_T_INT, CFG_RL | CFG_PW, "50", 1, 60000,
	OFF(redis_timeout_ms),
	"slower than this, Redis counts as down (fallback)"},
    {"CIRCUIT_BREAKER_FAILURE_THRESHOLD", CFG_T_INT, CFG_PW, "5", 1, 1000,
	OFF(cb_failure_threshold),
	"consecutive failures that open a provider's breaker"},
    {"CIRCUIT_BREAKER_RECOVERY_TIMEOUT", CFG_T_INT, CFG_PW, "60", 1, 86400,
	OFF(cb_recovery_timeout), "seconds open before a half-open probe"},
    {"CIRCUIT_BREAKER_EXPECTED_EXCEPTION_RATE", CFG_T_DBL, CFG_PW, "0.5", 0, 1,
	OFF(cb_expected_exception_rate),
	"failure rate in the window that opens the breaker"},
    {"CIRCUIT_BREAKER_MIN_VOLUME", CFG_T_INT, CFG_PW, "20", 1, 100000,
	OFF(cb_min_volume),
	"upstream attempts in the 60 s window before the failure rate may "
	"open the breaker"},
    {"CLAUDE_API_KEY", CFG_T_SECRET, CFG_PW, NULL, 0, 512, OFF(claude_api_key),
	"Anthropic key (workers only)"},
    {"OPENAI_API_KEY", CFG_T_SECRET, CFG_PW, NULL, 0, 512, OFF(openai_api_key),
	"OpenAI key (workers only)"},
    {"DEFAULT_AI_MODEL", CFG_T_STR, CFG_GW, "claude-3-sonnet", 1, 128,
	OFF(default_model), "model used when a request names none"},
    {"DATABASE_URL", CFG_T_STR, CFG_ACCT, NULL, 0, 1024, OFF(database_url),
	"postgresql://... or sqlite:///path (unset: SQLite in the state "
	"folder)"},
    {"LOG_LEVEL", CFG_T_STR, CFG_ALL, "info", 1, 16, OFF(log_level),
	"debug, info, warn or error"},
    {"DEBUG", CFG_T_BOOL, CFG_ALL, "false", 0, 0, OFF(debug),
	"true: debug logs"},
    {"AI_PROXY_SHUTDOWN_TIMEOUT_SECONDS", CFG_T_INT, CFG_ALL, "30", 1, 3600,
	OFF(shutdown_timeout_seconds),
	"a daemon still stopping this long after SIGTERM exits with status 1"},
    {"CLAUDE_BASE_URL", CFG_T_HTTP_URL, CFG_PW, "https://api.anthropic.com", 0,
	512, OFF(claude_base_url), "Anthropic API base URL"},
    {"OPENAI_BASE_URL", CFG_T_HTTP_URL, CFG_PW, "https://api.openai.com", 0,
	512, OFF(openai_base_url), "OpenAI API base URL"},
    {"CLAUDE_FALLBACK_BASE_URL", CFG_T_HTTP_URL, CFG_PW, NULL, 0, 512,
	OFF(claude_fallback_base_url),
	"second Anthropic upstream, used when the first fails or its breaker "
	"is open (unset: CLAUDE_BASE_URL if CLAUDE_FALLBACK_API_KEY is set)"},
    {"CLAUDE_FALLBACK_API_KEY", CFG_T_SECRET, CFG_PW, NULL, 0, 512,
	OFF(claude_fallback_api_key),
	"key of the second Anthropic upstream (unset: CLAUDE_API_KEY)"},
    {"OPENAI_FALLBACK_BASE_URL", CFG_T_HTTP_URL, CFG_PW, NULL, 0, 512,
	OFF(openai_fallback_base_url),
	"second OpenAI upstream, as CLAUDE_FALLBACK_BASE_URL"},
    {"OPENAI_FALLBACK_API_KEY", CFG_T_SECRET, CFG_PW, NULL, 0, 512,
	OFF(openai_fallback_api_key),
	"key of the second OpenAI upstream (unset: OPENAI_API_KEY)"},
    {"AI_PROXY_HOST", CFG_T_STR, CFG_GW, "127.0.0.1", 1, 255, OFF(host),
	"HTTP listen address"},
    {"AI_PROXY_PORT", CFG_T_INT, CFG_GW, "8000", 1, 65535, OFF(port),
	"HTTP listen port"},
    NNG("AI_PROXY_WORKER_URL", "tcp://127.0.0.1:7100", CFG_GW | CFG_PW,
	worker_url, "gateway listens (req), workers dial (rep)"),
    NNG("AI_PROXY_STREAM_URL", "tcp://127.0.0.1:7101", CFG_GW | CFG_PW,
	stream_url,
	"gateway listens (pull) for stream chunks, breaker states and worker "
	"stats; workers dial the address each request carries (push), and "
	"this one for breakers and stats"),
    NNG("AI_PROXY_CONTROL_URL", "tcp://127.0.0.1:7102", CFG_GW | CFG_PW,
	control_url, "gateway listens (pub), workers dial (sub)"),
    NNG("AI_PROXY_GATEWAY_URL", "tcp://127.0.0.1:7103", CFG_GW, gateway_url,
	"gateway listens (rep) for ping and status"),
    NNG("AI_PROXY_RATELIMITER_URL", "tcp://127.0.0.1:7110", CFG_GW | CFG_RL,
	ratelimiter_url, "ratelimiter listens (rep), gateway dials (req)"),
    NNG("AI_PROXY_ACCOUNTANT_URL", "tcp://127.0.0.1:7120",
	CFG_GW | CFG_RL | CFG_PW | CFG_ACCT, accountant_url,
	"accountant listens (rep); gateway, ratelimiter and workers dial "
	"(req)"),
    NNG("AI_PROXY_USAGE_URL", "tcp://127.0.0.1:7121", CFG_PW | CFG_ACCT,
	usage_url, "accountant listens (sub), workers dial (pub)"),
    {"AI_PROXY_WORKERS", CFG_T_INT, CFG_PW, "2", 1, 256, OFF(workers),
	"provider-worker processes ./scripts/run starts"},
    {"AI_PROXY_WORKER_ID", CFG_T_STR, CFG_PW, "w1", 1, 32, OFF(worker_id),
	"this worker's name (journal, logs)"},
    {"AI_PROXY_WORKER_CONCURRENCY", CFG_T_INT, CFG_PW, "8192", 1, 100000,
	OFF(worker_concurrency), "calls one worker holds at once"},
    {"AI_PROXY_MAX_BODY_BYTES", CFG_T_INT, CFG_GW, "1048576", 1024, 67108864,
	OFF(max_body_bytes), "largest request body (then 413)"},
    {"AI_PROXY_MAX_HEADER_BYTES", CFG_T_INT, CFG_GW, "16384", 1024, 1048576,
	OFF(max_header_bytes), "largest request header block"},
    {"AI_PROXY_MAX_CONNS_PER_IP", CFG_T_INT, CFG_GW, "256", 1, 100000,
	OFF(max_conns_per_ip), "open connections per client IP"},
    {"AI_PROXY_CONN_TIMEOUT_SECONDS", CFG_T_INT, CFG_GW, "30", 1, 3600,
	OFF(conn_timeout_seconds),
	"idle client connection timeout (slow headers or body)"},
    {"AI_PROXY_CORS_ORIGINS", CFG_T_STR, CFG_GW, "", 0, 4096, OFF(cors_origins),
	"comma-separated allowed origins"},
    {"AI_PROXY_ADMIN_KEY", CFG_T_SECRET, CFG_GW, NULL, 0, 512, OFF(admin_key),
	"bearer key of the admin endpoints (unset: 404)"},
    {"AI_PROXY_JWT_SECRET", CFG_T_SECRET, CFG_GW, NULL, 0, 512, OFF(jwt_secret),
	"HS256 secret of user tokens"},
    {"AI_PROXY_TRUSTED_PROXIES", CFG_T_STR, CFG_GW, "", 0, 4096,
	OFF(trusted_proxies),
	"proxy addresses and CIDR blocks whose X-Forwarded-For is honoured"},
    {"AI_PROXY_BLOCK_SECONDS", CFG_T_INT, CFG_GW | CFG_RL, "900", 1, 604800,
	OFF(block_seconds), "how long a subject stays blocked"},
    {"AI_PROXY_RATELIMITER_REPLICAS", CFG_T_INT, CFG_RL, "1", 1, 1000,
	OFF(ratelimiter_replicas),
	"ratelimiters sharing Redis: while Redis is down each enforces "
	"1/N of every limit in process"},
    {"AI_PROXY_MAX_RETRIES", CFG_T_INT, CFG_PW, "2", 0, 10, OFF(max_retries),
	"upstream retries per request"},
    {"AI_PROXY_FALLBACK_MODEL_MAP", CFG_T_STR, CFG_GW | CFG_PW, "", 0, 4096,
	OFF(fallback_model_map),
	"failover of non-streamed calls to the other provider when every "
	"upstream of theirs fails: <model>=<other provider's model>,... (*= "
	"any; empty: none)"},
    {"AI_PROXY_MODELS_FILE", CFG_T_STR, CFG_GW | CFG_PW | CFG_ACCT, NULL, 1,
	1024, OFF(models_file),
	"model table: ids, aliases, prices (unset: config/models.json of "
	"the source tree built)"},
    {"AI_PROXY_STATE_DIR", CFG_T_STR, CFG_ALL, "./var", 1, 1024, OFF(state_dir),
	"folder for SQLite, journals"},
};

#define CFG_NVARS (sizeof(cfg_table) / sizeof(cfg_table[0]))

const struct cfg_var *
cfg_vars(size_t *ret_n)
{
	*ret_n = CFG_NVARS;
	return cfg_table;
}

static int cfg_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
cfg_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const struct cfg_var *
cfg_find(const char *name, size_t n)
{
	for (size_t i = 0; i < CFG_NVARS; i++) {
		if (strlen(cfg_table[i].name) == n &&
		    strncmp(cfg_table[i].name, name, n) == 0)
			return &cfg_table[i];
	}
	return NULL;
}

static int
parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = {"1", "true", "yes", "on"};
	static const char *const no[] = {"0", "false", "no", "off"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

static bool
has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/* Parses one value into its field.  Returns 0 or -EINVAL with err set. */
static int
cfg_set(struct cfg *c, const struct cfg_var *v, const char *val, char *err,
    size_t errlen)
{
	void *field = (char *)c + v->offset;
	char *end;

	switch (v->type) {
	case CFG_T_BOOL:
		if (parse_bool(val, field) != 0)
			return cfg_err(err, errlen,
			    "%s: expected true or false, got \"%s\"", v->name,
			    val);
		return 0;
	case CFG_T_INT: {
		long long n;

		errno = 0;
		n = strtoll(val, &end, 10);
		if (errno != 0 || end == val || *end != '\0')
			return cfg_err(err, errlen,
			    "%s: expected an integer, got \"%s\"", v->name,
			    val);
		if ((double)n < v->min || (double)n > v->max)
			return cfg_err(err, errlen,
			    "%s: %lld is out of range [%.0f, %.0f]", v->name, n,
			    v->min, v->max);
		*(int64_t *)field = n;
		return 0;
	}
	case CFG_T_DBL: {
		double d;

		errno = 0;
		d = strtod(val, &end);
		if (errno != 0 || end == val || *end != '\0' || !isfinite(d))
			return cfg_err(err, errlen,
			    "%s: expected a number, got \"%s\"", v->name, val);
		if (d < v->min || d > v->max)
			return cfg_err(err, errlen,
			    "%s: %g is out of range [%g, %g]", v->name, d,
			    v->min, v->max);
		*(double *)field = d;
		return 0;
	}
	case CFG_T_NNG_URL:
		if (!has_prefix(val, "tcp://") && !has_prefix(val, "ipc://") &&
		    !has_prefix(val, "inproc://") &&
		    !has_prefix(val, "tcp4://") && !has_prefix(val, "tcp6://"))
			return cfg_err(err, errlen,
			    "%s: expected a tcp://, ipc:// or inproc:// URL, "
			    "got \"%s\"",
			    v->name, val);
		break;
	case CFG_T_HTTP_URL:
		if (!has_prefix(val, "http://") && !has_prefix(val, "https://"))
			return cfg_err(err, errlen,
			    "%s: expected an http:// or https:// URL", v->name);
		break;
	case CFG_T_STR:
	case CFG_T_SECRET:
	case CFG_T_MAX:
		break;
	}
	/* Strings. */
	if (strlen(val) > (size_t)v->max)
		return cfg_err(err, errlen, "%s: longer than %.0f characters",
		    v->name, v->max);
	if (strlen(val) < (size_t)v->min)
		return cfg_err(err, errlen, "%s: must not be empty", v->name);
	free(*(char **)field);
	if ((*(char **)field = strdup(val)) == NULL)
		return cfg_err(err, errlen, "%s: out of memory", v->name);
	return 0;
}

/* A variable's value: the environment first, then the file. */
struct cfg_kv {
	char *name;
	char *value;
};

static const char *
kv_get(const struct cfg_kv *kv, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].name, name) == 0)
			return kv[i].value;
	return NULL;
}

static void
kv_free(struct cfg_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].name);
		if (kv[i].value != NULL) {
			explicit_bzero(kv[i].value, strlen(kv[i].value));
			free(kv[i].value);
		}
	}
	free(kv);
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
			    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* Reads KEY=VALUE lines ("export " prefix, # comments, quotes). */
static int
cfg_read_file(const char *path, struct cfg_kv **ret, size_t *ret_n, char *err,
    size_t errlen)
{
	struct cfg_kv *kv = NULL, *nkv;
	size_t n = 0, cap = 0, lineno = 0, linecap = 0;
	char *line = NULL, *p, *eq, *val;
	FILE *f;
	int rv = 0;

	if ((f = fopen(path, "r")) == NULL)
		return cfg_err(err, errlen, "%s: %s", path, strerror(errno));
	while (getline(&line, &linecap, f) >= 0) {
		lineno++;
		p = trim(line);
		if (*p == '\0' || *p == '#')
			continue;
		if (strncmp(p, "export ", 7) == 0)
			p = trim(p + 7);
		if ((eq = strchr(p, '=')) == NULL || eq == p) {
			rv = cfg_err(err, errlen, "%s:%zu: expected NAME=value",
			    path, lineno);
			goto out;
		}
		*eq = '\0';
		p = trim(p);
		val = trim(eq + 1);
		if ((val[0] == '"' || val[0] == '\'') && strlen(val) >= 2 &&
		    val[strlen(val) - 1] == val[0]) {
			val[strlen(val) - 1] = '\0';
			val++;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nkv = realloc(kv, cap * sizeof(*kv))) == NULL) {
				rv = -ENOMEM;
				goto out;
			}
			kv = nkv;
		}
		kv[n].name = strdup(p);
		kv[n].value = strdup(val);
		n++;
		if (kv[n - 1].name == NULL || kv[n - 1].value == NULL) {
			rv = -ENOMEM;
			goto out;
		}
	}
out:
	if (line != NULL) {
		explicit_bzero(line, linecap);
		free(line);
	}
	fclose(f);
	if (rv != 0) {
		kv_free(kv, n);
		return rv;
	}
	*ret = kv;
	*ret_n = n;
	return 0;
}

/* An unknown AI_PROXY_* name is a typo worth stopping for. */
static int
cfg_check_unknown(const char *name, size_t namelen, const char *where,
    char *err, size_t errlen)
{
	if (namelen < 9 || strncmp(name, "AI_PROXY_", 9) != 0)
		return 0;
	if (cfg_find(name, namelen) != NULL)
		return 0;
	return cfg_err(err, errlen, "%.*s: unknown AI_PROXY_ variable%s",
	    (int)namelen, name, where);
}

void
cfg_free(struct cfg *c)
{
	for (size_t i = 0; i < CFG_NVARS; i++) {
		char **field;

		if (cfg_table[i].type != CFG_T_STR &&
		    cfg_table[i].type != CFG_T_SECRET &&
		    cfg_table[i].type != CFG_T_NNG_URL &&
		    cfg_table[i].type != CFG_T_HTTP_URL)
			continue;
		field = (char **)((char *)c + cfg_table[i].offset);
		if (*field != NULL && cfg_table[i].type == CFG_T_SECRET)
			explicit_bzero(*field, strlen(*field));
		free(*field);
		*field = NULL;
	}
}

int
cfg_load(struct cfg *c, unsigned mask, char *const *envp, const char *env_file,
    char *err, size_t errlen)
{
	struct cfg_kv *file = NULL;
	size_t nfile = 0;
	int rv = 0;

	memset(c, 0, sizeof(*c));
	if (envp == NULL)
		envp = environ;
	if (env_file != NULL &&
	    (rv = cfg_read_file(env_file, &file, &nfile, err, errlen)) != 0)
		return rv;
	for (size_t i = 0; i < nfile && rv == 0; i++)
		rv = cfg_check_unknown(file[i].name, strlen(file[i].name),
		    " (in the env file)", err, errlen);
	for (char *const *e = envp; *e != NULL && rv == 0; e++) {
		const char *eq = strchr(*e, '=');

		if (eq != NULL)
			rv = cfg_check_unknown(
			    *e, (size_t)(eq - *e), "", err, errlen);
	}
	for (size_t i = 0; i < CFG_NVARS && rv == 0; i++) {
		const struct cfg_var *v = &cfg_table[i];
		const char *val = NULL;
		size_t nlen = strlen(v->name);

		if ((v->daemons & mask) == 0)
			continue;
		for (char *const *e = envp; *e != NULL; e++) {
			if (strncmp(*e, v->name, nlen) == 0 &&
			    (*e)[nlen] == '=') {
				val = *e + nlen + 1;
				break;
			}
		}
		if (val == NULL)
			val = kv_get(file, nfile, v->name);
		/* An empty secret counts as unset. */
		if (val != NULL && val[0] == '\0' && v->type == CFG_T_SECRET)
			val = NULL;
		if (val == NULL)
			val = v->def;
		if (val == NULL)
			continue;
		rv = cfg_set(c, v, val, err, errlen);
	}
	kv_free(file, nfile);
	if (rv == 0 && (mask & (CFG_GW | CFG_PW | CFG_ACCT)) &&
	    c->models_file == NULL &&
	    (c->models_file = strdup(AIPROXY_MODELS_DEFAULT)) == NULL)
		rv =
		    cfg_err(err, errlen, "AI_PROXY_MODELS_FILE: out of memory");
	if (rv == 0 && (mask & (CFG_GW | CFG_RL)) &&
	    c->rate_limit_per_ip_minute == 0)
		c->rate_limit_per_ip_minute = 3 * c->rate_limit_per_minute;
	if (rv == 0 && (mask & CFG_GW) && c->default_max_tokens > c->max_tokens)
		c->default_max_tokens = c->max_tokens;
	if (rv == 0 && c->log_level != NULL) {
		enum log_level lvl;

		if (log_level_parse(c->log_level, &lvl) != 0)
			rv = cfg_err(err, errlen,
			    "LOG_LEVEL: expected debug, info, warn or error, "
			    "got \"%s\"",
			    c->log_level);
	}
	if (rv != 0)
		cfg_free(c);
	return rv;
}

static const char *const cfg_type_names[CFG_T_MAX] = {
    [CFG_T_BOOL] = "bool",
    [CFG_T_INT] = "int",
    [CFG_T_DBL] = "number",
    [CFG_T_STR] = "string",
    [CFG_T_SECRET] = "secret",
    [CFG_T_NNG_URL] = "nng URL",
    [CFG_T_HTTP_URL] = "URL",
};

static void
cfg_daemons_str(unsigned d, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s%s", d & CFG_GW ? "gw " : "",
	    d & CFG_RL ? "rl " : "", d & CFG_PW ? "pw " : "",
	    d & CFG_ACCT ? "acct " : "");
	if (out[0] != '\0')
		out[strlen(out) - 1] = '\0';
}

void
cfg_print_table(FILE *f)
{
	char who[32], bounds[64];

	fprintf(f, "| variable | type | bounds | default | read by | "
		   "meaning |\n|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < CFG_NVARS; i++) {
		const struct cfg_var *v = &cfg_table[i];

		cfg_daemons_str(v->daemons, who, sizeof(who));
		if (v->type == CFG_T_INT)
			snprintf(bounds, sizeof(bounds), "%.0f..%.0f", v->min,
			    v->max);
		else if (v->type == CFG_T_DBL)
			snprintf(
			    bounds, sizeof(bounds), "%g..%g", v->min, v->max);
		else if (v->type == CFG_T_BOOL)
			snprintf(bounds, sizeof(bounds), "true/false");
		else
			snprintf(bounds, sizeof(bounds), "<= %g chars", v->max);
		fprintf(f, "| `%s` | %s | %s | %s%s%s | %s | %s |\n", v->name,
		    cfg_type_names[v->type], bounds,
		    v->def && v->def[0] ? "`" : "",
		    v->def ? (v->def[0] ? v->def : "(empty)") : "(unset)",
		    v->def && v->def[0] ? "`" : "", who, v->help);
	}
}

void
cfg_log(const struct cfg *c, unsigned mask)
{
	char num[64];

	for (size_t i = 0; i < CFG_NVARS; i++) {
		const struct cfg_var *v = &cfg_table[i];
		const void *field = (const char *)c + v->offset;
		const char *val = num;

		if ((v->daemons & mask) == 0)
			continue;
		switch (v->type) {
		case CFG_T_BOOL:
			val = *(const bool *)field ? "true" : "false";
			break;
		case CFG_T_INT:
			snprintf(num, sizeof(num), "%lld",
			    (long long)*(const int64_t *)field);
			break;
		case CFG_T_DBL:
			snprintf(
			    num, sizeof(num), "%g", *(const double *)field);
			break;
		case CFG_T_SECRET:
			val = *(char *const *)field ? "(set)" : "(unset)";
			break;
		default:
			val = *(char *const *)field;
			/* Never log the credentials of a URL. */
			if (val != NULL && strstr(val, "://") != NULL &&
			    strchr(strstr(val, "://"), '@') != NULL) {
				snprintf(num, sizeof(num), "%.*s***%s",
				    (int)(strstr(val, "://") + 3 - val), val,
				    strchr(strstr(val, "://"), '@'));
				val = num;
			}
			break;
		}
		log_debug(
		    NULL, "config", LF_S("name", v->name), LF_S("value", val));
	}
}
