/*
 * rl_script.lua, embedded at build time (CMake writes rl_script_lua.c from
 * it as a byte array), and its SHA-1 as EVALSHA wants it.
 */
#ifndef AIPROXY_RL_SCRIPT_H
#define AIPROXY_RL_SCRIPT_H

#include <stddef.h>

/* The script's text, NUL-terminated. */
extern const char rl_script_lua[];
extern const size_t rl_script_lua_len;

#endif
