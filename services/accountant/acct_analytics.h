/*
 * Analytics: from an analytics_req to the query, and from the report to
 * the JSON document of the analytics_resp payload:
 *
 *   {"days":7, "from":"2026-11-20", "to":"2026-11-26",
 *    "provider":"claude"|null, "subject":{"type":"user","id":"u1"}|null,
 *    "totals":{<counters>},
 *    "series":[{"day":"2026-11-20", <counters>}, ... one per day]}
 *
 * <counters>: requests, errors, cached, input_tokens, output_tokens,
 * cache_read_tokens, cache_write_tokens, cost_micro_usd (integers),
 * cost_usd (cost_micro_usd / 1e6), cache_hit_ratio (cached / requests:
 * answers from the response cache), error_rate (status "error" /
 * requests), p50_latency_ms and p95_latency_ms (total latency, nearest
 * rank).  Ratios and latencies are 0 for a day without requests.  Days are
 * UTC; the window is the last `days` days, today included.
 */
#ifndef AIPROXY_ACCT_ANALYTICS_H
#define AIPROXY_ACCT_ANALYTICS_H

#include <stddef.h>
#include <stdint.h>

#include "acct_db.h"
#include "proto.h"

/* Checks the request (provider "", "claude" or "openai"; a subject id
 * exactly when a subject type) and fills *ret for the window ending on
 * the UTC day of now_ms.  -EINVAL with a message in err. */
int acct_analytics_query(const struct msg_analytics_req *req, int64_t now_ms,
    struct acct_query *ret, char *err, size_t errlen);
/* The payload for r.  Caller frees *ret. */
int acct_analytics_json(const struct msg_analytics_req *req,
    const struct acct_query *q, const struct acct_report *r, int64_t now_ms,
    char **ret, size_t *ret_len);
/* {"error":code,"message":message}.  Caller frees *ret. */
int acct_analytics_error(
    const char *code, const char *message, char **ret, size_t *ret_len);

#endif
