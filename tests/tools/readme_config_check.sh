#!/usr/bin/env bash
# The README's configuration table is the one the code prints: fails when
# a variable was added, removed or changed without updating README.md.
# Regenerate with: aiproxy-ctl config-table (between the config-table marks).
set -euo pipefail
ctl=$1
readme=$2
want=$("$ctl" config-table)
have=$(sed -n '/<!-- config-table/,/<!-- \/config-table -->/p' "$readme" |
	sed '1d;$d')
if [ "$want" != "$have" ]; then
	echo "README.md's configuration table is out of date:" >&2
	diff <(echo "$have") <(echo "$want") >&2 || true
	exit 1
fi
echo "README configuration table matches the code"
