/*
 * Structured logs: one JSON object per line on stderr,
 * {"ts":"...","level":"info","daemon":"gateway","request_id":"...","msg":"...",<fields>}.
 *
 * Never pass a key, token or Authorization header as a field.  As a second
 * line of defence, strings registered with log_add_secret() are replaced by
 * "[redacted]" wherever they would appear in a line.
 */
#ifndef AIPROXY_LOG_H
#define AIPROXY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_LVL_DEBUG,
	LOG_LVL_INFO,
	LOG_LVL_WARN,
	LOG_LVL_ERROR,
	LOG_LVL_MAX
};

enum log_field_kind { LOG_F_END, LOG_F_STR, LOG_F_INT, LOG_F_DBL, LOG_F_BOOL };

struct log_field {
	enum log_field_kind kind;
	const char *key;
	const char *s;
	long long i;
	double d;
};

#define LF_S(k, v) ((struct log_field){.kind = LOG_F_STR, .key = (k), .s = (v)})
#define LF_I(k, v)                                                             \
	((struct log_field){.kind = LOG_F_INT, .key = (k), .i = (long long)(v)})
#define LF_D(k, v)                                                             \
	((struct log_field){.kind = LOG_F_DBL, .key = (k), .d = (double)(v)})
#define LF_B(k, v)                                                             \
	((struct log_field){.kind = LOG_F_BOOL, .key = (k), .i = !!(v)})
#define LF_END ((struct log_field){.kind = LOG_F_END})

/* daemon is borrowed and must outlive logging (a string literal). */
void log_init(const char *daemon, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);
int log_level_parse(const char *s, enum log_level *ret);
const char *log_level_str(enum log_level level);
/* Copies s (length >= 8); every later line has it replaced. */
int log_add_secret(const char *s);
void log_clear_secrets(void);
/* Redirect output (tests); fd -1 restores stderr. */
void log_set_fd(int fd);

/* fields ends with LF_END; request_id may be NULL or "". */
void log_emit(enum log_level level, const char *request_id, const char *msg,
    const struct log_field *fields);
void log_emitf(enum log_level level, const char *request_id, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

#define log_debug(rid, msg, ...)                                               \
	log_emit(LOG_LVL_DEBUG, (rid), (msg),                                  \
	    (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ) LF_END})
#define log_info(rid, msg, ...)                                                \
	log_emit(LOG_LVL_INFO, (rid), (msg),                                   \
	    (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ) LF_END})
#define log_warn(rid, msg, ...)                                                \
	log_emit(LOG_LVL_WARN, (rid), (msg),                                   \
	    (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ) LF_END})
#define log_error(rid, msg, ...)                                               \
	log_emit(LOG_LVL_ERROR, (rid), (msg),                                  \
	    (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ) LF_END})

/* Start-up failures only: logs at error level and exits 1. */
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
