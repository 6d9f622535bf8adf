#!/bin/sh
# Container entrypoint: `gateway`, `ratelimiter`, `accountant` or
# `provider-worker` (plus flags) runs that daemon in the foreground; anything
# else runs as given.
set -eu
case "${1:-gateway}" in
gateway | ratelimiter | accountant | provider-worker)
	daemon=aiproxy-${1:-gateway}
	# Every worker needs its own id (journal, event ids): the container's
	# hostname (pod name) unless one is given, at most 32 characters.
	if [ "$daemon" = aiproxy-provider-worker ] &&
	    [ -z "${AI_PROXY_WORKER_ID:-}" ]; then
		AI_PROXY_WORKER_ID=$(tail -c 33 /proc/sys/kernel/hostname | tr -c 'A-Za-z0-9_.\n-' '-')
		export AI_PROXY_WORKER_ID
	fi
	[ "$#" -gt 0 ] && shift
	exec "$daemon" "$@"
	;;
*)
	exec "$@"
	;;
esac
