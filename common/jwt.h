/*
 * User tokens: JSON Web Tokens signed with HMAC-SHA256 (HS256) under
 * AI_PROXY_JWT_SECRET.  Verification is strict:
 *
 *   - three base64url parts (no padding, no other characters), at most
 *     JWT_TOKEN_MAX bytes in all;
 *   - the header is a JSON object whose "alg" is exactly "HS256" ("none"
 *     and every other algorithm are refused), "typ", if present, is "JWT",
 *     and there is no "crit";
 *   - the signature is HMAC-SHA256(secret, header "." payload), compared in
 *     constant time;
 *   - the payload is a JSON object with "sub" (a string, 1..JWT_SUB_MAX
 *     bytes, no control characters) and "exp" (a NumericDate, integer or
 *     not): refused when now >= exp; "nbf", if present, refused when
 *     now < nbf.  No leeway.
 *
 * Errors: -EINVAL (bad arguments, empty secret), -EBADMSG (not a
 * well-formed token), -EPERM (wrong algorithm or signature), -EKEYEXPIRED
 * (expired or not yet valid).  The gateway answers all of them with 401.
 */
#ifndef AIPROXY_JWT_H
#define AIPROXY_JWT_H

#include <stddef.h>
#include <stdint.h>

#define JWT_TOKEN_MAX 4096
#define JWT_SUB_MAX   128 /* = PROTO_SUBJECT_MAX */

struct jwt_claims {
	char sub[JWT_SUB_MAX + 1];
	int64_t exp; /* seconds since the epoch */
	int64_t iat; /* 0 when absent */
};

/* Verifies token (NUL-terminated) at now_s; *ret written only on success. */
int jwt_hs256_verify(const char *token, const void *key, size_t key_len,
    int64_t now_s, struct jwt_claims *ret);

/*
 * Signs payload_json (a JSON object, used as is) with the header
 * {"alg":"HS256","typ":"JWT"} into out.  For tests and tools.  -ENOSPC
 * when out is too small.
 */
int jwt_hs256_sign(const char *payload_json, const void *key, size_t key_len,
    char *out, size_t outlen);

#endif
