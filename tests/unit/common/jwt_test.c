/*
 * jwt: HS256 verification against tokens made by an independent
 * implementation (Python's hmac, and the jwt.io example), every refusal
 * with its errno, expiry at the second, base64url strictness, and signing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "unit_common.h"

static Suite *jwt_suite(void);

#define KEY     "test-secret-0123456789"
#define KEY_LEN (sizeof(KEY) - 1)
#define NOW     1800000000LL

/* {"alg":"HS256","typ":"JWT"} . {"sub":"alice","exp":2000000000} */
#define TOK_ALICE                                                              \
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                \
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."                         \
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjieXrg"

struct jwt_case {
	const char *name;
	const char *token;
	int64_t now;
	int want;
	const char *sub; /* when want == 0 */
};

static const struct jwt_case cases[] = {
    {"valid", TOK_ALICE, NOW, 0, "alice"},
    {"valid, no typ, nbf and iat",
	"eyJhbGciOiJIUzI1NiJ9."
	"eyJzdWIiOiJib2IiLCJleHAiOjIwMDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0Ij"
	"oxNzAwMDAwMDAwfQ."
	"12bmswVzRzMno-TAOCvYREwWbeaxYym7Y_9zBwbysLw",
	NOW, 0, "bob"},
    {"valid until the second before exp", TOK_ALICE, 1999999999LL, 0, "alice"},
    {"expired at exp", TOK_ALICE, 2000000000LL, -EKEYEXPIRED, NULL},
    {"expired after exp", TOK_ALICE, 2000000001LL, -EKEYEXPIRED, NULL},
    {"not yet valid (nbf)",
	"eyJhbGciOiJIUzI1NiJ9."
	"eyJzdWIiOiJib2IiLCJleHAiOjIwMDAwMDAwMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0Ij"
	"oxNzAwMDAwMDAwfQ."
	"12bmswVzRzMno-TAOCvYREwWbeaxYym7Y_9zBwbysLw",
	1699999999LL, -EKEYEXPIRED, NULL},
    {"expired long ago",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0."
	"u51NSACYSjeD7_BPGFlet-Dx3ge0aMlNEVoli0rP50E",
	NOW, -EKEYEXPIRED, NULL},
    {"fractional exp",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMC41fQ."
	"q4C-UFFkbS4tCp8732qMjciQIgodce7bnzNyjsU8CJ4",
	2000000000LL, 0, "alice"},
    /* Algorithms other than HS256, even correctly "signed". */
    {"alg none",
	"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"PdANtEwFQC-9miLs9boohP0FROeLqA82M26CcfBjLZU",
	NOW, -EPERM, NULL},
    {"alg none, no signature",
	"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0.",
	NOW, -EPERM, NULL},
    {"alg HS512",
	"eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"AndL6_ICCORs9JpK_ua0Qhla231jQ5SMNKhX6ex5wI0",
	NOW, -EPERM, NULL},
    {"crit header",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImNyaXQiOlsieCJdfQ."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"_6cMZhE5WFUoHlVHqcV8LMszVTuqqgAaKjTpdYLLSa0",
	NOW, -EPERM, NULL},
    /* Forged: the payload changed, or the signature. */
    {"forged payload (sub bob)",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJib2IiLCJleHAiOjIwMDAwMDAwMDB9."
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjieXrg",
	NOW, -EPERM, NULL},
    {"forged signature",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjieXrA",
	NOW, -EPERM, NULL},
    {"signature truncated",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjie",
	NOW, -EPERM, NULL},
    {"jwt.io example (signed with another secret, no exp)",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MD"
	"IyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
	NOW, -EPERM, NULL},
    /* Correctly signed, but the claims are wrong. */
    {"empty sub",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiIiLCJleHAiOjIwMDAwMDAwMDB9."
	"70-I-AK5YnzKbyU7p8ZbNRNvyangg0IrH2KHx64Jw9k",
	NOW, -EBADMSG, NULL},
    {"sub not a string",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOjQyLCJleHAiOjIwMDAwMDAwMDB9."
	"JMkuVluJG6BrP3SSVt82XFVQEUJHeH-yrSLoHbH5tWY",
	NOW, -EBADMSG, NULL},
    {"exp a string",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6IjIwMDAwMDAwMDAifQ."
	"wyizstABExMIR1kOARFYVOWkKT4WD3AwkMdLSeApm40",
	NOW, -EBADMSG, NULL},
    {"sub with a control character",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhXHUwMDAxYiIsImV4cCI6MjAwMDAwMDAwMH0."
	"QbzXl8D-lPXpIvnrmvXt17ZiezjDg-P-jxHUWh09HGs",
	NOW, -EBADMSG, NULL},
    {"duplicate sub",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsInN1YiI6ImV2ZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"9nf3H3IuOPNAfzdMmgPWscqdiAnoTGKLpBb6wwPEJ_M",
	NOW, -EBADMSG, NULL},
    {"payload not an object",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.WyJhbGljZSJd."
	"vxRgtz2eWiMk_e6N9gyJbQqfx_jNSZDpCPxPcS1i-dk",
	NOW, -EBADMSG, NULL},
    /* Not a token at all. */
    {"empty", "", NOW, -EBADMSG, NULL},
    {"one part", "eyJhbGciOiJIUzI1NiJ9", NOW, -EBADMSG, NULL},
    {"two parts", "eyJhbGciOiJIUzI1NiJ9.e30", NOW, -EBADMSG, NULL},
    {"four parts", TOK_ALICE ".x", NOW, -EBADMSG, NULL},
    {"empty header", ".eyJzdWIiOiJhIn0.abc", NOW, -EBADMSG, NULL},
    {"padding", TOK_ALICE "=", NOW, -EBADMSG, NULL},
    {"standard base64 alphabet",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"3YezyANbmPhw1PRs8elZDXFOLo/25GD8A4mPnjieXrg",
	NOW, -EBADMSG, NULL},
    {"space inside",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 ."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjieXrg",
	NOW, -EBADMSG, NULL},
    {"non-canonical trailing bits",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	"eyJzdWIiOiJhbGljZSIsImV4cCI6MjAwMDAwMDAwMH0."
	"3YezyANbmPhw1PRs8elZDXFOLo_25GD8A4mPnjieXrh",
	NOW, -EBADMSG, NULL},
};

START_TEST(test_verify)
{
	const struct jwt_case *c = &cases[_i];
	struct jwt_claims out;
	int rv;

	memset(&out, 0x5a, sizeof(out));
	rv = jwt_hs256_verify(c->token, KEY, KEY_LEN, c->now, &out);
	ck_assert_msg(
	    rv == c->want, "%s: got %d, want %d", c->name, rv, c->want);
	if (c->want == 0) {
		ck_assert_str_eq(out.sub, c->sub);
		ck_assert_int_eq(out.exp, 2000000000LL);
	} else {
		/* Untouched on failure. */
		ck_assert_int_eq((unsigned char)out.sub[0], 0x5a);
	}
}
END_TEST

START_TEST(test_wrong_key)
{
	struct jwt_claims out;

	ck_assert_int_eq(
	    jwt_hs256_verify(TOK_ALICE, "other-secret", 12, NOW, &out), -EPERM);
	/* One byte shorter than the real key. */
	ck_assert_int_eq(
	    jwt_hs256_verify(TOK_ALICE, KEY, KEY_LEN - 1, NOW, &out), -EPERM);
	ck_assert_int_eq(
	    jwt_hs256_verify(TOK_ALICE, KEY, 0, NOW, &out), -EINVAL);
	ck_assert_int_eq(
	    jwt_hs256_verify(NULL, KEY, KEY_LEN, NOW, &out), -EINVAL);
}
END_TEST

START_TEST(test_iat)
{
	struct jwt_claims out;

	ck_assert_int_eq(
	    jwt_hs256_verify(cases[1].token, KEY, KEY_LEN, NOW, &out), 0);
	ck_assert_int_eq(out.iat, 1700000000LL);
	ck_assert_int_eq(
	    jwt_hs256_verify(TOK_ALICE, KEY, KEY_LEN, NOW, &out), 0);
	ck_assert_int_eq(out.iat, 0);
}
END_TEST

START_TEST(test_too_long)
{
	struct jwt_claims out;
	char *big = malloc(JWT_TOKEN_MAX + 2);

	ck_assert_ptr_nonnull(big);
	memset(big, 'a', JWT_TOKEN_MAX + 1);
	big[JWT_TOKEN_MAX + 1] = '\0';
	ck_assert_int_eq(
	    jwt_hs256_verify(big, KEY, KEY_LEN, NOW, &out), -EBADMSG);
	free(big);
}
END_TEST

/* The jwt.io example, byte for byte, then our own round trip. */
START_TEST(test_sign)
{
	char out[512];
	struct jwt_claims c;

	ck_assert_int_eq(jwt_hs256_sign("{\"sub\":\"1234567890\",\"name\":"
					"\"John Doe\",\"iat\":1516239022}",
			     "your-256-bit-secret", 19, out, sizeof(out)),
	    0);
	ck_assert_str_eq(out,
	    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
	    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2Mj"
	    "M5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c");
	ck_assert_int_eq(
	    jwt_hs256_sign("{\"sub\":\"alice\",\"exp\":2000000000}", KEY,
		KEY_LEN, out, sizeof(out)),
	    0);
	ck_assert_str_eq(out, TOK_ALICE);
	ck_assert_int_eq(jwt_hs256_verify(out, KEY, KEY_LEN, NOW, &c), 0);
	ck_assert_str_eq(c.sub, "alice");
	/* Too small a buffer, at every size. */
	for (size_t n = 1; n <= strlen(TOK_ALICE); n++)
		ck_assert_int_eq(
		    jwt_hs256_sign("{\"sub\":\"alice\",\"exp\":2000000000}",
			KEY, KEY_LEN, out, n),
		    -ENOSPC);
}
END_TEST

static Suite *
jwt_suite(void)
{
	Suite *s = suite_create("jwt");
	TCase *tc = tcase_create("verify");

	tcase_add_loop_test(
	    tc, test_verify, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_iat);
	tcase_add_test(tc, test_too_long);
	suite_add_tcase(s, tc);
	tc = tcase_create("sign");
	tcase_add_test(tc, test_sign);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return uc_run(jwt_suite());
}
