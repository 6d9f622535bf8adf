#include "ids.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"

/* Crockford base32: sortable, no ambiguous letters. */
static const char id_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int
id_random(void *buf, size_t n)
{
	size_t off = 0;

	while (off < n) {
		ssize_t r = getrandom((char *)buf + off, n - off, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)r;
	}
	return 0;
}

void
id_new(const char *prefix, char *out, size_t outlen)
{
	uint64_t ms = (uint64_t)clock_real_ms();
	unsigned char rnd[10];
	char body[27];
	size_t i;

	/* 48 bits of milliseconds (10 chars), 80 bits of random (16). */
	for (i = 0; i < 10; i++)
		body[i] = id_alphabet[(ms >> (45 - 5 * i)) & 31];
	if (id_random(rnd, sizeof(rnd)) != 0)
		memset(rnd, 0, sizeof(rnd));
	for (i = 0; i < 16; i++) {
		size_t bit = i * 5;
		unsigned v =
		    ((unsigned)rnd[bit / 8] << 8 |
			(bit / 8 + 1 < sizeof(rnd) ? rnd[bit / 8 + 1] : 0)) >>
		    (11 - bit % 8);
		body[10 + i] = id_alphabet[v & 31];
	}
	body[26] = '\0';
	snprintf(out, outlen, "%s%s", prefix ? prefix : "", body);
}

bool
id_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return false;
	for (; s[n] != '\0'; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n >= ID_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '.' || c == '_' ||
			c == ':' || c == '-'))
			return false;
	}
	return n > 0;
}
