#include "jsonx.h"

int
jsonx_depth(const char *buf, size_t len, int max)
{
	bool in_str = false, esc = false;
	int depth = 0, deepest = 0;

	for (size_t i = 0; i < len; i++) {
		char c = buf[i];

		if (in_str) {
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"') {
			in_str = true;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				return -1;
			if (depth > deepest)
				deepest = depth;
		} else if (c == '}' || c == ']') {
			/* More closed than opened: not JSON, refuse. */
			if (--depth < 0)
				return -1;
		}
	}
	return deepest;
}
