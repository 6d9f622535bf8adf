#include "models.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MODELS_MAX  512
#define ALIASES_MAX 2048

struct model_alias {
	char name[MODEL_ID_MAX + 1];
	size_t index;
};

struct model_table {
	struct model *models;
	size_t n;
	struct model_alias *aliases;
	size_t naliases;
};

static int models_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
models_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* USD per 1M tokens -> micro-USD per 1M tokens. */
static int
price_get(json_t *o, const char *key, bool required, int64_t *ret)
{
	json_t *v = json_object_get(o, key);
	double d;

	if (v == NULL || json_is_null(v)) {
		if (required)
			return -EINVAL;
		*ret = -1;
		return 0;
	}
	if (!json_is_number(v))
		return -EINVAL;
	d = json_number_value(v);
	if (!isfinite(d) || d < 0 || d > 1e6)
		return -EINVAL;
	*ret = llround(d * 1e6);
	return 0;
}

static bool
name_taken(const struct model_table *t, const char *name)
{
	return models_lookup(t, name) != NULL;
}

int
models_load(
    const char *path, struct model_table **ret, char *err, size_t errlen)
{
	struct model_table *t;
	json_error_t jerr;
	json_t *root, *arr, *o;
	size_t i;
	int rv = 0;

	if ((root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)) ==
	    NULL)
		return models_err(
		    err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
	arr = json_object_get(root, "models");
	if (!json_is_array(arr) || json_array_size(arr) == 0 ||
	    json_array_size(arr) > MODELS_MAX) {
		json_decref(root);
		return models_err(err, errlen,
		    "%s: \"models\" must be a non-empty array", path);
	}
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->models = calloc(json_array_size(arr), sizeof(*t->models))) ==
		NULL ||
	    (t->aliases = calloc(ALIASES_MAX, sizeof(*t->aliases))) == NULL) {
		models_free(t);
		json_decref(root);
		return -ENOMEM;
	}
	json_array_foreach(arr, i, o) {
		struct model *m = &t->models[t->n];
		const char *id, *prov;
		json_t *al, *a;
		size_t j;

		id = json_string_value(json_object_get(o, "id"));
		prov = json_string_value(json_object_get(o, "provider"));
		if (id == NULL || strlen(id) == 0 ||
		    strlen(id) > MODEL_ID_MAX || prov == NULL ||
		    (strcmp(prov, "claude") != 0 &&
			strcmp(prov, "openai") != 0)) {
			rv = models_err(err, errlen,
			    "%s: model #%zu: bad id or provider", path, i);
			goto out;
		}
		if (name_taken(t, id)) {
			rv = models_err(
			    err, errlen, "%s: %s listed twice", path, id);
			goto out;
		}
		snprintf(m->id, sizeof(m->id), "%s", id);
		snprintf(m->provider, sizeof(m->provider), "%s", prov);
		m->created = json_integer_value(json_object_get(o, "created"));
		if (price_get(o, "input", true, &m->in) != 0 ||
		    price_get(o, "output", true, &m->out) != 0 ||
		    price_get(o, "cache_write_5m", false, &m->cache_write_5m) !=
			0 ||
		    price_get(o, "cache_write_1h", false, &m->cache_write_1h) !=
			0 ||
		    price_get(o, "cache_read", false, &m->cache_read) != 0) {
			rv = models_err(err, errlen,
			    "%s: %s: prices must be numbers >= 0 (USD per 1M "
			    "tokens)",
			    path, id);
			goto out;
		}
		/* Unknown cache prices bill at the input price. */
		if (m->cache_write_5m < 0)
			m->cache_write_5m = m->in;
		if (m->cache_write_1h < 0)
			m->cache_write_1h = m->cache_write_5m;
		if (m->cache_read < 0)
			m->cache_read = m->in;
		t->n++;
		al = json_object_get(o, "aliases");
		if (al != NULL && !json_is_array(al)) {
			rv = models_err(err, errlen,
			    "%s: %s: aliases must be an array", path, id);
			goto out;
		}
		json_array_foreach(al, j, a) {
			const char *name = json_string_value(a);

			if (name == NULL || strlen(name) == 0 ||
			    strlen(name) > MODEL_ID_MAX ||
			    t->naliases == ALIASES_MAX || name_taken(t, name)) {
				rv = models_err(err, errlen,
				    "%s: %s: bad or duplicate alias", path, id);
				goto out;
			}
			snprintf(t->aliases[t->naliases].name,
			    sizeof(t->aliases[0].name), "%s", name);
			t->aliases[t->naliases].index = t->n - 1;
			t->naliases++;
		}
	}
out:
	json_decref(root);
	if (rv != 0) {
		models_free(t);
		return rv;
	}
	*ret = t;
	return 0;
}

void
models_free(struct model_table *t)
{
	if (t == NULL)
		return;
	free(t->models);
	free(t->aliases);
	free(t);
}

const struct model *
models_lookup(const struct model_table *t, const char *name)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (strcmp(t->models[i].id, name) == 0)
			return &t->models[i];
	for (i = 0; i < t->naliases; i++)
		if (strcmp(t->aliases[i].name, name) == 0)
			return &t->models[t->aliases[i].index];
	return NULL;
}

size_t
models_count(const struct model_table *t)
{
	return t->n;
}

const struct model *
models_at(const struct model_table *t, size_t i)
{
	return i < t->n ? &t->models[i] : NULL;
}

size_t
models_index(const struct model_table *t, const struct model *m)
{
	for (size_t i = 0; i < t->n; i++)
		if (&t->models[i] == m)
			return i;
	return t->n;
}

/* Sum of tokens x price (pico-USD), then up to micro-USD.  Token counts
 * are bounded (<= 1e9) and prices (<= 1e12), so __int128 never wraps. */
static int64_t
pico_to_micro_ceil(__int128 pico)
{
	return (int64_t)((pico + 999999) / 1000000);
}

int64_t
models_cost(const struct model *m, const struct model_usage *u)
{
	__int128 pico = 0;

	pico += (__int128)u->input * m->in;
	pico += (__int128)u->output * m->out;
	pico += (__int128)u->cache_read * m->cache_read;
	pico += (__int128)u->cache_write_5m * m->cache_write_5m;
	pico += (__int128)u->cache_write_1h * m->cache_write_1h;
	return pico_to_micro_ceil(pico);
}

int64_t
models_worst_case(
    const struct model *m, int64_t input_tokens, int64_t max_tokens)
{
	int64_t in = m->in;

	/* Input tokens may turn out to be cache writes, dearer than plain
	 * input: reserve at the dearest input price. */
	if (m->cache_write_5m > in)
		in = m->cache_write_5m;
	if (m->cache_write_1h > in)
		in = m->cache_write_1h;
	return pico_to_micro_ceil(
	    (__int128)input_tokens * in + (__int128)max_tokens * m->out);
}

const struct model *
models_fallback(const struct model_table *t, const char *map,
    const struct model *from, const char *want)
{
	const struct model *any = NULL, *k, *v;
	char key[MODEL_ID_MAX + 1], val[MODEL_ID_MAX + 1];

	for (const char *p = map; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, ","), kl = strcspn(p, "=");

		if (kl < n && kl <= MODEL_ID_MAX &&
		    n - kl - 1 <= MODEL_ID_MAX) {
			memcpy(key, p, kl);
			key[kl] = '\0';
			memcpy(val, p + kl + 1, n - kl - 1);
			val[n - kl - 1] = '\0';
			v = models_lookup(t, val);
			if (v != NULL && strcmp(v->provider, want) == 0) {
				if (strcmp(key, "*") == 0) {
					if (any == NULL)
						any = v;
				} else if ((k = models_lookup(t, key)) ==
					   from) {
					return v;
				}
			}
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return any;
}
