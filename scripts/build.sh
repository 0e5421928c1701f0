#!/usr/bin/env bash
# wrangler's [build] command (wrangler dev / deploy). `./x dev` builds first and sets
# IDEMGATE_SKIP_BUILD=1 so wrangler does not build twice.
set -euo pipefail
[ "${IDEMGATE_SKIP_BUILD:-}" = 1 ] && exit 0
exec "$(dirname "$0")/../x" build
