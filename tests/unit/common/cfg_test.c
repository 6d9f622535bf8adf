/*
 * cfg: the table's defaults, each type's parser, every bound, unknown
 * names, the env file, the daemon masks and freeing.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "unit_common.h"

static char *const no_env[] = {NULL};

static const struct cfg_var *
var_find(const char *name)
{
	size_t n;
	const struct cfg_var *v = cfg_vars(&n);

	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return &v[i];
	ck_abort_msg("no variable %s in the table", name);
	return NULL;
}

static int64_t
field_int(const struct cfg *c, const struct cfg_var *v)
{
	return *(const int64_t *)((const char *)c + v->offset);
}

static double
field_dbl(const struct cfg *c, const struct cfg_var *v)
{
	return *(const double *)((const char *)c + v->offset);
}

static bool
field_bool(const struct cfg *c, const struct cfg_var *v)
{
	return *(const bool *)((const char *)c + v->offset);
}

static const char *
field_str(const struct cfg *c, const struct cfg_var *v)
{
	return *(char *const *)((const char *)c + v->offset);
}

static bool
is_string_type(enum cfg_type t)
{
	return t == CFG_T_STR || t == CFG_T_SECRET || t == CFG_T_NNG_URL ||
	       t == CFG_T_HTTP_URL;
}

/* Every string field of c is NULL (nothing left allocated). */
static void
assert_strings_null(const struct cfg *c)
{
	size_t n;
	const struct cfg_var *v = cfg_vars(&n);

	for (size_t i = 0; i < n; i++)
		if (is_string_type(v[i].type))
			ck_assert_msg(field_str(c, &v[i]) == NULL,
			    "%s still set", v[i].name);
}

/* A load that must fail with an error naming name. */
static void
expect_reject(
    char *const *envp, unsigned mask, const char *file, const char *name)
{
	struct cfg c;
	char err[512] = "";
	int rv;

	rv = cfg_load(&c, mask, envp, file, err, sizeof(err));
	ck_assert_msg(rv == -EINVAL, "%s: expected -EINVAL, got %d (%s)",
	    envp[0] ? envp[0] : name, rv, err);
	ck_assert_msg(strstr(err, name) != NULL,
	    "error \"%s\" does not name %s", err, name);
	assert_strings_null(&c);
}

static void
load_ok(struct cfg *c, char *const *envp, unsigned mask, const char *file)
{
	char err[512] = "";
	int rv;

	rv = cfg_load(c, mask, envp, file, err, sizeof(err));
	ck_assert_msg(rv == 0, "cfg_load: %d (%s)", rv, err);
}

/* ---- defaults ---- */

static const struct {
	const char *name;
	double num; /* ints, doubles and bools */
	const char *str;
} defaults[] = {
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE", 60, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_HOUR", 500, NULL},
    {"AI_PROXY_MAX_TOKENS", 4000, NULL},
    {"AI_PROXY_TIMEOUT_SECONDS", 60, NULL},
    {"AI_PROXY_CACHE_TTL_SECONDS", 3600, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY", 10.0, NULL},
    {"REDIS_MAX_CONNECTIONS", 10, NULL},
    {"CIRCUIT_BREAKER_FAILURE_THRESHOLD", 5, NULL},
    {"CIRCUIT_BREAKER_RECOVERY_TIMEOUT", 60, NULL},
    {"CIRCUIT_BREAKER_EXPECTED_EXCEPTION_RATE", 0.5, NULL},
    {"DEFAULT_AI_MODEL", 0, "claude-3-sonnet"},
    {"AI_PROXY_HOST", 0, "127.0.0.1"},
    {"AI_PROXY_PORT", 8000, NULL},
    {"AI_PROXY_ENABLED", 1, NULL},
    {"LOG_LEVEL", 0, "info"},
    {"DEBUG", 0, NULL},
};

START_TEST(test_default)
{
	const struct cfg_var *v = var_find(defaults[_i].name);
	struct cfg c;

	load_ok(&c, no_env, CFG_ALL, NULL);
	switch (v->type) {
	case CFG_T_INT:
		ck_assert_int_eq(field_int(&c, v), (int64_t)defaults[_i].num);
		break;
	case CFG_T_DBL:
		ck_assert_double_eq(field_dbl(&c, v), defaults[_i].num);
		break;
	case CFG_T_BOOL:
		ck_assert_int_eq(field_bool(&c, v), defaults[_i].num != 0);
		break;
	default:
		ck_assert_ptr_nonnull(field_str(&c, v));
		ck_assert_str_eq(field_str(&c, v), defaults[_i].str);
		break;
	}
	cfg_free(&c);
}
END_TEST

START_TEST(test_default_secrets_unset)
{
	static const char *const secrets[] = {"CLAUDE_API_KEY",
	    "OPENAI_API_KEY", "AI_PROXY_ADMIN_KEY", "AI_PROXY_JWT_SECRET"};
	struct cfg c;

	load_ok(&c, no_env, CFG_ALL, NULL);
	for (size_t i = 0; i < 4; i++)
		ck_assert_ptr_null(field_str(&c, var_find(secrets[i])));
	cfg_free(&c);
}
END_TEST

/* Every default in the table parses and lies within its own bounds. */
START_TEST(test_table_sane)
{
	size_t n;
	const struct cfg_var *v = cfg_vars(&n);

	ck_assert_uint_gt(n, 0);
	for (size_t i = 0; i < n; i++) {
		ck_assert_msg(
		    v[i].daemons != 0 && (v[i].daemons & ~CFG_ALL) == 0,
		    "%s: bad daemon mask", v[i].name);
		ck_assert_msg(v[i].type < CFG_T_MAX, "%s: bad type", v[i].name);
		ck_assert_msg(v[i].min <= v[i].max, "%s: min > max", v[i].name);
		for (size_t j = i + 1; j < n; j++)
			ck_assert_msg(strcmp(v[i].name, v[j].name) != 0,
			    "%s listed twice", v[i].name);
	}
}
END_TEST

/* ---- each type ---- */

static const struct parse_case {
	char *env;
	unsigned mask;
	bool ok;
	const char *name;
	double num;      /* expected number or bool */
	const char *str; /* expected string */
} parse_cases[] = {
    {"AI_PROXY_ENABLED=false", CFG_GW, true, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_ENABLED=TRUE", CFG_GW, true, "AI_PROXY_ENABLED", 1, NULL},
    {"AI_PROXY_ENABLED=1", CFG_GW, true, "AI_PROXY_ENABLED", 1, NULL},
    {"AI_PROXY_ENABLED=yes", CFG_GW, true, "AI_PROXY_ENABLED", 1, NULL},
    {"AI_PROXY_ENABLED=On", CFG_GW, true, "AI_PROXY_ENABLED", 1, NULL},
    {"AI_PROXY_ENABLED=0", CFG_GW, true, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_ENABLED=no", CFG_GW, true, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_ENABLED=OFF", CFG_GW, true, "AI_PROXY_ENABLED", 0, NULL},
    {"REDIS_ENABLED=true", CFG_RL, true, "REDIS_ENABLED", 1, NULL},
    {"AI_PROXY_ENABLED=maybe", CFG_GW, false, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_ENABLED=2", CFG_GW, false, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_ENABLED=", CFG_GW, false, "AI_PROXY_ENABLED", 0, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=42", CFG_GW, true,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 42, NULL},
    {"AI_PROXY_PORT=65535", CFG_GW, true, "AI_PROXY_PORT", 65535, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=abc", CFG_GW, false,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 0, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=12abc", CFG_GW, false,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 0, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=1.5", CFG_GW, false,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 0, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=", CFG_GW, false,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 0, NULL},
    {"AI_PROXY_RATE_LIMIT_PER_MINUTE=99999999999999999999", CFG_GW, false,
	"AI_PROXY_RATE_LIMIT_PER_MINUTE", 0, NULL},
    {"AI_PROXY_PORT=0x1f90", CFG_GW, false, "AI_PROXY_PORT", 0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=2.5", CFG_GW, true, "AI_PROXY_COST_LIMIT_DAILY",
	2.5, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=0", CFG_ACCT, true, "AI_PROXY_COST_LIMIT_DAILY",
	0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=1e3", CFG_RL, true, "AI_PROXY_COST_LIMIT_DAILY",
	1000, NULL},
    {"CIRCUIT_BREAKER_EXPECTED_EXCEPTION_RATE=0.25", CFG_PW, true,
	"CIRCUIT_BREAKER_EXPECTED_EXCEPTION_RATE", 0.25, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=abc", CFG_GW, false,
	"AI_PROXY_COST_LIMIT_DAILY", 0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=nan", CFG_GW, false,
	"AI_PROXY_COST_LIMIT_DAILY", 0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=inf", CFG_GW, false,
	"AI_PROXY_COST_LIMIT_DAILY", 0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=1.0x", CFG_GW, false,
	"AI_PROXY_COST_LIMIT_DAILY", 0, NULL},
    {"AI_PROXY_COST_LIMIT_DAILY=", CFG_GW, false, "AI_PROXY_COST_LIMIT_DAILY",
	0, NULL},
    {"DEFAULT_AI_MODEL=gpt-4o-mini", CFG_GW, true, "DEFAULT_AI_MODEL", 0,
	"gpt-4o-mini"},
    {"DEFAULT_AI_MODEL=", CFG_GW, false, "DEFAULT_AI_MODEL", 0, NULL},
    {"CLAUDE_API_KEY=sk-ant-test-0123456789", CFG_PW, true, "CLAUDE_API_KEY", 0,
	"sk-ant-test-0123456789"},
    {"AI_PROXY_WORKER_URL=ipc:///tmp/aiproxy-w.sock", CFG_PW, true,
	"AI_PROXY_WORKER_URL", 0, "ipc:///tmp/aiproxy-w.sock"},
    {"AI_PROXY_WORKER_URL=inproc://w", CFG_GW, true, "AI_PROXY_WORKER_URL", 0,
	"inproc://w"},
    {"AI_PROXY_USAGE_URL=tcp://127.0.0.1:9", CFG_ACCT, true,
	"AI_PROXY_USAGE_URL", 0, "tcp://127.0.0.1:9"},
    {"AI_PROXY_WORKER_URL=http://127.0.0.1:7100", CFG_GW, false,
	"AI_PROXY_WORKER_URL", 0, NULL},
    {"AI_PROXY_WORKER_URL=127.0.0.1:7100", CFG_GW, false, "AI_PROXY_WORKER_URL",
	0, NULL},
    {"CLAUDE_BASE_URL=http://127.0.0.1:9999", CFG_PW, true, "CLAUDE_BASE_URL",
	0, "http://127.0.0.1:9999"},
    {"OPENAI_BASE_URL=https://api.openai.com", CFG_PW, true, "OPENAI_BASE_URL",
	0, "https://api.openai.com"},
    {"CLAUDE_BASE_URL=ftp://127.0.0.1", CFG_PW, false, "CLAUDE_BASE_URL", 0,
	NULL},
    {"CLAUDE_BASE_URL=api.anthropic.com", CFG_PW, false, "CLAUDE_BASE_URL", 0,
	NULL},
    {"LOG_LEVEL=debug", CFG_RL, true, "LOG_LEVEL", 0, "debug"},
    {"LOG_LEVEL=warning", CFG_ACCT, true, "LOG_LEVEL", 0, "warning"},
    {"LOG_LEVEL=verbose", CFG_GW, false, "LOG_LEVEL", 0, NULL},
};

START_TEST(test_parse)
{
	const struct parse_case *pc = &parse_cases[_i];
	char *const envp[] = {pc->env, NULL};
	const struct cfg_var *v = var_find(pc->name);
	struct cfg c;

	if (!pc->ok) {
		expect_reject(envp, pc->mask, NULL, pc->name);
		return;
	}
	load_ok(&c, envp, pc->mask, NULL);
	switch (v->type) {
	case CFG_T_INT:
		ck_assert_int_eq(field_int(&c, v), (int64_t)pc->num);
		break;
	case CFG_T_DBL:
		ck_assert_double_eq(field_dbl(&c, v), pc->num);
		break;
	case CFG_T_BOOL:
		ck_assert_int_eq(field_bool(&c, v), pc->num != 0);
		break;
	default:
		ck_assert_ptr_nonnull(field_str(&c, v));
		ck_assert_str_eq(field_str(&c, v), pc->str);
		break;
	}
	cfg_free(&c);
}
END_TEST

/* ---- every bound of every variable ---- */

/* "NAME=" + a value of exactly len characters valid for v's type. */
static char *
env_of_len(const struct cfg_var *v, size_t len)
{
	const char *prefix = v->type == CFG_T_NNG_URL    ? "tcp://"
			     : v->type == CFG_T_HTTP_URL ? "http://"
							 : "";
	size_t nlen = strlen(v->name), plen = strlen(prefix);
	char *s;

	ck_assert_uint_ge(len, plen);
	s = malloc(nlen + 1 + len + 1);
	ck_assert_ptr_nonnull(s);
	memcpy(s, v->name, nlen);
	s[nlen] = '=';
	memcpy(s + nlen + 1, prefix, plen);
	memset(s + nlen + 1 + plen, 'a', len - plen);
	s[nlen + 1 + len] = '\0';
	return s;
}

static char *
env_of_num(const struct cfg_var *v, double d)
{
	char *s;

	if (v->type == CFG_T_INT)
		ck_assert_int_ge(
		    asprintf(&s, "%s=%lld", v->name, (long long)d), 0);
	else
		ck_assert_int_ge(asprintf(&s, "%s=%.17g", v->name, d), 0);
	return s;
}

static void
bound_reject(const struct cfg_var *v, char *env)
{
	char *const envp[] = {env, NULL};
	struct cfg c;
	char err[512] = "";
	int rv;

	rv = cfg_load(&c, v->daemons, envp, NULL, err, sizeof(err));
	ck_assert_msg(rv == -EINVAL, "%.80s accepted", env);
	ck_assert_msg(strstr(err, v->name) != NULL,
	    "error \"%s\" does not name %s", err, v->name);
	/* A rejected secret is not echoed back. */
	if (v->type == CFG_T_SECRET && strlen(env) > strlen(v->name) + 8)
		ck_assert_ptr_null(strstr(err, env + strlen(v->name) + 1));
	assert_strings_null(&c);
	free(env);
}

/* The value an int variable ends up with once derived values apply. */
static int64_t
expected_int(const struct cfg_var *v, const char *val)
{
	int64_t n = strtoll(val, NULL, 10);

	/* 0 means 3 x the per-minute limit (default 60). */
	if (strcmp(v->name, "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE") == 0 && n == 0)
		return 3 * 60;
	/* Capped by AI_PROXY_MAX_TOKENS (default 4000). */
	if (strcmp(v->name, "AI_PROXY_DEFAULT_MAX_TOKENS") == 0 && n > 4000)
		return 4000;
	return n;
}

static void
bound_accept(const struct cfg_var *v, char *env)
{
	char *const envp[] = {env, NULL};
	const char *val = env + strlen(v->name) + 1;
	struct cfg c;

	load_ok(&c, envp, v->daemons, NULL);
	switch (v->type) {
	case CFG_T_INT:
		ck_assert_int_eq(field_int(&c, v), expected_int(v, val));
		break;
	case CFG_T_DBL:
		ck_assert_double_eq(field_dbl(&c, v), strtod(val, NULL));
		break;
	default:
		ck_assert_ptr_nonnull(field_str(&c, v));
		ck_assert_str_eq(field_str(&c, v), val);
		break;
	}
	cfg_free(&c);
	free(env);
}

START_TEST(test_bounds)
{
	size_t n;
	const struct cfg_var *v = &cfg_vars(&n)[_i];

	switch (v->type) {
	case CFG_T_INT:
	case CFG_T_DBL:
		bound_reject(v, env_of_num(v, v->min - 1));
		bound_reject(v, env_of_num(v, v->max + 1));
		bound_accept(v, env_of_num(v, v->min));
		bound_accept(v, env_of_num(v, v->max));
		break;
	case CFG_T_BOOL:
		bound_reject(v, env_of_len(v, 0));
		break;
	default:
		bound_reject(v, env_of_len(v, (size_t)v->max + 1));
		/* An empty secret means unset, not an error. */
		if (v->min >= 1 && v->type != CFG_T_SECRET)
			bound_reject(v, env_of_len(v, 0));
		/* LOG_LEVEL's values are names, checked separately. */
		if (strcmp(v->name, "LOG_LEVEL") != 0)
			bound_accept(v, env_of_len(v, (size_t)v->max));
		break;
	}
}
END_TEST

/* ---- unknown names ---- */

static const struct {
	char *env;
	bool ok;
	const char *name;
} unknown_cases[] = {
    {"AI_PROXY_RATE_LIMIT_PER_MINUT=5", false, "AI_PROXY_RATE_LIMIT_PER_MINUT"},
    {"AI_PROXY_PORTS=8000", false, "AI_PROXY_PORTS"},
    {"AI_PROXY_=1", false, "AI_PROXY_"},
    {"AI_PROXY_COST_LIMIT=1", false, "AI_PROXY_COST_LIMIT"},
    {"FOO_BAR=1", true, NULL},
    {"PATH=/usr/bin:/bin", true, NULL},
    {"AI_PROXYFOO=1", true, NULL},
    {"AI_PROXY=1", true, NULL},
    {"ai_proxy_port=1", true, NULL},
    {"CLAUDE_API_KEYS=x", true, NULL},
    {"REDIS_FOO=1", true, NULL},
    {"AIPROXY_SOURCE_DIR=/src", true, NULL},
    /* Known, but read by another daemon: not an error. */
    {"AI_PROXY_WORKERS=3", true, NULL},
};

START_TEST(test_unknown)
{
	char *const envp[] = {
	    "AI_PROXY_PORT=8080", unknown_cases[_i].env, NULL};
	struct cfg c;

	if (!unknown_cases[_i].ok) {
		expect_reject(envp, CFG_GW, NULL, unknown_cases[_i].name);
		return;
	}
	load_ok(&c, envp, CFG_GW, NULL);
	ck_assert_int_eq(c.port, 8080);
	cfg_free(&c);
}
END_TEST

/* ---- env file ---- */

START_TEST(test_file_syntax)
{
	char *path = uc_temp_file(
	    "# a comment\n"
	    "   # an indented comment\n"
	    "\n"
	    "   \n"
	    "export AI_PROXY_PORT=9001\n"
	    "AI_PROXY_HOST=\"0.0.0.0\"\n"
	    "DEFAULT_AI_MODEL='gpt-4o-mini'\n"
	    "  AI_PROXY_MAX_TOKENS = 1234  \n"
	    "AI_PROXY_CORS_ORIGINS=\"https://a.example, https://b.example\"\n"
	    "LOG_LEVEL=debug\r\n"
	    "AI_PROXY_TRUSTED_PROXIES=\"\"\n"
	    "DATABASE_URL=postgresql://u:p@127.0.0.1/db?sslmode=disable\n"
	    "UNRELATED_TOOL_SETTING=1\n"
	    "AI_PROXY_ENABLED=false");
	struct cfg c;

	load_ok(&c, no_env, CFG_GW | CFG_ACCT, path);
	ck_assert_int_eq(c.port, 9001);
	ck_assert_str_eq(c.host, "0.0.0.0");
	ck_assert_str_eq(c.default_model, "gpt-4o-mini");
	ck_assert_int_eq(c.max_tokens, 1234);
	ck_assert_str_eq(
	    c.cors_origins, "https://a.example, https://b.example");
	ck_assert_str_eq(c.log_level, "debug");
	ck_assert_str_eq(c.trusted_proxies, "");
	ck_assert_str_eq(
	    c.database_url, "postgresql://u:p@127.0.0.1/db?sslmode=disable");
	/* The last line has no newline. */
	ck_assert(!c.enabled);
	cfg_free(&c);
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_file_env_wins)
{
	char *path = uc_temp_file("AI_PROXY_PORT=9001\n"
				  "AI_PROXY_RATE_LIMIT_PER_MINUTE=77\n");
	char *const envp[] = {"AI_PROXY_PORT=9100", NULL};
	struct cfg c;

	load_ok(&c, envp, CFG_GW, path);
	ck_assert_int_eq(c.port, 9100);
	ck_assert_int_eq(c.rate_limit_per_minute, 77);
	cfg_free(&c);
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_file_unknown)
{
	char *path = uc_temp_file("AI_PROXY_PORT=9001\nAI_PROXY_PROT=1\n");

	expect_reject(no_env, CFG_GW, path, "AI_PROXY_PROT");
	unlink(path);
	free(path);
}
END_TEST

/* A name read by another daemon only is known, so not an error. */
START_TEST(test_file_other_daemon)
{
	char *path = uc_temp_file("AI_PROXY_WORKERS=4\nCLAUDE_API_KEY=k\n");
	struct cfg c;

	load_ok(&c, no_env, CFG_GW, path);
	ck_assert_int_eq(c.workers, 0);
	ck_assert_ptr_null(c.claude_api_key);
	cfg_free(&c);
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_file_bad_value)
{
	char *path = uc_temp_file("AI_PROXY_PORT=0\n");

	expect_reject(no_env, CFG_GW, path, "AI_PROXY_PORT");
	unlink(path);
	free(path);
}
END_TEST

static const char *const bad_lines[] = {
    "AI_PROXY_PORT\n",
    "=9000\n",
    "just some words\n",
};

START_TEST(test_file_bad_line)
{
	char *path = uc_temp_file(bad_lines[_i]);

	/* The error names the file. */
	expect_reject(no_env, CFG_GW, path, path);
	unlink(path);
	free(path);
}
END_TEST

START_TEST(test_file_missing)
{
	char path[] = "/nonexistent-aiproxy-dir/aiproxy.env";
	struct cfg c;
	char err[512] = "";

	ck_assert_int_eq(
	    cfg_load(&c, CFG_GW, no_env, path, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, path));
	assert_strings_null(&c);
}
END_TEST

/* ---- masks and derived values ---- */

START_TEST(test_mask_gateway_no_provider_keys)
{
	char *const envp[] = {"CLAUDE_API_KEY=sk-ant-api03-secretvalue",
	    "OPENAI_API_KEY=sk-proj-secretvalue", NULL};
	char *path = uc_temp_file("OPENAI_API_KEY=sk-file-secretvalue\n");
	struct cfg c;

	load_ok(&c, envp, CFG_GW, path);
	ck_assert_ptr_null(c.claude_api_key);
	ck_assert_ptr_null(c.openai_api_key);
	/* Nor other daemons' settings. */
	ck_assert_ptr_null(c.redis_url);
	ck_assert_ptr_null(c.database_url);
	cfg_free(&c);

	load_ok(&c, envp, CFG_RL | CFG_ACCT, path);
	ck_assert_ptr_null(c.claude_api_key);
	ck_assert_ptr_null(c.openai_api_key);
	cfg_free(&c);

	load_ok(&c, envp, CFG_PW, path);
	ck_assert_str_eq(c.claude_api_key, "sk-ant-api03-secretvalue");
	ck_assert_str_eq(c.openai_api_key, "sk-proj-secretvalue");
	cfg_free(&c);
	unlink(path);
	free(path);
}
END_TEST

/* A bad value for a variable this daemon does not read is not its problem. */
START_TEST(test_mask_ignores_others_values)
{
	char *const envp[] = {"AI_PROXY_PORT=not-a-port", NULL};
	struct cfg c;

	load_ok(&c, envp, CFG_PW, NULL);
	ck_assert_int_eq(c.port, 0);
	cfg_free(&c);
	expect_reject(envp, CFG_GW, NULL, "AI_PROXY_PORT");
}
END_TEST

START_TEST(test_empty_secret_unset)
{
	char *const envp[] = {"CLAUDE_API_KEY=", NULL};
	struct cfg c;

	load_ok(&c, envp, CFG_PW, NULL);
	ck_assert_ptr_null(c.claude_api_key);
	cfg_free(&c);
}
END_TEST

START_TEST(test_per_ip_default)
{
	char *const env70[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=70", NULL};
	char *const env_explicit[] = {"AI_PROXY_RATE_LIMIT_PER_MINUTE=70",
	    "AI_PROXY_RATE_LIMIT_PER_IP_MINUTE=500", NULL};
	struct cfg c;

	load_ok(&c, no_env, CFG_GW, NULL);
	ck_assert_int_eq(c.rate_limit_per_ip_minute, 3 * 60);
	cfg_free(&c);
	load_ok(&c, env70, CFG_RL, NULL);
	ck_assert_int_eq(c.rate_limit_per_ip_minute, 3 * 70);
	cfg_free(&c);
	load_ok(&c, env_explicit, CFG_GW, NULL);
	ck_assert_int_eq(c.rate_limit_per_ip_minute, 500);
	cfg_free(&c);
}
END_TEST

START_TEST(test_default_max_tokens_capped)
{
	char *const envp[] = {"AI_PROXY_MAX_TOKENS=500", NULL};
	struct cfg c;

	load_ok(&c, no_env, CFG_GW, NULL);
	ck_assert_int_eq(c.default_max_tokens, 1024);
	cfg_free(&c);
	load_ok(&c, envp, CFG_GW, NULL);
	ck_assert_int_eq(c.default_max_tokens, 500);
	cfg_free(&c);
}
END_TEST

/* ---- freeing ---- */

START_TEST(test_free_leaves_nothing)
{
	char *path = uc_temp_file("AI_PROXY_JWT_SECRET=jwt-secret-from-file\n"
				  "DATABASE_URL=sqlite:///tmp/x.db\n");
	char *const envp[] = {"CLAUDE_API_KEY=sk-ant-0123456789",
	    "OPENAI_API_KEY=sk-0123456789", "AI_PROXY_ADMIN_KEY=admin-0123456",
	    "AI_PROXY_HOST=0.0.0.0", NULL};
	struct cfg c;

	load_ok(&c, envp, CFG_ALL, path);
	ck_assert_ptr_nonnull(c.jwt_secret);
	ck_assert_ptr_nonnull(c.claude_api_key);
	ck_assert_ptr_nonnull(c.database_url);
	cfg_free(&c);
	assert_strings_null(&c);
	/* Twice is harmless. */
	cfg_free(&c);
	unlink(path);
	free(path);
}
END_TEST

/* A failure late in the table frees what earlier variables allocated. */
START_TEST(test_free_after_failure)
{
	char *const envp[] = {
	    "CLAUDE_API_KEY=sk-ant-0123456789", "AI_PROXY_STATE_DIR=", NULL};

	expect_reject(envp, CFG_ALL, NULL, "AI_PROXY_STATE_DIR");
}
END_TEST

START_TEST(test_print_table)
{
	size_t n, len = 0;
	const struct cfg_var *v = cfg_vars(&n);
	char *out = NULL;
	FILE *f = open_memstream(&out, &len);

	ck_assert_ptr_nonnull(f);
	cfg_print_table(f);
	ck_assert_int_eq(fclose(f), 0);
	for (size_t i = 0; i < n; i++) {
		char want[128];

		snprintf(want, sizeof(want), "| `%s` |", v[i].name);
		ck_assert_msg(
		    uc_contains(out, len, want), "%s missing", v[i].name);
	}
	free(out);
}
END_TEST

Suite *
cfg_suite(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc;
	size_t nvars;

	cfg_vars(&nvars);
	tc = tcase_create("defaults");
	tcase_add_loop_test(
	    tc, test_default, 0, sizeof(defaults) / sizeof(defaults[0]));
	tcase_add_test(tc, test_default_secrets_unset);
	tcase_add_test(tc, test_table_sane);
	suite_add_tcase(s, tc);

	tc = tcase_create("types");
	tcase_add_loop_test(
	    tc, test_parse, 0, sizeof(parse_cases) / sizeof(parse_cases[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("bounds");
	tcase_add_loop_test(tc, test_bounds, 0, (int)nvars);
	suite_add_tcase(s, tc);

	tc = tcase_create("unknown");
	tcase_add_loop_test(tc, test_unknown, 0,
	    sizeof(unknown_cases) / sizeof(unknown_cases[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("env_file");
	tcase_add_test(tc, test_file_syntax);
	tcase_add_test(tc, test_file_env_wins);
	tcase_add_test(tc, test_file_unknown);
	tcase_add_test(tc, test_file_other_daemon);
	tcase_add_test(tc, test_file_bad_value);
	tcase_add_loop_test(tc, test_file_bad_line, 0,
	    sizeof(bad_lines) / sizeof(bad_lines[0]));
	tcase_add_test(tc, test_file_missing);
	suite_add_tcase(s, tc);

	tc = tcase_create("masks");
	tcase_add_test(tc, test_mask_gateway_no_provider_keys);
	tcase_add_test(tc, test_mask_ignores_others_values);
	tcase_add_test(tc, test_empty_secret_unset);
	tcase_add_test(tc, test_per_ip_default);
	tcase_add_test(tc, test_default_max_tokens_capped);
	suite_add_tcase(s, tc);

	tc = tcase_create("free");
	tcase_add_test(tc, test_free_leaves_nothing);
	tcase_add_test(tc, test_free_after_failure);
	tcase_add_test(tc, test_print_table);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(cfg_suite());
}
