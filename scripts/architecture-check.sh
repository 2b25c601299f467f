#!/usr/bin/env bash
# Keeps ARCHITECTURE.md true: every path it names exists, and every function it names
# (`_claim`, `Answer::gone`, ...) is defined in the code.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
# Paths: backquoted names with a slash or a file extension.
while read -r p; do
    p=${p%/}
    [ -e "$p" ] || { echo "ARCHITECTURE.md names $p, which does not exist" >&2; fail=1; }
done < <(grep -o '`[A-Za-z0-9_./-]*`' ARCHITECTURE.md | tr -d '`' | grep -E '/|\.(rs|sql|md|sh|toml)$' \
         | grep -vE '^(https?:|webhooks\.|webhooks_internal\.)' | sort -u)
# Functions of ours: backquoted _names, and Type::method.
while read -r f; do
    name=${f##*::}
    grep -rqE "(FUNCTION|fn|CREATE TYPE) +(webhooks_internal\.|webhooks\.)?\"?$name\b" src core/src sql/src \
        || { echo "ARCHITECTURE.md names $f, which is defined nowhere" >&2; fail=1; }
done < <(grep -oE '`(_[a-z_]+|[A-Z][A-Za-z]+::[a-z_]+)[`(]' ARCHITECTURE.md | tr -d '`(' | sort -u)
exit $fail
