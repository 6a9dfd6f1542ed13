#!/usr/bin/env bash
# Run a benchmark: bash bench/run.sh NAME [args]  (NAME: a module of bench/)
# Installs what it needs: .venv with the project (test and bench extras), and wrk, hey and
# redis-server from Debian (valgrind too, for `instructions`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
ensure_venv test,bench
apt_ensure wrk wrk
apt_ensure hey hey
apt_ensure redis-server redis-server
name=${1:?usage: bash bench/run.sh NAME [args]}
shift
if [ "$name" = instructions ]; then  # counts a bridge's instructions with callgrind
    apt_ensure valgrind valgrind
fi
if [ "$name" = n8n_nodes ]; then  # a real n8n and the built nodes
    . scripts/lib/n8n.sh
    ensure_n8n
    check_nodes
fi
exec .venv/bin/python -m "bench.$name" "$@"
