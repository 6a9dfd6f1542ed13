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
read -r host port env signer console < <("$root/.venv/bin/python" -c \
    'import json, sys; s = json.load(sys.stdin); print(s["host"], s["port"], s["env"], "yes" if s["jwt_secret"] or any(k["alg"] == "HS256" for k in s["jwt_keys"]) else "no", "yes" if s["console"] else "no")' <<<"$settings")
url=http://$host:$port
say_where() {
    echo "n8n-bridge: $url  (API docs: $url/api/v1/openapi.json)"
    if [[ $console == yes ]]; then
        echo "console: $url/admin/ui/  (sign in with an admin token or an API key with the admin scope)"
    fi
}
try_execute() {  # $1: the header that authenticates, with the shell variable it reads
    cat <<INFO
  curl -s $url/api/v1/workflow/execute -H "$1" \\
       -H 'Content-Type: application/json' -d '{"processing_type":"echo","items":[{"json":{"hi":1}}]}'
INFO
}
api_keys_only() {
    cat <<INFO
no token printed: no BRIDGE_JWT_SECRET to sign one with. Authenticate with one of your
BRIDGE_API_KEYS (header X-API-Key) or a JWT signed with a key of your BRIDGE_JWT_KEYS.

try, with API_KEY set to one of your API keys (the key itself, not its sha256: hash):
INFO
    try_execute "X-API-Key: \$API_KEY"
}

if [[ $env == production ]]; then
    # A development starter mints no admin token for a production bridge: tokens there are
    # made on purpose, with the scopes and lifetime their user needs.
    say_where
    if [[ $signer == yes ]]; then
        cat <<INFO
BRIDGE_ENV=production: no token made or printed. Make one with the scopes its user needs, with
the same settings (BRIDGE_* and --config) as the bridge, e.g. for n8n's credential:
  $bridge token --scope execute,status --ttl 24h

try, with TOKEN set to that token:
INFO
        try_execute "Authorization: Bearer \$TOKEN"
    else
        api_keys_only
    fi
    exec "$bridge" serve "$@"
fi

# The token on stdout, notes (e.g. that dev mode generated the JWT secret) on stderr: apart, as
# the two streams are written in no fixed order.
notes=$(mktemp)
code=0
token=$("$bridge" token --scope execute,status,admin --ttl 24h "$@" 2>"$notes") || code=$?
note=$(<"$notes")
rm -f "$notes"
[[ $code != 0 && $code != 3 ]] && { echo "$note" >&2; exit "$code"; }
say_where
case $code in
    0)
        [[ -z $note ]] || echo "$note" >&2
        cat <<INFO
dev token, all scopes, valid 24 h (n8n's credential needs only execute,status):
$token
another like it (with the same settings, BRIDGE_* and --config, from this directory):
  $bridge token --scope execute,status,admin --ttl 24h

try, with TOKEN set to that token:
INFO
        try_execute "Authorization: Bearer \$TOKEN"
        ;;
    3)  # nothing to sign a token with (`token` exits 3): the credentials are the user's own
        api_keys_only
        ;;
esac
exec "$bridge" serve "$@"
