/*
 * HS256 JSON Web Tokens (see jwt.h).  The MAC is OpenSSL's; base64url and
 * the checks are here.
 */
#include "jwt.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define JWT_MAC_LEN 32
#define JWT_HEADER  "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static const char jwt_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
jwt_b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decodes n base64url characters (no padding) into out (room for outlen);
 * refuses a length of 1 mod 4 and non-zero unused bits, so every byte
 * string has exactly one encoding.
 */
static int
jwt_b64_decode(
    const char *s, size_t n, unsigned char *out, size_t outlen, size_t *ret_len)
{
	uint32_t acc = 0;
	size_t i, o = 0;
	int bits = 0, v;

	if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > outlen)
		return -EBADMSG;
	for (i = 0; i < n; i++) {
		if ((v = jwt_b64_val((unsigned char)s[i])) < 0)
			return -EBADMSG;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0)
		return -EBADMSG;
	*ret_len = o;
	return 0;
}

/* Encodes n bytes into out (NUL-terminated); -ENOSPC if it does not fit. */
static int
jwt_b64_encode(const unsigned char *in, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0, need = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
	uint32_t acc = 0;
	int bits = 0;

	if (need + 1 > outlen)
		return -ENOSPC;
	for (i = 0; i < n; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = jwt_b64[(acc >> bits) & 63];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits > 0)
		out[o++] = jwt_b64[(acc << (6 - bits)) & 63];
	out[o] = '\0';
	return 0;
}

static int
jwt_mac(const void *key, size_t key_len, const char *data, size_t len,
    unsigned char mac[JWT_MAC_LEN])
{
	unsigned int mlen = 0;

	if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data,
		len, mac, &mlen) == NULL ||
	    mlen != JWT_MAC_LEN)
		return -EIO;
	return 0;
}

/* Decodes one part as a JSON object.  Caller decrefs *ret. */
static int
jwt_part_json(const char *s, size_t n, json_t **ret)
{
	unsigned char buf[JWT_TOKEN_MAX];
	json_error_t err;
	size_t len;
	json_t *j;

	if (jwt_b64_decode(s, n, buf, sizeof(buf), &len) != 0)
		return -EBADMSG;
	j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &err);
	if (j == NULL)
		return -EBADMSG;
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	*ret = j;
	return 0;
}

/* A NumericDate claim: absent (false), or a finite number into *ret. */
static int
jwt_date(json_t *payload, const char *name, bool *ret_present, double *ret)
{
	json_t *v = json_object_get(payload, name);

	*ret_present = v != NULL;
	if (v == NULL)
		return 0;
	if (!json_is_number(v) || !isfinite(json_number_value(v)))
		return -EBADMSG;
	*ret = json_number_value(v);
	return 0;
}

int
jwt_hs256_verify(const char *token, const void *key, size_t key_len,
    int64_t now_s, struct jwt_claims *ret)
{
	unsigned char mac[JWT_MAC_LEN], sig[JWT_MAC_LEN + 3];
	const char *dot1, *dot2, *alg, *typ, *sub;
	json_t *hdr = NULL, *payload = NULL, *v;
	struct jwt_claims c;
	size_t len, siglen, i;
	double exp = 0, nbf = 0, iat = 0;
	bool has_exp, has_nbf, has_iat;
	int rv;

	if (token == NULL || key == NULL || key_len == 0 || ret == NULL)
		return -EINVAL;
	len = strnlen(token, JWT_TOKEN_MAX + 1);
	if (len == 0 || len > JWT_TOKEN_MAX)
		return -EBADMSG;
	if ((dot1 = memchr(token, '.', len)) == NULL ||
	    (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) ==
		NULL ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
		return -EBADMSG;
	if (dot1 == token || dot2 == dot1 + 1)
		return -EBADMSG;
	/* The signature first: nothing unauthenticated is parsed beyond the
	 * header's algorithm. */
	if (jwt_b64_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig,
		sizeof(sig), &siglen) != 0)
		return -EBADMSG;
	if ((rv = jwt_part_json(token, (size_t)(dot1 - token), &hdr)) != 0)
		return rv;
	alg = json_string_value(json_object_get(hdr, "alg"));
	v = json_object_get(hdr, "typ");
	typ = json_string_value(v);
	if (alg == NULL || strcmp(alg, "HS256") != 0 ||
	    (v != NULL && (typ == NULL || strcmp(typ, "JWT") != 0)) ||
	    json_object_get(hdr, "crit") != NULL) {
		rv = -EPERM;
		goto out;
	}
	if ((rv = jwt_mac(key, key_len, token, (size_t)(dot2 - token), mac)) !=
	    0)
		goto out;
	if (siglen != JWT_MAC_LEN ||
	    CRYPTO_memcmp(mac, sig, JWT_MAC_LEN) != 0) {
		rv = -EPERM;
		goto out;
	}
	if ((rv = jwt_part_json(
		 dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload)) != 0)
		goto out;
	rv = -EBADMSG;
	sub = json_string_value(json_object_get(payload, "sub"));
	if (sub == NULL || sub[0] == '\0' ||
	    json_string_length(json_object_get(payload, "sub")) > JWT_SUB_MAX ||
	    strlen(sub) != json_string_length(json_object_get(payload, "sub")))
		goto out;
	for (i = 0; sub[i] != '\0'; i++)
		if ((unsigned char)sub[i] < 0x20 || sub[i] == 0x7f)
			goto out;
	if (jwt_date(payload, "exp", &has_exp, &exp) != 0 || !has_exp ||
	    jwt_date(payload, "nbf", &has_nbf, &nbf) != 0 ||
	    jwt_date(payload, "iat", &has_iat, &iat) != 0)
		goto out;
	if ((double)now_s >= exp || (has_nbf && (double)now_s < nbf)) {
		rv = -EKEYEXPIRED;
		goto out;
	}
	memset(&c, 0, sizeof(c));
	memcpy(c.sub, sub, strlen(sub) + 1);
	c.exp = exp >= 9.2e18 ? INT64_MAX : (int64_t)exp;
	c.iat = has_iat && iat > 0 && iat < 9.2e18 ? (int64_t)iat : 0;
	*ret = c;
	rv = 0;
out:
	json_decref(payload);
	json_decref(hdr);
	return rv;
}

int
jwt_hs256_sign(const char *payload_json, const void *key, size_t key_len,
    char *out, size_t outlen)
{
	unsigned char mac[JWT_MAC_LEN];
	size_t n;
	int rv;

	if (payload_json == NULL || key == NULL || key_len == 0 ||
	    out == NULL || outlen == 0)
		return -EINVAL;
	if ((rv = jwt_b64_encode((const unsigned char *)JWT_HEADER,
		 strlen(JWT_HEADER), out, outlen)) != 0)
		return rv;
	n = strlen(out);
	if (n + 2 > outlen)
		return -ENOSPC;
	out[n++] = '.';
	if ((rv = jwt_b64_encode((const unsigned char *)payload_json,
		 strlen(payload_json), out + n, outlen - n)) != 0)
		return rv;
	n += strlen(out + n);
	if ((rv = jwt_mac(key, key_len, out, n, mac)) != 0)
		return rv;
	if (n + 2 > outlen)
		return -ENOSPC;
	out[n++] = '.';
	return jwt_b64_encode(mac, sizeof(mac), out + n, outlen - n);
}
