/*
 * Bounded growable byte buffer.  Every buffer has a maximum; appending past
 * it fails with -EMSGSIZE and leaves the buffer unchanged.  The data is
 * always NUL-terminated (not counted in len).
 */
#ifndef AIPROXY_BUF_H
#define AIPROXY_BUF_H

#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max;
};

void buf_init(struct buf *b, size_t max);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
int buf_append_json_str(struct buf *b, const char *s, size_t n);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
/* Returns data (caller frees) and resets the buffer. */
char *buf_steal(struct buf *b, size_t *ret_len);
void buf_free(struct buf *b);

#endif
