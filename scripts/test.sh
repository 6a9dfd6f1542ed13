#!/usr/bin/env bash
# Install everything the tests need (.venv, packages, system servers) and run every check:
# ruff, mypy and the whole pytest suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
ensure_venv test

echo "== ruff" >&2
.venv/bin/ruff check bridge tests bench examples
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/python -m pytest "$@"
