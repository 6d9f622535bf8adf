/*
 * Shared mock state: the request log (memory + optional JSON-lines file),
 * the /_mock/config default fault, fail-first counters and logging.
 * Every piece has its own mutex; MHD runs a thread pool.
 */
#include "mock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct failfirst_slot {
	char key[MOCK_KEY_MAX];
	long n;
};

static struct {
	pthread_mutex_t mu; /* log, file, config, fail-first */
	json_t *log;        /* array of entries */
	FILE *file;
	unsigned long long seq;
	char config_spec[MOCK_SPEC_MAX];
	long config_count;
	struct failfirst_slot *ff;
	size_t ff_n;
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

const char *
mock_prov_str(enum mock_prov prov)
{
	return prov == MOCK_PROV_ANTHROPIC ? "anthropic" : "openai";
}

long long
mock_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long
mock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
mock_log(const char *level, const char *msg, json_t *fields)
{
	char ts[40];
	struct timespec now;
	struct tm tm;
	json_t *o;
	char *line;
	size_t len;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	o = json_object();
	if (o == NULL) {
		json_decref(fields);
		return;
	}
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "ms", json_integer(now.tv_nsec / 1000000));
	json_object_set_new(o, "level", json_string(level));
	json_object_set_new(o, "daemon", json_string("mock-upstream"));
	json_object_set_new(o, "msg", json_string(msg));
	if (fields != NULL) {
		json_object_update(o, fields);
		json_decref(fields);
	}
	line = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (line == NULL)
		return;
	len = strlen(line);
	pthread_mutex_lock(&log_mu);
	if (write(STDERR_FILENO, line, len) < 0 ||
	    write(STDERR_FILENO, "\n", 1) < 0) {
		/* nowhere left to report it */
	}
	pthread_mutex_unlock(&log_mu);
	free(line);
}

int
mock_state_init(const char *reqlog_path)
{
	st.log = json_array();
	st.ff = calloc(MOCK_FAILFIRST_MAX, sizeof(*st.ff));
	if (st.log == NULL || st.ff == NULL)
		goto fail;
	if (reqlog_path != NULL) {
		st.file = fopen(reqlog_path, "ae");
		if (st.file == NULL) {
			int e = errno;

			mock_log("error", "cannot open request log",
			    json_pack("{s:s,s:s}", "path", reqlog_path, "error",
				strerror(e)));
			json_decref(st.log);
			free(st.ff);
			return -e;
		}
	}
	return 0;
fail:
	json_decref(st.log);
	free(st.ff);
	return -ENOMEM;
}

void
mock_state_free(void)
{
	json_decref(st.log);
	st.log = NULL;
	if (st.file != NULL)
		fclose(st.file);
	st.file = NULL;
	free(st.ff);
	st.ff = NULL;
}

unsigned long long
mock_reqlog_next_seq(void)
{
	unsigned long long n;

	pthread_mutex_lock(&st.mu);
	n = ++st.seq;
	pthread_mutex_unlock(&st.mu);
	return n;
}

void
mock_reqlog_add(json_t *entry)
{
	pthread_mutex_lock(&st.mu);
	if (json_array_size(st.log) < MOCK_REQLOG_MAX)
		json_array_append(st.log, entry);
	pthread_mutex_unlock(&st.mu);
}

void
mock_reqlog_mark(json_t *entry, const char *outcome)
{
	pthread_mutex_lock(&st.mu);
	json_object_set_new(entry, "outcome", json_string(outcome));
	pthread_mutex_unlock(&st.mu);
}

void
mock_reqlog_finish(json_t *entry, const char *outcome)
{
	char *line = NULL;

	pthread_mutex_lock(&st.mu);
	json_object_set_new(entry, "outcome", json_string(outcome));
	if (st.file != NULL) {
		line = json_dumps(entry, JSON_COMPACT);
		if (line != NULL) {
			fputs(line, st.file);
			fputc('\n', st.file);
			fflush(st.file);
		}
	}
	pthread_mutex_unlock(&st.mu);
	free(line);
}

char *
mock_reqlog_dump(void)
{
	char *s;

	pthread_mutex_lock(&st.mu);
	s = json_dumps(st.log, JSON_COMPACT);
	pthread_mutex_unlock(&st.mu);
	return s;
}

void
mock_reqlog_clear(void)
{
	pthread_mutex_lock(&st.mu);
	json_array_clear(st.log);
	pthread_mutex_unlock(&st.mu);
}

bool
mock_config_take(char *out, size_t outlen)
{
	bool found = false;

	pthread_mutex_lock(&st.mu);
	if (st.config_spec[0] != '\0' && st.config_count != 0) {
		snprintf(out, outlen, "%s", st.config_spec);
		if (st.config_count > 0 && --st.config_count == 0)
			st.config_spec[0] = '\0';
		found = true;
	}
	pthread_mutex_unlock(&st.mu);
	return found;
}

int
mock_config_set(const char *spec, long count)
{
	if (strlen(spec) >= sizeof(st.config_spec))
		return -E2BIG;
	pthread_mutex_lock(&st.mu);
	snprintf(st.config_spec, sizeof(st.config_spec), "%s", spec);
	st.config_count = spec[0] != '\0' ? count : 0;
	pthread_mutex_unlock(&st.mu);
	return 0;
}

long
mock_failfirst_hit(const char *key)
{
	long n = 0;
	size_t i;

	pthread_mutex_lock(&st.mu);
	for (i = 0; i < st.ff_n; i++) {
		if (strcmp(st.ff[i].key, key) == 0) {
			n = ++st.ff[i].n;
			goto out;
		}
	}
	if (st.ff_n < MOCK_FAILFIRST_MAX) {
		snprintf(
		    st.ff[st.ff_n].key, sizeof(st.ff[st.ff_n].key), "%s", key);
		n = st.ff[st.ff_n].n = 1;
		st.ff_n++;
	} else {
		n = 1; /* table full: every request counts as a first */
	}
out:
	pthread_mutex_unlock(&st.mu);
	return n;
}
