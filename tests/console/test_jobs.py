"""The console's jobs, dead letters and drain, in a real browser, on both backends: a job sent
through the JSON API appears live and its page shows its items, events and trace id; a running
job is cancelled and a failed one retried from its page; a dead callback is replayed from the
dead letters page; a processor is tried on sample items; the drain page drains this instance and
serves again; a workflow-limited token sees its workflows' jobs only."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import requests
from selenium.webdriver.common.by import By

from tests.browser import Browser
from tests.console.conftest import BOTH, Console, backends, eventually, sign_in, ui

pytestmark = backends(*BOTH)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def dead_letter(console: Console, job_id: str) -> dict[str, Any]:
    """The dead letter of the job's callback, once there is one."""

    def found() -> list[dict[str, Any]]:
        answer = console.api("GET", "/admin/dead-letters")
        assert answer.status_code == 200, answer.text
        return [d for d in answer.json()["dead_letters"] if d["job_id"] == job_id]

    [letter] = eventually(found, message=f"the callback of {job_id} never became a dead letter")
    return letter


def section(browser: Browser, heading: str) -> str:
    """The text of the page's section whose heading says `heading`."""
    for part in browser.find_all("main section"):
        titles = part.find_elements(By.CSS_SELECTOR, "h2")
        if titles and heading in titles[0].text.lower():
            return str(part.text)
    raise AssertionError(f"no section about {heading!r} on {browser.path}")


def action_button(browser: Browser, form_action: str, value: str) -> str:
    """The button that posts `action=value` to the form ending in `form_action`."""
    form = f"form[action$='{form_action}']"
    own = f"{form} button[name=action][value={value}]"
    return own if browser.has(own) else f"{form}:has(input[name=action][value={value}]) button"


def test_a_job_sent_through_the_api_appears_live_with_its_items_and_events(
    signed_in: Browser, console: Console
) -> None:
    browser = signed_in
    browser.open(ui("jobs"))
    browser.driver.execute_script("window.sameDocument = true")  # gone if the page reloads
    marker = unique("item")
    items = [{"json": {"marker": marker, "n": n}} for n in range(3)]
    job_id = console.submit("echo", items)

    link = f"#live a[href$='jobs/{job_id}']"
    browser.wait(lambda _: browser.has(link), message=f"job {job_id} did not appear live")
    assert browser.driver.execute_script("return window.sameDocument === true"), "reloaded"
    record = console.job_in(job_id, "completed")

    browser.submit(link)
    assert browser.path == ui(f"jobs/{job_id}")
    assert record["trace_id"] and record["trace_id"] in browser.text("main")
    for heading in ("input", "output"):
        shown = section(browser, heading)
        assert shown.count(marker) == len(items), f"not every {heading} item shown: {shown}"
    timeline = section(browser, "events")
    at = [timeline.find(event) for event in ("queued", "started", "completed")]
    assert -1 not in at and at in (sorted(at), sorted(at, reverse=True)), timeline


# Injected before a page's own script (through DevTools, so the CSP does not apply): the
# page's EventSource connects only when the test calls `releaseStream()` — a slow connection.
HOLD_STREAM = """
const RealEventSource = window.EventSource;
let release;
const released = new Promise(resolve => { release = resolve; });
window.releaseStream = () => release();
window.EventSource = function (url, options) {
  const listeners = [];
  released.then(() => {
    const source = new RealEventSource(url, options);
    for (const [type, listener] of listeners) source.addEventListener(type, listener);
  });
  return { addEventListener: (type, listener) => listeners.push([type, listener]) };
};
"""


def test_a_job_sent_before_the_page_had_its_stream_still_appears(
    signed_in: Browser, console: Console
) -> None:
    """A page's event stream connects a moment after the page is drawn; what happens in
    between must still reach it (here the moment is made long)."""
    browser = signed_in
    held = browser.driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_STREAM}
    )
    try:
        browser.open(ui("jobs"))
    finally:
        browser.driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": held["identifier"]}
        )
    job_id = console.submit("echo", [{"json": {"n": 1}}])
    console.job_in(job_id, "completed")
    browser.driver.execute_script("window.releaseStream()")
    link = f"#live a[href$='jobs/{job_id}']"
    browser.wait(lambda _: browser.has(link), message=f"job {job_id} never appeared")


def test_a_running_job_is_cancelled_from_its_page(signed_in: Browser, console: Console) -> None:
    browser = signed_in
    job_id = console.submit("sleep", [{"json": {}}], parameters={"seconds": 120})
    console.job_in(job_id, "running")
    browser.open(ui(f"jobs/{job_id}"))
    browser.submit("form[action$='cancel'] button", confirm=True)
    assert browser.flash()
    console.job_in(job_id, "cancelled")
    browser.open(ui(f"jobs/{job_id}"))
    assert "cancelled" in browser.text().lower()
    assert not browser.has("form[action$='cancel'] button")  # nothing left to cancel


def test_a_failed_job_is_retried_from_its_page(signed_in: Browser, console: Console) -> None:
    browser = signed_in
    workflow = unique("wf-retry")
    # `flaky` fails its first run (of this key) and the daemon makes one run of a job.
    failed = console.submit(
        "flaky", [{"json": {"key": workflow}}], parameters={"failures": 1}, workflow_id=workflow
    )
    console.job_in(failed, "failed")
    browser.open(ui(f"jobs/{failed}"))
    browser.submit("form[action$='retry'] button", confirm=True)
    assert browser.flash()

    def retried() -> str | None:
        answer = console.api("GET", f"/api/v1/status/{workflow}")
        ids = [job["job_id"] for job in answer.json()["jobs"]]
        return next((job_id for job_id in ids if job_id != failed), None)

    new: str = eventually(retried, message="no new job after the retry")
    assert new in browser.path or new in browser.text(), "the page does not show the new job"
    console.job_in(new, "completed")
    assert console.job(failed)["status"] == "failed"  # the old job stays as it was


def test_a_dead_callback_is_replayed_from_the_dead_letters_page(
    signed_in: Browser, console: Console
) -> None:
    browser = signed_in
    path = f"/{unique('gone')}"
    console.target.by_path[path] = [410]  # gone: no retry, a dead letter at once; then 200
    job_id = console.submit("echo", [{"json": {"n": 1}}], callback_url=console.target.url(path))
    letter = dead_letter(console, job_id)

    browser.open(ui("dead-letters"))
    replay = f"form[action$='dead-letters/{letter['id']}/replay'] button"
    assert job_id in browser.text()
    browser.submit(replay, confirm=True)
    assert browser.flash()

    calls = eventually(lambda: console.received(path)[1:] and console.received(path))
    assert calls[1].headers["webhook-id"] == letter["id"]
    assert orjson.loads(calls[1].body)["job_id"] == job_id
    eventually(lambda: console.job(job_id)["callback"]["state"] == "delivered")
    browser.open(ui("dead-letters"))
    assert not browser.has(f"form[action$='dead-letters/{letter['id']}/replay']")

    # Two more, replayed at once.
    more = [f"/{unique('gone')}" for _ in range(2)]
    for gone in more:
        console.target.by_path[gone] = [410]
        job_id = console.submit("echo", [{"json": {"n": 2}}], callback_url=console.target.url(gone))
        dead_letter(console, job_id)
    browser.open(ui("dead-letters"))
    browser.submit("form[action$='dead-letters/replay'] button", confirm=True)
    assert browser.flash()

    def replayed() -> bool:
        return all(len(console.received(gone)) == 2 for gone in more)

    eventually(replayed, message="not every dead letter was replayed")


def test_a_processor_is_tried_on_sample_items_from_its_page(
    signed_in: Browser, console: Console
) -> None:
    browser = signed_in
    browser.open(ui("processors"))
    browser.submit("main a[href$='processors/repeat']")
    for field, value in (("items", '[{"json": {"name": "Ada"}}]'), ("parameters", '{"times": 2}')):
        browser.find(f"#{field}").clear()
        browser.find(f"#{field}").send_keys(value)
    browser.submit("form[action$='repeat/try'] button")
    outcome = section(browser, "outcome")
    assert outcome.count("Ada") == 2 and "copy" in outcome, outcome
    job = browser.find("[role=status] a[href*='jobs/']").text
    assert console.job(job)["output_count"] == 2


def test_the_drain_page_drains_and_then_serves_again(signed_in: Browser, console: Console) -> None:
    browser = signed_in
    assert console.ready() == 200
    try:
        browser.open(ui("drain"))
        browser.submit(action_button(browser, "drain", "drain"), confirm=True)
        assert browser.flash()
        eventually(lambda: console.ready() == 503, message="/ready is not 503 after the drain")

        browser.open(ui("drain"))
        browser.submit(action_button(browser, "drain", "undrain"), confirm=True)
        assert browser.flash()
        eventually(lambda: console.ready() == 200, message="/ready is not 200 after undrain")
    finally:
        console.api("DELETE", "/admin/drain")  # the module's other tests need a serving daemon


def test_a_workflow_limited_token_sees_only_its_workflows_jobs(
    signed_out: Browser, console: Console
) -> None:
    browser = signed_out
    mine = console.submit("echo", [{"json": {"n": 1}}], workflow_id=unique("wf-limited"))
    other_workflow = unique("wf-other")
    other = console.submit("echo", [{"json": {"n": 1}}], workflow_id=other_workflow)
    console.job_in(mine, "completed")
    console.job_in(other, "completed")
    sign_in(browser, console.mint("admin", workflows=["wf-limited-*"]))
    try:
        browser.open(ui("jobs"))
        assert browser.has(f"#live a[href$='jobs/{mine}']")
        assert not browser.has(f"a[href$='jobs/{other}']")
        assert [link.text for link in browser.find_all("nav a")] == ["Jobs", "Processors"]
        cookie = browser.cookie()
        assert cookie is not None
        for page in (f"jobs/{other}", "", "dead-letters", "subscriptions", "drain"):
            answer = requests.get(
                console.url + ui(page),
                headers={"Cookie": f"bridge_console={cookie['value']}"},
                allow_redirects=False,
                timeout=30,
            )
            assert answer.status_code in (403, 404), f"{page}: {answer.status_code}"
            assert other_workflow not in answer.text
    finally:
        browser.submit("form[action$='logout'] button")
