#include "pw_unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef AIPROXY_TEST_SOURCE_DIR
#define AIPROXY_TEST_SOURCE_DIR "."
#endif

const char pw_claude_stream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01Stream\","
    "\"type\":\"message\",\"role\":\"assistant\",\"model\":"
    "\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,"
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,"
    "\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":7,"
    "\"cache_creation\":{\"ephemeral_5m_input_tokens\":3,"
    "\"ephemeral_1h_input_tokens\":2},\"output_tokens\":1}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
    "{\"type\":\"text\",\"text\":\"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
    "\"text_delta\",\"text\":\"Hello\"}}\n"
    "\n"
    ": a comment line, ignored\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
    "\"text_delta\",\"text\":\" there! \\\"usage\\\" output_tokens 999\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":6}      }\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"      }\n"
    "\n";

const char pw_openai_stream[] =
    "data: {\"id\":\"chatcmpl-S1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
    "\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-S1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\\"error\\\"\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-S1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-S1\",\"object\":\"chat.completion.chunk\","
    "\"created\":1694268190,\"model\":\"gpt-4o-mini-2024-07-18\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
    "\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4,"
    "\"audio_tokens\":0},\"completion_tokens_details\":{"
    "\"reasoning_tokens\":0}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

int
pw_unit_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

uint64_t
pw_unit_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

char *
pw_unit_source_path(const char *rel)
{
	const char *dir = getenv("AIPROXY_SOURCE_DIR");
	char *p;

	if (dir == NULL || dir[0] == '\0')
		dir = AIPROXY_TEST_SOURCE_DIR;
	ck_assert_int_ge(asprintf(&p, "%s/%s", dir, rel), 0);
	return p;
}

char *
pw_unit_eol(const char *s, const char *eol)
{
	size_t n = 0, el = strlen(eol), o = 0;
	char *out;

	for (const char *p = s; *p != '\0'; p++)
		n += *p == '\n' ? el : 1;
	out = malloc(n + 1);
	ck_assert_ptr_nonnull(out);
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '\n') {
			memcpy(out + o, eol, el);
			o += el;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	return out;
}
