#!/usr/bin/env bash
# Start the bridge on embedded defaults: SQLite under ./data, in-process queues, no Redis.
# Creates .venv and installs the project the first time. Any BRIDGE_* variable still applies;
# extra arguments go to `n8n-bridge serve` (e.g. --config bridge.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
ensure_venv ""

host=${BRIDGE_HOST:-127.0.0.1}
port=${BRIDGE_PORT:-8080}
token=$(.venv/bin/n8n-bridge token --scope execute,status,admin --ttl 24h "$@")
cat <<INFO
n8n-bridge: http://$host:$port  (API docs: http://$host:$port/api/v1/openapi.json)
dev token, all scopes, valid 24 h (new one: .venv/bin/n8n-bridge token --scope execute,status):
$token

try:
  curl -s http://$host:$port/api/v1/workflow/execute -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"processing_type":"echo","items":[{"json":{"hi":1}}]}'
INFO
exec .venv/bin/n8n-bridge serve "$@"
