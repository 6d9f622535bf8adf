/*
 * Shared by the provider-worker unit tests: sample provider streams and
 * bodies, a seeded random generator, a path into the source tree.
 */
#ifndef PW_UNIT_H
#define PW_UNIT_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>

Suite *pw_sse_suite(void);
Suite *pw_usage_suite(void);
Suite *pw_map_suite(void);
Suite *pw_engine_suite(void);
Suite *pw_breaker_suite(void);
Suite *pw_xlate_suite(void);

/* Anthropic stream (reference layout, cache split, ping, cumulative
 * output): input 25, cache_read 7, cache writes 5m 3 / 1h 2, output 6. */
extern const char pw_claude_stream[];
/* OpenAI stream with include_usage: prompt 9 (4 cached), completion 2. */
extern const char pw_openai_stream[];

/* Runs s; returns the process exit status. */
int pw_unit_run(Suite *s);
/* xorshift64*: deterministic per seed. */
uint64_t pw_unit_rand(uint64_t *state);
/* $AIPROXY_SOURCE_DIR/rel.  Caller frees. */
char *pw_unit_source_path(const char *rel);
/* s with every "\n" replaced by eol.  Caller frees. */
char *pw_unit_eol(const char *s, const char *eol);

#endif
