/*
 * Incremental Server-Sent Events tokenizer, after the WHATWG rules the
 * providers' SDKs follow: lines end in "\r", "\n" or "\r\n" (a pair split
 * across two feeds still counts once); a blank line dispatches the event;
 * lines starting with ':' are comments; "field: value" loses one leading
 * space; several data lines are joined with '\n'; an event without data is
 * not dispatched; an unfinished event at the end of the stream is dropped.
 *
 * Bytes may arrive split at any point.  Everything is bounded: a line or an
 * event's data longer than max is skipped (the event is not dispatched).
 */
#ifndef PW_SSE_H
#define PW_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* event is "" when the event had no "event:" line.  Both strings are
 * NUL-terminated and borrowed for the duration of the call. */
typedef void (*pw_sse_event_fn)(
    void *arg, const char *event, const char *data, size_t data_len);

struct pw_sse {
	pw_sse_event_fn fn;
	void *arg;
	struct buf line;  /* the current, unfinished line */
	struct buf event; /* event name of the current event */
	struct buf data;  /* joined data lines of the current event */
	bool after_cr;    /* last byte was '\r': a following '\n' is eaten */
	bool line_skip;   /* current line too long: ignored to its end */
	bool event_skip;  /* current event too long: not dispatched */
	bool has_data;    /* a data line was seen in the current event */
	bool has_fields;  /* any field line was seen in the current event */
	size_t events;    /* events dispatched */
	size_t skipped;   /* events dropped for size */
};

void pw_sse_init(struct pw_sse *s, size_t max, pw_sse_event_fn fn, void *arg);
void pw_sse_feed(struct pw_sse *s, const char *p, size_t n);
/* True when the bytes fed so far end exactly at an event boundary (no
 * unfinished line, no fields waiting for their blank line). */
bool pw_sse_at_boundary(const struct pw_sse *s);
void pw_sse_free(struct pw_sse *s);

#endif
