#!/usr/bin/env bash
# Start the bridge on embedded defaults: SQLite under ./data, in-process queues, no Redis.
# Creates .venv and installs the project the first time. Any BRIDGE_* variable still applies;
# extra arguments go to `n8n-bridge serve` (e.g. --config bridge.toml).
# It runs where it is started: ./data, relative paths and the modules named by BRIDGE_PROCESSORS
# are those of the current directory.
set -euo pipefail
root=$(cd -P "$(dirname "$0")/.." && pwd)  # -P: also when reached through a link
(cd "$root" && . scripts/lib/venv.sh && ensure_venv "")
bridge=$root/.venv/bin/n8n-bridge

for arg in "$@"; do
    [[ $arg == -h || $arg == --help ]] && exec "$bridge" serve "$@"
done
# The settings first, and what would stop the start now (the port taken, ./data held by another
# bridge, Redis not answering): either stops here with its one line, before any banner or token.
settings=$("$bridge" check-config --preflight "$@")
read -r host port < <("$root/.venv/bin/python" -c \
    'import json, sys; s = json.load(sys.stdin); print(s["host"], s["port"])' <<<"$settings")
url=http://$host:$port

code=0
answer=$("$bridge" token --scope execute,status,admin --ttl 24h "$@" 2>&1) || code=$?
token=${answer%%$'\n'*}  # then notes, e.g. that dev mode generated the JWT secret
[[ $code != 0 && $code != 3 ]] && { echo "$answer" >&2; exit "$code"; }
echo "n8n-bridge: $url  (API docs: $url/api/v1/openapi.json)"
case $code in
    0)
        [[ $answer == "$token" ]] || echo "${answer#"$token"$'\n'}" >&2
        cat <<INFO
dev token, all scopes, valid 24 h (new one: $bridge token --scope execute,status):
$token

try:
  curl -s $url/api/v1/workflow/execute -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"processing_type":"echo","items":[{"json":{"hi":1}}]}'
INFO
        ;;
    3)  # nothing to sign a token with (`token` exits 3): the credentials are the user's own
        cat <<INFO
no token printed: no BRIDGE_JWT_SECRET to sign one with. Authenticate with one of your
BRIDGE_API_KEYS (header X-API-Key) or a JWT signed with a key of your BRIDGE_JWT_KEYS.

try:
  curl -s $url/api/v1/workflow/execute -H "X-API-Key: \$API_KEY" \\
       -H 'Content-Type: application/json' -d '{"processing_type":"echo","items":[{"json":{"hi":1}}]}'
INFO
        ;;
esac
exec "$bridge" serve "$@"
