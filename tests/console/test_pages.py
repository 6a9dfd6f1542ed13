"""Every console page in a real browser, on a desktop and on a phone: labelled for screen
readers (every field and button has an accessible name, one `main`, the page's language), a
skip link, no control over another, no sideways scrolling at 390 px; and a screenshot of each (tests/browser.py:
`.artifacts/screenshots/`, and docs/images with BRIDGE_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

from tests.browser import PHONE, Browser
from tests.console.conftest import PAGES, Console, backends, eventually, ui

pytestmark = backends("embedded")  # the same pages on both backends; test_jobs.py runs both


@pytest.fixture(scope="module")
def job_id(console: Console) -> str:
    """Something on every page: finished jobs (one of them with a dead callback), a
    subscription, a job still running."""
    for n in range(4):
        console.submit("echo", [{"json": {"n": n, "name": f"customer {n}"}}])
    console.submit("sleep", [{"json": {}}], parameters={"seconds": 120})
    console.target.by_path["/gone"] = [410]
    shown = console.submit(
        "echo",
        [{"json": {"invoice": 1000 + n, "total": 12.5 * n}} for n in range(3)],
        callback_url=console.target.url("/gone"),
    )
    console.job_in(shown, "completed")
    eventually(lambda: console.api("GET", "/admin/dead-letters").json()["dead_letters"])
    created = console.api(
        "POST",
        "/api/v1/subscriptions",
        json={"url": console.target.url("/events"), "events": ["workflow.failed"]},
    )
    assert created.status_code == 201, created.text
    return shown


def assert_accessible(browser: Browser) -> None:
    where = browser.path
    assert browser.find("html").get_attribute("lang"), f"{where}: no html[lang]"
    assert len(browser.find_all("main, [role=main]")) == 1, f"{where}: not one main"
    assert browser.has("main#main"), f"{where}: no main#main"
    assert browser.has("a[href='#main']"), f"{where}: no skip link"
    unnamed = unnamed_controls(browser)
    assert not unnamed, f"{where}: no accessible name: {unnamed}"


def unnamed_controls(browser: Browser) -> list[str]:
    """The shown fields and buttons without an accessible name — read again when the live
    part is re-rendered meanwhile (its elements replaced under the test)."""
    controls = "input:not([type=hidden]), select, textarea, button"
    for _ in range(5):
        try:
            return [
                str(element.get_attribute("outerHTML"))[:200]
                for element in browser.find_all(controls)
                if element.is_displayed() and not element.accessible_name.strip()
            ]
        except StaleElementReferenceException:
            continue
        except WebDriverException as exc:  # how Chromium says stale for accessible_name
            if "does not belong to the document" not in str(exc.msg):
                raise
    raise AssertionError(f"{browser.path} kept changing")


def assert_no_control_overlaps(browser: Browser) -> None:
    """No field, button or link lies over another: each can be seen and clicked."""
    overlaps = browser.driver.execute_script(
        "const shown = [...document.querySelectorAll("
        "  'input:not([type=hidden]), select, textarea, button, a[href]')]"
        "  .filter(e => e.checkVisibility())"
        "  .map(e => [e, e.getBoundingClientRect()]);"
        "const found = [];"
        "for (const [i, [a, r]] of shown.entries()) for (const [b, q] of shown.slice(i + 1)) {"
        "  if (a.contains(b) || b.contains(a)) continue;"
        "  const w = Math.min(r.right, q.right) - Math.max(r.left, q.left);"
        "  const h = Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top);"
        "  if (w > 1 && h > 1) found.push([a.outerHTML.slice(0, 100), b.outerHTML.slice(0, 100)]);"
        "}"
        "return found.slice(0, 5);"
    )
    assert not overlaps, f"{browser.path}: controls over each other: {overlaps}"


def assert_fits_a_phone(browser: Browser) -> None:
    """No sideways scrolling on a phone. A mobile browser widens its layout viewport to fit
    what sticks out (and shrinks the page), so `innerWidth` must stay the phone's too."""
    assert browser.has("meta[name=viewport][content*='width=device-width']"), browser.path
    width, inner, wide = browser.driver.execute_script(
        "const edge = arguments[0];"
        "const spills = e => getComputedStyle(e).overflowX === 'visible'"
        "  && e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1;"  # text sticking out
        "const out = [...document.querySelectorAll('body *')]"
        "  .filter(e => e.getBoundingClientRect().right > edge + 1 || spills(e));"
        "const wide = out.filter(e => !out.some(o => o !== e && e.contains(o)))"  # the culprits
        "  .map(e => e.outerHTML.slice(0, 120));"
        "return [document.documentElement.scrollWidth, window.innerWidth, wide.slice(0, 5)];",
        PHONE[0],
    )
    assert inner == PHONE[0] and width <= inner, (
        f"{browser.path}: {max(width, inner)} px wide on a {PHONE[0]} px phone: {wide}"
    )


# The pages, an error page (a link to a job since purged, say) and a form's problems, with
# their status.
SHOWN = {**PAGES, "missing-job": "jobs/" + "0" * 32, "bad-filter": "jobs?status=bogus&since=x"}
STATUS = {"missing-job": 404, "bad-filter": 422}


def assert_no_console_errors(browser: Browser, *, status: int = 200) -> None:
    """Nothing the page's console reported since the last look: no script error, no load that
    failed, no Content Security Policy violation (an inline script or style, say). An error
    page's own status (`status`) is the one failed load Chromium reports of it."""
    own = f"{browser.driver.current_url} - Failed to load resource: the server responded with a "
    errors = [e for e in browser.console_errors() if not e.startswith(f"{own}status of {status} ")]
    assert not errors, f"{browser.path}: {errors}"


@pytest.mark.parametrize("name", SHOWN)
def test_each_page_is_labelled_and_fits_a_phone(signed_in: Browser, job_id: str, name: str) -> None:
    browser = signed_in
    browser.console_errors()  # what earlier tests' pages said is theirs
    browser.open(ui(SHOWN[name].format(job=job_id)))
    assert_no_console_errors(browser, status=STATUS.get(name, 200))
    assert_accessible(browser)
    assert_no_control_overlaps(browser)
    browser.screenshot(name)
    browser.phone()
    try:
        browser.driver.refresh()
        assert_no_console_errors(browser, status=STATUS.get(name, 200))
        assert_accessible(browser)
        assert_fits_a_phone(browser)
        assert_no_control_overlaps(browser)
        if name in ("overview", "job"):
            browser.screenshot(f"{name}-phone")
    finally:
        browser.desktop()


def test_the_sign_in_page_is_labelled_and_fits_a_phone(signed_in: Browser) -> None:
    browser = signed_in
    browser.console_errors()
    browser.submit("form[action$='logout'] button")
    assert browser.path.startswith(ui("login"))
    assert_no_console_errors(browser)
    assert_accessible(browser)
    browser.screenshot("login")
    browser.phone()
    try:
        browser.driver.refresh()
        assert_no_console_errors(browser)
        assert_fits_a_phone(browser)
    finally:
        browser.desktop()


def test_an_inline_script_is_refused_and_reported(signed_in: Browser) -> None:
    """The check above is no blind one: a script written into the page (as an injection would)
    is refused by the CSP, and the refusal is among what the console reported."""
    browser = signed_in
    browser.open(ui())
    browser.console_errors()
    browser.driver.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'window.injected = true';"
        "document.head.append(s);"
    )
    errors = eventually(browser.console_errors, message="no CSP violation reported")
    assert any("Content Security Policy" in error and "inline" in error for error in errors), errors
    assert browser.driver.execute_script("return window.injected") is None
