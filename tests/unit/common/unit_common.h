/*
 * Shared by the unit tests of common/: the suites (one runner per module)
 * and a few helpers for temporary files and paths.
 */
#ifndef AIPROXY_UNIT_COMMON_H
#define AIPROXY_UNIT_COMMON_H

#include <stddef.h>

#include <check.h>

Suite *cfg_suite(void);
Suite *log_suite(void);
Suite *buf_suite(void);
Suite *models_suite(void);
Suite *ids_suite(void);
Suite *jsonx_suite(void);
Suite *nngx_suite(void);

/* Runs s with the usual reporting; returns the process exit status. */
int uc_run(Suite *s);
/* Writes content to a new temporary file.  Caller unlinks and frees the
 * returned path.  Aborts the test on failure. */
char *uc_temp_file(const char *content);
/* $AIPROXY_SOURCE_DIR/rel (or the configured source dir).  Caller frees. */
char *uc_source_path(const char *rel);
/* Whether needle occurs in the n bytes at hay. */
int uc_contains(const char *hay, size_t n, const char *needle);

#endif
