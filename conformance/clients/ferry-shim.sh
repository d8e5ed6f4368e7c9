#!/bin/sh
# Maps conformance's client contract (conformance/README.md) onto our `ferry` command:
#   ferry-shim.sh {addr} {op} {name} {dir} {path} {timeout}
# FERRY names the binary (default: `ferry` on PATH). ferry speaks version 1 only, so the legacy
# cases find it does not speak the legacy profile and call themselves unsupported.
set -eu
addr=$1 op=$2 name=$3 dir=$4 path=$5 timeout=$6
ferry=${FERRY:-ferry}
set -- --server "$addr" --timeout "$timeout" --quiet --no-digest-cache
case $op in
get) exec "$ferry" "$@" get "$name" -o "$dir/" ;;
put) exec "$ferry" "$@" put "$path" --as "$name" --overwrite ;;
list) exec "$ferry" "$@" list ;;
rm) exec "$ferry" "$@" rm "$name" ;;
*) echo "ferry-shim.sh: unknown operation $op" >&2; exit 2 ;;
esac
