"""The console's tests in a real browser (those that use the `browser` fixture; marked
`browser`, so `pytest -m browser` runs them alone): per test module one daemon (tests/daemon.py,
on the module's backend), one callback target (tests/webhook_target.py) and one headless
Chromium (tests/browser.py), shared by the module's tests.

Selenium blocks while it waits on the browser, so the daemon's log reader and the callback
target run on an event loop of their own, in a thread (`HarnessLoop`): a callback the daemon
sends while a test waits on a page is answered.

A module says which backends it runs on with `pytestmark = backends(...)`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.auth import mint_token
from bridge.settings import Settings
from tests.browser import Browser
from tests.conftest import API_KEY, PLUGINS, SECRET
from tests.daemon import Daemon
from tests.redis_server import RedisServer
from tests.webhook_target import Received, Target

T = TypeVar("T")

BOTH = ("embedded", "redis")
UI = "/admin/ui/"
# Every page (path under /admin/ui/) of a signed-in operator; `{job}` is a job's id.
PAGES = {
    "overview": "",
    "jobs": "jobs",
    "job": "jobs/{job}",
    "dead-letters": "dead-letters",
    "subscriptions": "subscriptions",
    "processors": "processors",
    "processor": "processors/echo",
    "drain": "drain",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def backends(*names: str) -> pytest.MarkDecorator:
    """The backends a module's daemon runs on, one after the other."""
    return pytest.mark.parametrize("console_backend", names, indirect=True, scope="module")


def eventually(check: Callable[[], T | None], timeout: float = 20, message: str = "") -> T:
    """`check()`'s first truthy answer, polled within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        if time.monotonic() > deadline:
            raise AssertionError(message or f"still {answer!r} after {timeout} s")
        time.sleep(0.05)
    return answer


class HarnessLoop:
    """An event loop running in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="harness", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def start_target() -> Target:
    target = Target()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", target.handle)
    target.server = TestServer(app, host="127.0.0.1")
    await target.server.start_server()
    return target


@dataclass
class Console:
    """The module's daemon, its callback target and the credentials of its operators."""

    backend: str
    daemon: Daemon
    target: Target
    settings: Settings  # the daemon's JWT secret, to mint tokens with

    def mint(self, *scopes: str, workflows: list[str] | None = None) -> str:
        return mint_token(self.settings, list(scopes), 3600, "console-test", workflows)

    @cached_property
    def admin_token(self) -> str:
        return self.mint("admin")

    @cached_property
    def status_token(self) -> str:
        """No way into the console: the status scope only."""
        return self.mint("status")

    @property
    def url(self) -> str:
        return self.daemon.url

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A JSON API call with the API key (scopes execute, status and admin)."""
        return requests.request(
            method, self.url + path, headers={"X-API-Key": API_KEY}, timeout=30, **kwargs
        )

    def submit(self, processing_type: str, items: list[dict[str, Any]], **extra: Any) -> str:
        """A background job through the JSON API; its id."""
        body = {
            "processing_type": processing_type,
            "mode": "async",
            "items": items,
            "workflow_id": "wf-console",
            "execution_id": "ex-1",
            **extra,
        }
        answer = self.api("POST", "/api/v1/workflow/execute", json=body)
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.api("GET", f"/api/v1/workflow/status/{job_id}")
        assert answer.status_code == 200, answer.text
        record: dict[str, Any] = answer.json()
        return record

    def job_in(self, job_id: str, *statuses: str) -> dict[str, Any]:
        """The job's record once its status is one of `statuses`."""

        def there() -> dict[str, Any] | None:
            record = self.job(job_id)
            return record if record["status"] in statuses else None

        return eventually(there, message=f"job {job_id} never {' or '.join(statuses)}")

    def received(self, path: str) -> list[Received]:
        """What the callback target has received on `path` so far."""
        return [call for call in self.target.received if call.path == path]

    def ready(self) -> int:
        return requests.get(self.url + "/ready", timeout=30).status_code


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the errors its daemon logged (a page's 500 says why)."""
    report: pytest.TestReport = yield
    console = getattr(item, "funcargs", {}).get("console")
    if report.failed and isinstance(console, Console):
        errors = [line for line in console.daemon.lines if '"level":"error"' in line]
        if errors:
            report.sections.append(("the daemon's errors", "\n".join(errors[-3:])))
    return report


@pytest.fixture(scope="module", params=BOTH)
def console_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def console(
    console_backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp(f"console-{console_backend}")
    env = {
        "BRIDGE_DATA_DIR": str(directory / "data"),
        "BRIDGE_JWT_SECRET": SECRET,
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_API_KEY_SCOPES": "execute,status,admin",  # it signs in to the console too
        "BRIDGE_PROCESSORS": PLUGINS,  # `sleep` and `flaky` among them
        "BRIDGE_CPU_EXECUTOR": "thread",
        "BRIDGE_ACCESS_LOG": "false",
        # Quick dead letters and failures: two attempts of a callback, one run of a job.
        "BRIDGE_CALLBACK_MAX_ATTEMPTS": "2",
        "BRIDGE_RETRY_BASE_S": "0.01",
        "BRIDGE_JOB_MAX_ATTEMPTS": "1",
    }
    if console_backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.client() as client:
            client.flushall()
        env["BRIDGE_REDIS_URL"] = server.url
    settings = Settings.model_validate({"jwt_secret": SECRET, "data_dir": directory / "data"})
    loop = HarnessLoop()
    target = loop.run(start_target())
    daemon = loop.run(Daemon(env).start())
    try:
        yield Console(console_backend, daemon, target, settings)
    finally:
        loop.run(daemon.kill())
        assert target.server is not None
        loop.run(target.server.close())
        loop.close()


@pytest.fixture(scope="module")
def browser(console: Console, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    browser = Browser(tmp_path_factory.mktemp("chromium-profile"), console.url)
    try:
        yield browser
    finally:
        browser.quit()


def sign_in(browser: Browser, credential: str) -> None:
    """Through the sign-in form, by mouse; the test of the keyboard is in test_sign_in.py."""
    browser.open(ui("login"))
    browser.find("#credential").send_keys(credential)
    browser.submit('form[action$="login"] button')


@pytest.fixture
def signed_out(browser: Browser) -> Browser:
    """The module's browser without a session."""
    if browser.cookie() is not None:
        browser.open(ui())
        browser.submit("form[action$='logout'] button")
    assert browser.cookie() is None
    return browser


@pytest.fixture
def signed_in(browser: Browser, console: Console) -> Browser:
    """The module's browser with an admin's session."""
    if browser.cookie() is None:
        sign_in(browser, console.admin_token)
        assert browser.cookie() is not None, browser.driver.page_source
    browser.desktop()
    return browser


def ui(path: str = "") -> str:
    return UI + path
