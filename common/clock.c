#include "clock.h"

#include <stdio.h>
#include <time.h>

static int64_t
clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
clock_mono_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

int64_t
clock_mono_ms(void)
{
	return clock_us(CLOCK_MONOTONIC) / 1000;
}

int64_t
clock_real_us(void)
{
	return clock_us(CLOCK_REALTIME);
}

int64_t
clock_real_ms(void)
{
	return clock_us(CLOCK_REALTIME) / 1000;
}

void
clock_fmt_iso8601(int64_t real_ms, char *out, size_t outlen)
{
	time_t t = (time_t)(real_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, (int)(real_ms % 1000));
}

void
clock_fmt_day(int64_t real_ms, char *out, size_t outlen)
{
	time_t t = (time_t)(real_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, outlen, "%04d-%02d-%02d", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday);
}
