#ifndef AIPROXY_CLOCK_H
#define AIPROXY_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic clock, for durations and deadlines. */
int64_t clock_mono_us(void);
int64_t clock_mono_ms(void);
/* Wall clock (UTC), for records. */
int64_t clock_real_ms(void);
int64_t clock_real_us(void);
/* "2026-11-26T23:04:05.123Z" into out (>= 25 bytes). */
void clock_fmt_iso8601(int64_t real_ms, char *out, size_t outlen);
/* "2026-11-26" (UTC day) into out (>= 11 bytes). */
void clock_fmt_day(int64_t real_ms, char *out, size_t outlen);

#endif
