#ifndef AIPROXY_JSONX_H
#define AIPROXY_JSONX_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Nesting depth of a JSON text ([ and { outside strings), found in one
 * pass before parsing, so a hostile body cannot make the parser recurse
 * deeply.  Returns the depth, or -1 once it exceeds max.
 */
int jsonx_depth(const char *buf, size_t len, int max);

#endif
