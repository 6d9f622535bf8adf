/*
 * pw_breaker: the circuit breaker state machine on a fake clock; pw_health:
 * the worker's breakers behind their lock, and the stats snapshot.
 */
#include <check.h>
#include <stdlib.h>

#include "pw_breaker.h"
#include "pw_health.h"
#include "pw_unit.h"

#define T0 1700000000000LL /* a wall-clock ms value */

static struct pw_breaker B;

static void
setup_b(int64_t threshold, double rate, int64_t min_volume)
{
	struct pw_breaker_cfg c = {threshold, rate, min_volume, 30000};

	pw_breaker_init(&B, &c);
}

static void
fail_n(int64_t now, int n)
{
	for (int i = 0; i < n; i++)
		pw_breaker_record(&B, now, false, true, 10);
}

START_TEST(test_consecutive_opens)
{
	int64_t retry = 0;

	setup_b(5, 0.5, 20);
	fail_n(T0, 4);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
	ck_assert_int_eq(pw_breaker_admit(&B, T0, &retry), PW_BREAKER_ALLOW);
	ck_assert(pw_breaker_record(&B, T0, false, true, 10));
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_OPEN);
	ck_assert_int_eq(B.consecutive, 5);
	ck_assert_str_eq(B.reason, "consecutive_failures");
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 1, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(retry, 30000);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 29500, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(retry, 1000);
}
END_TEST

START_TEST(test_success_resets_consecutive)
{
	setup_b(3, 1.0, 1000);
	fail_n(T0, 2);
	ck_assert(!pw_breaker_record(&B, T0, false, false, 10));
	fail_n(T0, 2);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
	ck_assert_int_eq(B.consecutive, 2);
	ck_assert_int_eq(B.last_success_ms, T0);
}
END_TEST

START_TEST(test_rate_needs_volume)
{
	struct pw_breaker_window w;

	setup_b(1000, 0.5, 20);
	/* 9 failures, 9 successes interleaved: 50 % is not above 50 %. */
	for (int i = 0; i < 9; i++) {
		pw_breaker_record(&B, T0 + i * 1000, false, true, 10);
		pw_breaker_record(&B, T0 + i * 1000, false, false, 10);
	}
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 9000), PW_BREAKER_CLOSED);
	/* 19 attempts, 10 failures: over the rate but under the volume. */
	pw_breaker_record(&B, T0 + 9000, false, true, 10);
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 9000), PW_BREAKER_CLOSED);
	/* The 20th, a failure: 11/20 > 0.5 at the minimum volume. */
	ck_assert(pw_breaker_record(&B, T0 + 9500, false, true, 10));
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 9500), PW_BREAKER_OPEN);
	ck_assert_str_eq(B.reason, "failure_rate");
	pw_breaker_window(&B, T0 + 9500, &w);
	ck_assert_int_eq(w.total, 20);
	ck_assert_int_eq(w.failures, 11);
}
END_TEST

START_TEST(test_window_slides)
{
	struct pw_breaker_window w;

	setup_b(1000, 0.5, 10);
	fail_n(T0, 9);
	/* A minute later the old failures are gone. */
	pw_breaker_record(&B, T0 + 61000, false, true, 10);
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 61000), PW_BREAKER_CLOSED);
	pw_breaker_window(&B, T0 + 61000, &w);
	ck_assert_int_eq(w.total, 1);
	pw_breaker_window(&B, T0 + 59999, &w);
	ck_assert_int_eq(w.total, 9);
}
END_TEST

START_TEST(test_half_open_one_probe)
{
	int64_t retry;

	setup_b(1, 0.5, 20);
	fail_n(T0, 1);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 29999, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 30000, &retry), PW_BREAKER_PROBE);
	ck_assert_int_eq(B.state, PW_BREAKER_HALF_OPEN);
	for (int i = 0; i < 50; i++)
		ck_assert_int_eq(pw_breaker_admit(&B, T0 + 30001 + i, &retry),
		    PW_BREAKER_REJECT);
	/* A non-probe result (a call admitted before) changes nothing. */
	ck_assert(!pw_breaker_record(&B, T0 + 30100, false, false, 10));
	ck_assert_int_eq(B.state, PW_BREAKER_HALF_OPEN);
	ck_assert(pw_breaker_record(&B, T0 + 30200, true, false, 10));
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 30200), PW_BREAKER_CLOSED);
	ck_assert_int_eq(B.consecutive, 0);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 30201, &retry), PW_BREAKER_ALLOW);
}
END_TEST

START_TEST(test_probe_failure_reopens)
{
	int64_t retry;

	setup_b(1, 0.5, 20);
	fail_n(T0, 1);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 30000, &retry), PW_BREAKER_PROBE);
	ck_assert(pw_breaker_record(&B, T0 + 30500, true, true, 10));
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 30500), PW_BREAKER_OPEN);
	ck_assert_str_eq(B.reason, "probe_failed");
	ck_assert_int_eq(B.open_until_ms, T0 + 60500);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 60000, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 60500, &retry), PW_BREAKER_PROBE);
	/* A probe that ends without a verdict lets another go. */
	pw_breaker_release(&B);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 60501, &retry), PW_BREAKER_PROBE);
}
END_TEST

START_TEST(test_client_errors_are_successes)
{
	/* The caller maps 4xx to failure=false: five of them never trip. */
	setup_b(5, 0.5, 1);
	for (int i = 0; i < 5; i++)
		pw_breaker_record(&B, T0, false, false, 10);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
}
END_TEST

START_TEST(test_peer_open_waits_for_verdict)
{
	int64_t retry;

	setup_b(5, 0.5, 20);
	ck_assert(pw_breaker_peer_open(&B, T0, T0 + 30000));
	ck_assert_int_eq(pw_breaker_admit(&B, T0, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(retry, 30000);
	/* Past open_until the peer probes, not us. */
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 31000, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(retry, 1000);
	/* The peer's probe succeeded. */
	ck_assert(pw_breaker_peer_closed(&B, T0 + 31000));
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 31001, &retry), PW_BREAKER_ALLOW);
	/* A silent peer: after another recovery period we probe. */
	ck_assert(pw_breaker_peer_open(&B, T0 + 40000, T0 + 70000));
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 99999, &retry), PW_BREAKER_REJECT);
	ck_assert_int_eq(
	    pw_breaker_admit(&B, T0 + 100000, &retry), PW_BREAKER_PROBE);
}
END_TEST

START_TEST(test_peer_open_own_and_stale)
{
	setup_b(1, 0.5, 20);
	/* An open that already ended is ignored. */
	ck_assert(!pw_breaker_peer_open(&B, T0, T0 - 1));
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
	fail_n(T0, 1);
	/* Our own trip stays ours (we probe), extended to the peer's end. */
	ck_assert(!pw_breaker_peer_open(&B, T0, T0 + 40000));
	ck_assert(!B.peer_held);
	ck_assert_int_eq(B.open_until_ms, T0 + 40000);
	/* A peer's close does not close our own trip. */
	ck_assert(!pw_breaker_peer_closed(&B, T0 + 1000));
	ck_assert_int_eq(pw_breaker_state(&B, T0 + 1000), PW_BREAKER_OPEN);
}
END_TEST

START_TEST(test_reset)
{
	int64_t retry;

	setup_b(2, 0.5, 20);
	fail_n(T0, 2);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_OPEN);
	pw_breaker_reset(&B);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
	ck_assert_int_eq(B.consecutive, 0);
	ck_assert_int_eq(pw_breaker_admit(&B, T0, &retry), PW_BREAKER_ALLOW);
	/* One more failure does not reopen it: the count was cleared. */
	fail_n(T0, 1);
	ck_assert_int_eq(pw_breaker_state(&B, T0), PW_BREAKER_CLOSED);
}
END_TEST

START_TEST(test_latency_and_requests)
{
	struct pw_breaker_window w;

	setup_b(5, 0.5, 20);
	pw_breaker_record(&B, T0, false, false, 3);
	pw_breaker_record(&B, T0, false, false, 300);
	pw_breaker_record(&B, T0, false, false, 1000000);
	pw_breaker_count_request(&B, T0);
	pw_breaker_count_request(&B, T0 + 1000);
	pw_breaker_window(&B, T0 + 1000, &w);
	ck_assert_int_eq(w.requests, 2);
	ck_assert_int_eq(w.lat[0], 1);
	ck_assert_int_eq(w.lat[pw_lat_bucket(300)], 1);
	ck_assert_int_eq(w.lat[PW_LAT_BUCKETS - 1], 1);
	ck_assert_int_eq(pw_lat_bucket(5), 0);
	ck_assert_int_eq(pw_lat_bucket(6), 1);
	ck_assert_str_eq(
	    pw_breaker_state_str(PW_BREAKER_HALF_OPEN), "half_open");
	ck_assert_int_eq(pw_breaker_state_from_str("open"), PW_BREAKER_OPEN);
	ck_assert_int_eq(pw_breaker_state_from_str("x"), PW_BREAKER_STATE_MAX);
}
END_TEST

/* ---- pw_health: the worker's breakers and their snapshot ---- */

static int changes;
static enum pw_breaker_state last_state;

static void
on_change(void *arg, int target, enum pw_breaker_state st, int64_t until,
    const char *reason)
{
	(void)arg;
	(void)until;
	(void)reason;
	ck_assert_int_eq(target, PW_TARGET(PW_PROV_CLAUDE, PW_SLOT_PRIMARY));
	changes++;
	last_state = st;
}

START_TEST(test_health_snapshot)
{
	struct pw_breaker_cfg cfg = {2, 0.5, 20, 30000};
	bool conf[PW_TARGETS] = {false};
	int pt = PW_TARGET(PW_PROV_CLAUDE, PW_SLOT_PRIMARY);
	int ft = PW_TARGET(PW_PROV_CLAUDE, PW_SLOT_FALLBACK);
	struct pw_health h;
	int64_t retry = 0;
	json_t *j, *c;

	conf[pt] = conf[ft] = true;
	changes = 0;
	pw_health_init(&h, &cfg, conf, on_change, NULL);
	ck_assert(pw_health_configured(&h, ft));
	ck_assert(!pw_health_configured(
	    &h, PW_TARGET(PW_PROV_OPENAI, PW_SLOT_PRIMARY)));
	for (int i = 0; i < 2; i++) {
		pw_health_count_request(&h, pt, T0);
		ck_assert_int_eq(
		    pw_health_admit(&h, pt, T0, &retry), PW_BREAKER_ALLOW);
		pw_health_done(&h, pt, T0, false, true, true, 40, 503,
		    "upstream_unavailable", "overloaded");
	}
	ck_assert_int_eq(changes, 1);
	ck_assert_int_eq(last_state, PW_BREAKER_OPEN);
	ck_assert(pw_health_refuses(&h, pt, T0 + 1, &retry));
	ck_assert_int_eq(retry, 30000);
	ck_assert(!pw_health_refuses(&h, ft, T0 + 1, NULL));
	j = pw_health_snapshot(&h, T0 + 1);
	c = json_object_get(json_object_get(j, "providers"), "claude");
	ck_assert_str_eq(
	    json_string_value(json_object_get(c, "state")), "open");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(c, "consecutive_failures")), 2);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(c, "requests_last_minute")), 2);
	ck_assert_int_eq(json_integer_value(json_array_get(
			     json_object_get(c, "latency_buckets"), 3)),
	    2);
	ck_assert_str_eq(json_string_value(json_object_get(
			     json_object_get(c, "last_error"), "code")),
	    "upstream_unavailable");
	ck_assert_str_eq(json_string_value(json_object_get(
			     json_object_get(c, "fallback"), "state")),
	    "closed");
	ck_assert_ptr_null(
	    json_object_get(json_object_get(j, "providers"), "openai"));
	json_decref(j);
	/* A peer's open does not call back (it is not ours to relay). */
	pw_health_peer(&h, ft, PW_BREAKER_OPEN, T0 + 5000, T0);
	ck_assert_int_eq(changes, 1);
	ck_assert(pw_health_refuses(&h, ft, T0 + 1, NULL));
	pw_health_reset(&h, PW_PROV_CLAUDE, T0 + 2);
	ck_assert(!pw_health_refuses(&h, pt, T0 + 2, NULL));
	ck_assert(!pw_health_refuses(&h, ft, T0 + 2, NULL));
	pw_health_destroy(&h);
}
END_TEST

Suite *
pw_breaker_suite(void)
{
	Suite *s = suite_create("pw_breaker");
	TCase *tc = tcase_create("state");
	TCase *th = tcase_create("health");

	tcase_add_test(tc, test_consecutive_opens);
	tcase_add_test(tc, test_success_resets_consecutive);
	tcase_add_test(tc, test_rate_needs_volume);
	tcase_add_test(tc, test_window_slides);
	tcase_add_test(tc, test_half_open_one_probe);
	tcase_add_test(tc, test_probe_failure_reopens);
	tcase_add_test(tc, test_client_errors_are_successes);
	tcase_add_test(tc, test_peer_open_waits_for_verdict);
	tcase_add_test(tc, test_peer_open_own_and_stale);
	tcase_add_test(tc, test_reset);
	tcase_add_test(tc, test_latency_and_requests);
	suite_add_tcase(s, tc);
	tcase_add_test(th, test_health_snapshot);
	suite_add_tcase(s, th);
	return s;
}

int
main(void)
{
	return pw_unit_run(pw_breaker_suite());
}
