#ifndef AIPROXY_IDS_H
#define AIPROXY_IDS_H

#include <stdbool.h>
#include <stddef.h>

#define ID_MAX 64

/* A new random id "<prefix><26 chars>" (time-ordered prefix + random),
 * e.g. "req_01JD...".  out must hold ID_MAX + 1 bytes. */
void id_new(const char *prefix, char *out, size_t outlen);
/* A client-supplied id is well formed: 1..64 chars of [A-Za-z0-9._:-]. */
bool id_valid(const char *s);
/* Fills buf with n random bytes (getrandom). */
int id_random(void *buf, size_t n);

#endif
