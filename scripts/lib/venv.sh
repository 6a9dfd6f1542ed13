# shellcheck shell=bash
# Sourced by run.sh and test.sh: find Python >= 3.11, create .venv when missing, and (re)install
# the project when pyproject.toml changed since the last install.

find_python() {
    # The distribution's interpreter first: Debian builds it with PGO and LTO and links it
    # statically, and here it runs the daemon ~25 % faster than a default pyenv build (shared
    # libpython, no PGO; docs/benchmarks.md). PYTHON=/path/to/python overrides the choice.
    local candidate
    for candidate in "${PYTHON:-}" /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 \
        python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
                2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "n8n-bridge needs Python 3.11 or newer with venv (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

# ensure_venv EXTRAS — EXTRAS is "" (the daemon), "test", or "test,bench" (tests and benchmarks)
ensure_venv() {
    local extras=$1 python stamp target="."
    if [ ! -x .venv/bin/python ]; then
        python=$(find_python)
        echo "creating .venv with $python" >&2
        "$python" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
    fi
    if [ -z "$extras" ]; then
        # An install with extras (scripts/test.sh's) installed the project itself as well.
        for stamp in .venv/.installed*; do
            if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then return 0; fi
        done
    fi
    stamp=".venv/.installed${extras:+-$extras}"
    [ -n "$extras" ] && target=".[$extras]"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "installing n8n-bridge${extras:+ with $extras extras} into .venv" >&2
        if ! .venv/bin/python -m pip install -e "$target" >.venv/install.log 2>&1; then
            cat .venv/install.log >&2
            return 1
        fi
        touch "$stamp"
    fi
}

# apt_ensure COMMAND PACKAGE — install a Debian package when its command is missing
apt_ensure() {
    local command=$1 package=$2 sudo=""
    command -v "$command" >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing $package (for $command) with apt-get" >&2
    if [ -z "${_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq >/dev/null
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null
}
