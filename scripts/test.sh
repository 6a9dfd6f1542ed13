#!/usr/bin/env bash
# Install everything the tests need (.venv, packages, redis-server, haproxy, a real n8n, the node
# package's tools, the OpenAPI linter) and run every check: ruff, shellcheck, mypy, the n8n nodes'
# build, lint and unit tests, and the whole pytest suite (on both backends; end-to-end tests in n8n
# included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/venv.sh
. scripts/lib/n8n.sh
ensure_venv test,bench  # bench: arq, so mypy checks the benchmarks too
apt_ensure redis-server redis-server  # the Redis backend's tests start their own servers
apt_ensure haproxy haproxy            # the blue-green tests check and run a real HAProxy
apt_ensure socat socat                # ... through its admin socket, as the switch script does
apt_ensure curl curl                  # the switch script's way to the bridges
apt_ensure promtool prometheus        # checks and unit-tests the alert rules
apt_ensure chromium chromium          # the console's tests in a real browser (tests/browser.py),
apt_ensure chromedriver chromium-driver  # driven by Selenium through Debian's chromedriver
ensure_n8n
check_nodes
# Redocly CLI, which tests/test_openapi.py runs on the OpenAPI document: the lock's exact version.
lint_tool=tools/openapi-lint
if [ ! -d $lint_tool/node_modules ] || [ $lint_tool/package-lock.json -nt $lint_tool/node_modules/.package-lock.json ]; then
    echo "installing the OpenAPI linter (npm ci)" >&2
    (cd $lint_tool && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi

echo "== ruff" >&2
.venv/bin/ruff check bridge tests bench examples
echo "== shellcheck" >&2
.venv/bin/shellcheck scripts/*.sh scripts/lib/*.sh bench/*.sh
echo "== mypy" >&2
.venv/bin/mypy
.venv/bin/mypy examples/invoice_totals  # the example users copy: --strict as theirs may be
echo "== pytest" >&2
exec .venv/bin/python -m pytest "$@"
