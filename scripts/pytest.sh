#!/usr/bin/env bash
# Runs pytest from the checkout; "no tests collected" (exit 5) is a failure, not a pass.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
