"""API fuzzing with schemathesis against a real daemon's served OpenAPI document: every
operation, with an admin credential and with none, valid and invalid requests. Each must get an
answer that is not a server error and that matches the document — status code, content type,
headers, body schema — and requests the document calls invalid must be refused. The product's
own processors only (the test plugins include ones that crash or block on purpose).

`FUZZ_EXAMPLES` sets the examples per operation (default 40: over 1,000 requests in all);
`FUZZ_RANDOM=1` explores new inputs instead of the fixed, reproducible ones. The longer
run in docs/reliability.md uses both.

Left out on purpose: `positive_data_acceptance` — the document cannot say every rule the API
enforces (a cursor must be one it handed out; a URL must not reach where the outbound guard
forbids, nor hold a dot segment in any encoding), so some schema-valid requests are rightly
refused with 422.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from bench.common import bridge_env, start_bridge
from bridge.api.routes import ROUTES, methods
from tests import smtp_server
from tests.smtp_server import Sink

API_KEY = "fuzz-api-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SENT: list[int] = []  # one entry per request the fuzzer made
# The 5xx answers the document lists, each only with its own error code and cause: a processor's
# service failing (502 integration), draining (503 unavailable), a generated `timeout_s` too
# short for the run (504 timeout). Anything else 5xx — above all a 500 — fails the test.
EXPECTED_5XX = {502: "integration", 503: "unavailable", 504: "timeout"}
SEEN_5XX: Counter[str] = Counter()
EXCLUDED = [positive_data_acceptance, not_a_server_error]


def no_internal_error(ctx: Any, response: Any, case: Any) -> None:
    status = response.status_code
    if status < 500:
        return
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if EXPECTED_5XX.get(status) != code:
        raise AssertionError(f"server error {status} ({code}): {response.text[:500]}")
    SEEN_5XX[f"{status} {code}"] += 1


@dataclass
class FuzzedDaemon:
    """`n8n-bridge serve` with every processor able to work (SMTP on a loopback sink)."""

    process: subprocess.Popen[bytes]
    url: str

    def healthy(self) -> bool:
        return self.process.poll() is None and requests.get(f"{self.url}/health").ok


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedDaemon]:
    sink = Sink()
    controller = smtp_server.start(sink)
    directory = tmp_path_factory.mktemp("fuzz")
    env = bridge_env(
        directory / "data",
        BRIDGE_API_KEYS=API_KEY,
        BRIDGE_API_KEY_SCOPES="execute,status,admin",
        BRIDGE_SMTP_HOST="127.0.0.1",
        BRIDGE_SMTP_PORT=str(controller.port),  # type: ignore[attr-defined]
        BRIDGE_SMTP_TLS="none",
        BRIDGE_SMTP_FROM="fuzz@example.com",
        BRIDGE_ACCESS_LOG="false",
    )
    process, url = start_bridge(env, directory / "daemon.log")
    yield FuzzedDaemon(process, url)
    process.terminate()
    process.wait(30)
    controller.stop()


@pytest.fixture(scope="module")
def api(daemon: FuzzedDaemon) -> Any:
    return schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json")


# Operations from the route table the document is built from, HEAD of each GET too (every one is
# fuzzed; the test below also checks the served document has no other). schemathesis's own
# pytest plugin is not used: its lazy loader sets `_nodeid`, which pytest 9 no longer has.
OPERATIONS = [(method, route.path) for route in ROUTES for method in methods(route)]
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(api: Any, daemon: FuzzedDaemon, method: str, path: str, headers: dict[str, str]) -> None:
    """Valid and invalid requests (by the document) for one operation."""
    operation = api[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @fuzz_settings
    def run(case: Any) -> None:
        call_and_validate(case, daemon, headers)

    run()


def call_and_validate(case: Any, daemon: FuzzedDaemon, headers: dict[str, str]) -> None:
    SENT.append(1)
    if case.path == "/api/v1/events" and case.method == "GET":  # HEAD: its head only
        return stream_and_validate(case, headers)
    case.call_and_validate(
        headers=headers, excluded_checks=EXCLUDED, additional_checks=[no_internal_error]
    )
    if case.method == "POST" and case.path == "/admin/drain":
        # A drained daemon refuses background jobs with 503 on purpose: serve again, so the
        # rest of the run fuzzes a serving daemon.
        requests.delete(f"{daemon.url}/admin/drain", headers=AUTH).raise_for_status()


def stream_and_validate(case: Any, headers: dict[str, str]) -> None:
    """Server-Sent Events never end: a 200 is checked by its headers and first frame, any
    other answer by the full set of checks."""
    kwargs = case.as_transport_kwargs(headers=headers)
    with requests.request(**kwargs, stream=True, timeout=10) as response:
        if response.status_code == 200:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert next(response.iter_lines()) == b"retry: 2000"
            return
        response.content  # noqa: B018 (read it all: the answer is a short JSON error)
    case.validate_response(
        response, excluded_checks=EXCLUDED, additional_checks=[no_internal_error]
    )


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_with_an_admin_credential(api: Any, daemon: FuzzedDaemon, method: str, path: str) -> None:
    fuzz(api, daemon, method, path, AUTH)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_without_credentials(api: Any, daemon: FuzzedDaemon, method: str, path: str) -> None:
    fuzz(api, daemon, method, path, {})


def test_the_fuzzed_operations_are_all_the_document_has(api: Any) -> None:
    served = {(op.ok().method.upper(), op.ok().path) for op in api.get_all_operations()}
    assert served == set(OPERATIONS) - {("GET", "/api/v1/openapi.json")}


def test_over_1000_requests_left_the_daemon_healthy(daemon: FuzzedDaemon) -> None:
    """Runs after the two above (file order): they sent enough, and the daemon still serves."""
    print(f"schemathesis sent {len(SENT)} generated requests; documented 5xx: {dict(SEEN_5XX)}")
    assert len(SENT) >= 1000
    assert daemon.healthy()
