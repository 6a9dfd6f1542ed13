#!/usr/bin/env bash
# Run a benchmark: bash bench/run.sh NAME [args]  (NAME: http_sync)
# Installs what it needs: .venv with the project, and wrk and hey from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
ensure_venv test
apt_ensure wrk wrk
apt_ensure hey hey
name=${1:?usage: bash bench/run.sh NAME [args]}
shift
exec .venv/bin/python -m "bench.$name" "$@"
