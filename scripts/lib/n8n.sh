# shellcheck shell=bash
# Sourced by test.sh: a real n8n for the end-to-end tests, and the node package built and checked.

N8N_VERSION=1.123.81
export N8N_RUNTIME_DIR=${N8N_RUNTIME_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/n8n-bridge/n8n-$N8N_VERSION}

# ensure_n8n — install n8n into N8N_RUNTIME_DIR (outside the repository, kept between runs) when
# missing. The recipe of shared/n8n-e2e.md: xlsx from the registry, no install scripts (the
# isolated-vm addon does not build on Node 20), then only sqlite3 rebuilt.
ensure_n8n() {
    if [ -x "$N8N_RUNTIME_DIR/node_modules/.bin/n8n" ] && [ -f "$N8N_RUNTIME_DIR/.ready" ]; then
        return 0
    fi
    echo "installing n8n $N8N_VERSION into $N8N_RUNTIME_DIR (once; about 5 minutes)" >&2
    mkdir -p "$N8N_RUNTIME_DIR"
    cat >"$N8N_RUNTIME_DIR/package.json" <<JSON
{"name": "n8n-runtime", "version": "1.0.0", "private": true,
 "dependencies": {"n8n": "$N8N_VERSION"},
 "overrides": {"xlsx": "0.18.5"}}
JSON
    (
        cd "$N8N_RUNTIME_DIR"
        npm install --ignore-scripts --no-audit --no-fund --loglevel=error >install.log 2>&1 &&
            npm rebuild sqlite3 >>install.log 2>&1
    ) || {
        tail -30 "$N8N_RUNTIME_DIR/install.log" >&2
        return 1
    }
    touch "$N8N_RUNTIME_DIR/.ready"
}

# check_nodes — install the node package's tools, build it, lint it and run its unit tests.
check_nodes() {
    (
        cd n8n-nodes || exit
        if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
            # npm install, not npm ci: npm 11 refuses this lock file in `ci` for want of other
            # platforms' optional rollup builds, which it never recorded; install follows the lock.
            echo "installing the node package's tools (npm install)" >&2
            npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
        fi
        echo "== n8n-nodes: build, lint, unit tests" >&2
        npx --no-install n8n-node build >/dev/null
        npx --no-install n8n-node lint
        npm test --silent
    )
}
