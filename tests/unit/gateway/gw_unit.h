/*
 * Shared by the gateway unit tests: the suites (one runner per module)
 * and the model table the validator tests use.
 */
#ifndef AIPROXY_GW_UNIT_H
#define AIPROXY_GW_UNIT_H

#include <check.h>

#include "models.h"

Suite *gw_validate_suite(void);
Suite *gw_resp_suite(void);
Suite *gw_cors_suite(void);
Suite *gw_route_suite(void);

/* Runs s; returns the process exit status. */
int gw_unit_run(Suite *s);
/* config/models.json of the source tree (aborts the test on failure).
 * Caller frees with models_free(). */
struct model_table *gw_unit_models(void);

#endif
