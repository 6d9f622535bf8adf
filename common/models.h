/*
 * The model table: exact ids, aliases, provider and prices, loaded from one
 * JSON file (config/models.json).  Prices are kept as integer micro-USD
 * per million tokens, so costs are exact integer arithmetic.
 */
#ifndef AIPROXY_MODELS_H
#define AIPROXY_MODELS_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_ID_MAX 64

struct model {
	char id[MODEL_ID_MAX + 1];
	char provider[16]; /* "claude" or "openai" */
	int64_t created;   /* for /v1/models */
	/* micro-USD per 1M tokens */
	int64_t in;
	int64_t out;
	int64_t cache_write_5m;
	int64_t cache_write_1h;
	int64_t cache_read;
};

/* Tokens of one call, disjoint: input excludes cache reads and writes. */
struct model_usage {
	int64_t input;
	int64_t output;
	int64_t cache_read;
	int64_t cache_write_5m;
	int64_t cache_write_1h;
};

struct model_table;

/* Caller frees with models_free().  err names the problem. */
int models_load(
    const char *path, struct model_table **ret, char *err, size_t errlen);
void models_free(struct model_table *t);
/* By exact id or alias; NULL when unknown.  Borrowed from t. */
const struct model *models_lookup(
    const struct model_table *t, const char *name);
size_t models_count(const struct model_table *t);
const struct model *models_at(const struct model_table *t, size_t i);
/* i such that models_at(t, i) == m; models_count(t) when m is not t's. */
size_t models_index(const struct model_table *t, const struct model *m);
/* Cost in micro-USD, rounded up (never under-bills). */
int64_t models_cost(const struct model *m, const struct model_usage *u);
/* Worst case before the call: input_tokens at the input price plus
 * max_tokens at the output price, rounded up. */
int64_t models_worst_case(
    const struct model *m, int64_t input_tokens, int64_t max_tokens);

/*
 * The model of provider want that from fails over to under map
 * (AI_PROXY_FALLBACK_MODEL_MAP: "<model>=<model>,...", "*" for any
 * model): from's own entry (exact id or alias), else the first "*" entry
 * naming a model of want.  NULL when the map names none.
 */
const struct model *models_fallback(const struct model_table *t,
    const char *map, const struct model *from, const char *want);

#endif
