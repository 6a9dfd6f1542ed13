#!/usr/bin/env bash
# Blue-green switch of n8n-bridge behind HAProxy: moves the traffic to the other colour with no
# failed request, and moves it back by itself when the new colour does not stay healthy.
#
#   scripts/blue-green-switch.sh switch <blue|green>   make that colour the live one
#   scripts/blue-green-switch.sh rollback              make the other colour live again
#   scripts/blue-green-switch.sh status                both colours, as HAProxy and they see it
#   scripts/blue-green-switch.sh --help                this text
#
# Configuration (environment):
#   HAPROXY_ADMIN_SOCKET   HAProxy's admin socket: a path, or host:port for a TCP socket
#                          (default: haproxy/run/admin.sock, where docker-compose.shared.yml puts it)
#   HAPROXY_STATE_FILE     where the server state is saved for HAProxy's next start
#                          (default: server-state next to the socket; haproxy.cfg loads it)
#   BLUE_URL / GREEN_URL   each colour's own address, not HAProxy's
#                          (default: http://127.0.0.1:8080 / http://127.0.0.1:8090)
#   BRIDGE_ADMIN_API_KEY or BRIDGE_ADMIN_TOKEN
#                          an API key, or a JWT, with the admin scope (for /admin/drain, /admin/status)
#   SWITCH_HEALTH_TIMEOUT_S  how long the target may take to answer /ready 200 (default 30)
#   SWITCH_CHECK_TIMEOUT_S   how long HAProxy may take to see the target healthy (default 15)
#   SWITCH_DRAIN_TIMEOUT_S   how long the old colour may take to finish its requests and jobs
#                            (default 330: the longest sync request, 300 s, and a margin)
#   SWITCH_WATCH_S           how long the new colour is watched before the old one goes to
#                            maintenance (default 30)
#   SWITCH_POLL_S            how often states are read while waiting and watching (default 0.2)
#   SWITCH_LOCK_FILE         one switch at a time (default /tmp/n8n-bridge-switch.lock)
#
# Exit codes:
#   0  done (or nothing to do: the colour was live already)
#   1  usage, configuration or environment error (nothing changed)
#   2  the target failed its health gate: unreachable, not ready, wrong colour (nothing changed)
#   3  HAProxy did not see the target healthy in time (nothing changed; target back in maint)
#   4  rolled back: the new colour was not healthy while watched; the old colour serves again
#   5  switched, but the old colour still had requests or jobs when SWITCH_DRAIN_TIMEOUT_S passed
#      (it is in maintenance; they go on; stop it only when /admin/status says drained)
#   6  the automatic rollback failed: look at `status` now, a person is needed
#   7  switched, but the server state could not be saved (a restart of HAProxy would forget it)
#   130 interrupted; run the same switch again: it finishes a switch stopped half-way
#
# Every step is logged to stderr with a UTC time stamp. See docs/operations.md (blue-green).
set -euo pipefail
shopt -s extglob

BACKEND=bridge
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SOCKET=${HAPROXY_ADMIN_SOCKET:-$ROOT/haproxy/run/admin.sock}
STATE_FILE=${HAPROXY_STATE_FILE:-$(dirname "$SOCKET")/server-state}
BLUE_URL=${BLUE_URL:-http://127.0.0.1:8080}
GREEN_URL=${GREEN_URL:-http://127.0.0.1:8090}
HEALTH_TIMEOUT_S=${SWITCH_HEALTH_TIMEOUT_S:-30}
CHECK_TIMEOUT_S=${SWITCH_CHECK_TIMEOUT_S:-15}
DRAIN_TIMEOUT_S=${SWITCH_DRAIN_TIMEOUT_S:-330}
WATCH_S=${SWITCH_WATCH_S:-30}
POLL_S=${SWITCH_POLL_S:-0.2}
LOCK_FILE=${SWITCH_LOCK_FILE:-/tmp/n8n-bridge-switch.lock}

# --help: the comment this file starts with
help() { sed -n '2,/^set -euo/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"; }

usage_error() {
    printf 'usage: %s switch <blue|green> | rollback | status\n%s; --help tells more\n' "$0" "$1" >&2
    exit 1
}

log() { printf '%s blue-green: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" >&2; }
die() { local code=$1; shift; log "FAILED: $*"; exit "$code"; }

other() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
url_of() { if [[ $1 == blue ]]; then echo "$BLUE_URL"; else echo "$GREEN_URL"; fi; }
now() { date +%s.%N; }
before() { awk -v a="$(now)" -v b="$1" 'BEGIN { exit !(a < b) }'; }  # is it still before $1?
deadline() { awk -v a="$(now)" -v s="$1" 'BEGIN { printf "%.3f", a + s }'; }

# --- HAProxy, through its admin socket -------------------------------------------------------

haproxy() {  # one or more commands separated by ';', sent in one connection
    local address
    if [[ $SOCKET == *:+([0-9]) ]]; then address=TCP:$SOCKET; else address=UNIX-CONNECT:$SOCKET; fi
    # In the background and waited for: socat catches SIGINT and exits normally, and bash takes
    # a foreground child that does so as having handled Ctrl-C and skips its own trap. The wait
    # builtin is interrupted by the signal instead, so the trap runs.
    printf '%s\n' "$1" | socat -t 5 - "$address" &
    wait "$!"
}

haproxy_set() {  # `set server` answers nothing when it worked, a reason when not
    local answer
    answer=$(haproxy "$1") || die 6 "HAProxy's admin socket did not take: $1"
    answer=${answer//$'\n'/ }
    [[ -z ${answer// /} ]] || die 6 "HAProxy refused '$1': $answer"
    log "haproxy: $1"
}

# "<status>,<check status>,<current sessions>" of a server of the backend, from `show stat`.
# Status: UP, "UP 1/2" (failing, not yet down), DOWN, DRAIN, MAINT...; check: L7OK, L7STS, INI...
server_state() {
    haproxy "show stat $BACKEND 4 -1" | awk -F, -v server="$1" '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $col["svname"] == server {
            check = $col["check_status"]; sub(/^\* /, "", check)
            print $col["status"] "," check "," $col["scur"]; found = 1
        }
        END { exit !found }'
}

field() { cut -d, -f"$2" <<<"$1"; }

# The admin state HAProxy gives the colour: maint, drain or ready (serving when healthy).
admin_state() {
    case $(field "$1" 1) in
        MAINT*) echo maint ;;
        DRAIN*) echo drain ;;
        *) echo ready ;;
    esac
}

save_state() {
    local tmp="$STATE_FILE.tmp.$$"
    if haproxy "show servers state" >"$tmp" 2>/dev/null && mv -f "$tmp" "$STATE_FILE"; then
        log "server state saved to $STATE_FILE"
        return 0
    fi
    rm -f "$tmp"
    log "WARNING: could not save the server state to $STATE_FILE"
    return 1
}

# --- the bridges, directly ---------------------------------------------------------------------

auth_header() {
    if [[ -n ${BRIDGE_ADMIN_API_KEY:-} ]]; then
        echo "X-API-Key: $BRIDGE_ADMIN_API_KEY"
    elif [[ -n ${BRIDGE_ADMIN_TOKEN:-} ]]; then
        echo "Authorization: Bearer $BRIDGE_ADMIN_TOKEN"
    fi
}

# `<http code> <body>` of a request to a colour itself; `000 unreachable` when it did not answer
bridge() {
    local colour=$2 path=$3 args=(-s -m 5 -X "$1" -w '\n%{http_code}') answer
    [[ -n $(auth_header) ]] && args+=(-H "$(auth_header)")
    answer=$(curl "${args[@]}" "$(url_of "$colour")$path" 2>/dev/null) || answer=$'\n000'
    if [[ ${answer##*$'\n'} == 000 ]]; then
        echo "000 unreachable"
    else
        echo "${answer##*$'\n'} ${answer%$'\n'*}"
    fi
}

ready_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$(url_of "$1")/ready" || true; }

json_value() {  # the first value of a scalar key in the bridge's compact JSON
    grep -o "\"$1\":\\(\"[^\"]*\"\\|true\\|false\\|null\\|[0-9.]*\\)" <<<"$2" | head -1 |
        cut -d: -f2- | tr -d '"' || true
}

# --- the steps ---------------------------------------------------------------------------------

health_gate() {  # the target itself must serve, and be the colour it is said to be
    local target=$1 answer code colour until
    answer=$(bridge DELETE "$target" /admin/drain)  # it was drained when it was left last time
    code=${answer%% *}
    case $code in
        200) ;;
        409) die 2 "$target is shutting down; start it again first" ;;
        401 | 403) die 1 "$target refused the admin credentials: ${answer#* }" ;;
        000) die 2 "$target is not reachable at $(url_of "$target")" ;;
        *) die 2 "$target answered DELETE /admin/drain with $answer" ;;
    esac
    answer=$(bridge GET "$target" /health)
    colour=$(json_value color "${answer#* }")
    [[ $colour == "$target" ]] ||
        die 2 "$(url_of "$target") says it is colour '${colour:-unset}', not $target (check BRIDGE_COLOR and ${target^^}_URL)"
    until=$(deadline "$HEALTH_TIMEOUT_S")
    until [[ $(ready_code "$target") == 200 ]]; do
        before "$until" || die 2 "$target did not answer /ready 200 within ${HEALTH_TIMEOUT_S}s: $(bridge GET "$target" /ready)"
        sleep "$POLL_S"
    done
    log "step 1: $target serves (/ready 200, colour $colour, version $(json_value version "${answer#* }"))"
}

haproxy_sees_healthy() {  # $2: DRAIN (checked, no traffic yet) or UP (live already)
    local target=$1 want=$2 state until
    [[ $want == DRAIN ]] && haproxy_set "set server $BACKEND/$target state drain"
    until=$(deadline "$CHECK_TIMEOUT_S")
    while state=$(server_state "$target"); [[ $(field "$state" 1) != "$want" || $(field "$state" 2) != L7OK ]]; do
        if ! before "$until"; then
            [[ $want == DRAIN ]] && haproxy_set "set server $BACKEND/$target state maint"
            die 3 "HAProxy's checks of $target did not pass within ${CHECK_TIMEOUT_S}s (status $(field "$state" 1), check $(field "$state" 2))$([[ $want == DRAIN ]] && echo "; $target is back in maint")"
        fi
        sleep "$POLL_S"
    done
    log "step 2: HAProxy sees $target healthy ($want, check L7OK)"
}

healthy() {  # the live colour as the watch wants it: exactly UP in HAProxy, /ready 200 itself
    local state
    state=$(server_state "$1") || return 1
    [[ $(field "$state" 1) == UP && $(ready_code "$1") == 200 ]]
}

rollback_to() {  # called when $2, just made live, is not healthy
    local old=$1 new=$2 answer state
    log "ROLLBACK: $new is not healthy (HAProxy: $(server_state "$new" || echo unknown), /ready $(ready_code "$new")); back to $old"
    answer=$(bridge DELETE "$old" /admin/drain)
    [[ ${answer%% *} == 200 ]] || die 6 "$old cannot serve again (DELETE /admin/drain: $answer); $new stays live"
    # Checks of the drained old colour failed; `health up` makes it eligible now, not after `rise`.
    haproxy_set "set server $BACKEND/$old health up; set server $BACKEND/$old state ready; set server $BACKEND/$new state maint"
    answer=$(bridge POST "$new" /admin/drain)  # a bad version takes no more shared jobs
    log "rollback: $new asked to drain: $answer"
    state=$(server_state "$old") || true
    [[ $(field "$state" 1) == UP ]] || die 6 "after the rollback HAProxy shows $old as $state"
    save_state || true
    log "rolled back: $old is live again, $new is in maint"
    exit 4
}

drain_old() {  # returns 1 when the bound passed first
    local old=$1 new=$2 answer state sessions drained waiting until next_log
    answer=$(bridge POST "$old" /admin/drain)
    case ${answer%% *} in
        200) log "step 4: $old drains: $(cut -d' ' -f2- <<<"$answer")" ;;
        000) log "step 4: $old is not reachable; nothing of it to drain" ; return 0 ;;
        *) log "step 4: WARNING: $old answered POST /admin/drain with $answer" ;;
    esac
    until=$(deadline "$DRAIN_TIMEOUT_S")
    next_log=$(deadline 5)
    while true; do
        healthy "$new" || rollback_to "$old" "$new"
        state=$(server_state "$old") || state=",,?"
        sessions=$(field "$state" 3)
        answer=$(bridge GET "$old" /admin/status)
        case ${answer%% *} in
            200) drained=$(json_value drained "${answer#* }") ;;
            000) drained=true ;;  # gone: nothing left of it to wait for
            *) drained="unknown (GET /admin/status: HTTP ${answer%% *})" ;;
        esac
        if [[ $sessions == 0 && $drained == true ]]; then
            log "step 5: $old has no session left in HAProxy and nothing in flight"
            waiting=$(json_value waiting "${answer#*\"deliveries\":}")
            [[ ${waiting:-0} == 0 ]] ||  # in its outbox: another instance sends them after its stop
                log "step 5: $old keeps $waiting webhook(s) waiting for a retry until it stops; then $new sends them"
            return 0
        fi
        if ! before "$until"; then
            log "step 5: WARNING: after ${DRAIN_TIMEOUT_S}s $old still has $sessions session(s), drained=$drained"
            return 1
        fi
        if ! before "$next_log"; then
            log "step 5: waiting for $old: $sessions session(s), in flight: $(json_value in_flight "${answer#*\"workers\":}"), webhooks sending: $(json_value sending "${answer#*\"deliveries\":}"), drained=$drained"
            next_log=$(deadline 5)
        fi
        sleep "$POLL_S"
    done
}

watch_new() {
    local old=$1 new=$2 until
    log "step 6: watching $new for ${WATCH_S}s"
    until=$(deadline "$WATCH_S")
    while before "$until"; do
        healthy "$new" || rollback_to "$old" "$new"
        sleep "$POLL_S"
    done
    log "step 6: $new stayed UP for ${WATCH_S}s"
}

switch() {
    local target=$1 old target_state old_state code=0
    old=$(other "$target")
    target_state=$(server_state "$target") || die 1 "HAProxy has no server $BACKEND/$target (socket $SOCKET)"
    old_state=$(server_state "$old") || die 1 "HAProxy has no server $BACKEND/$old (socket $SOCKET)"
    if [[ $(admin_state "$target_state") == ready && $(admin_state "$old_state") == maint ]]; then
        log "$target is live already; nothing to do"
        return 0
    fi
    log "switch to $target: HAProxy shows $target $target_state, $old $old_state"
    health_gate "$target"
    if [[ $(admin_state "$target_state") == ready ]]; then
        # An earlier switch stopped half-way: the target takes traffic already. Never drain it.
        log "$target takes requests already: finishing the switch"
        haproxy_sees_healthy "$target" UP
        [[ $(admin_state "$old_state") == ready ]] && haproxy_set "set server $BACKEND/$old state drain"
    else
        haproxy_sees_healthy "$target" DRAIN
        # The flip, in one connection: no moment with neither or both colours taking new requests.
        haproxy_set "set server $BACKEND/$target state ready; set server $BACKEND/$old state drain"
    fi
    log "step 3: $target takes the new requests; $old finishes what it has"
    drain_old "$old" "$target" || code=5
    watch_new "$old" "$target"
    haproxy_set "set server $BACKEND/$old state maint"
    log "step 7: $old is in maint"
    save_state || code=7
    log "done: $target is live"
    return "$code"
}

status() {
    local colour state answer live=none
    for colour in blue green; do
        state=$(server_state "$colour") || die 1 "HAProxy has no server $BACKEND/$colour (socket $SOCKET)"
        [[ $(admin_state "$state") == ready ]] && live=$colour
        answer=$(bridge GET "$colour" /admin/status)
        printf '%-5s haproxy: %-9s check: %-6s sessions: %-4s | %s: /ready %s, version %s, draining %s, drained %s\n' \
            "$colour" "$(field "$state" 1)" "$(field "$state" 2)" "$(field "$state" 3)" \
            "$(url_of "$colour")" "$(ready_code "$colour")" \
            "$(json_value version "${answer#* }")" "$(json_value draining "${answer#* }")" \
            "$(json_value drained "${answer#* }")"
    done
    echo "live: $live"
}

live_colour() {
    local colour
    for colour in blue green; do
        [[ $(admin_state "$(server_state "$colour")") == ready ]] && { echo "$colour"; return 0; }
    done
    die 1 "neither colour is live in HAProxy; use: switch <blue|green>"
}

interrupted() {
    log "INTERRUPTED: HAProxy now shows blue $(server_state blue || echo ?), green $(server_state green || echo ?)"
    log "run '$0 status', then 'switch <colour>' again: it finishes a switch stopped half-way"
    exit 130
}

main() {
    local command=${1:-} arg
    # The call is checked before anything is looked at or changed.
    for arg in "$@"; do
        [[ $arg == -h || $arg == --help ]] && { help; exit 0; }
    done
    case $command in
        "") usage_error "no command" ;;
        switch) [[ $# == 2 && ($2 == blue || $2 == green) ]] ||
            usage_error "switch needs a colour: blue or green" ;;
        rollback | status) [[ $# == 1 ]] || usage_error "$command takes no argument" ;;
        *) usage_error "unknown command '$command'" ;;
    esac
    trap interrupted INT TERM
    for tool in socat curl awk; do
        command -v "$tool" >/dev/null || die 1 "$tool is needed (Debian: apt-get install $tool)"
    done
    [[ $SOCKET == *:+([0-9]) || -S $SOCKET ]] || die 1 "no HAProxy admin socket at $SOCKET (set HAPROXY_ADMIN_SOCKET)"
    case $command in
        status) status ;;
        switch | rollback)
            local target=${2:-}
            [[ -n $(auth_header) ]] || die 1 "set BRIDGE_ADMIN_API_KEY or BRIDGE_ADMIN_TOKEN (admin scope)"
            exec 9>"$LOCK_FILE"
            flock -n 9 || die 1 "another switch is running (lock $LOCK_FILE)"
            if [[ $command == rollback ]]; then
                target=$(live_colour) || exit 1
                target=$(other "$target")
                log "rollback: back to $target"
            fi
            switch "$target"
            ;;
    esac
}

main "$@"
