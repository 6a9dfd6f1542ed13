"""Every console page in a real browser, on a desktop and on a phone: labelled for screen
readers (every field and button has an accessible name, one `main`, the page's language), a
skip link first, no sideways scrolling at 390 px; and a screenshot of each (tests/browser.py:
`.artifacts/screenshots/`, and docs/images with BRIDGE_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import pytest

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
    controls = "input:not([type=hidden]), select, textarea, button"
    unnamed = [
        str(element.get_attribute("outerHTML"))[:200]
        for element in browser.find_all(controls)
        if element.is_displayed() and not element.accessible_name.strip()
    ]
    assert not unnamed, f"{where}: no accessible name: {unnamed}"


def assert_fits_a_phone(browser: Browser) -> None:
    width, inner = browser.driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert inner == PHONE[0], f"{browser.path}: laid out {inner} px wide (a viewport meta tag?)"
    assert width <= inner, f"{browser.path}: {width} px wide on a {inner} px phone"


@pytest.mark.parametrize("name", PAGES)
def test_each_page_is_labelled_and_fits_a_phone(signed_in: Browser, job_id: str, name: str) -> None:
    browser = signed_in
    browser.open(ui(PAGES[name].format(job=job_id)))
    assert_accessible(browser)
    browser.screenshot(name)
    browser.phone()
    try:
        browser.driver.refresh()
        assert_accessible(browser)
        assert_fits_a_phone(browser)
        if name in ("overview", "job"):
            browser.screenshot(f"{name}-phone")
    finally:
        browser.desktop()


def test_the_sign_in_page_is_labelled_and_fits_a_phone(signed_in: Browser) -> None:
    browser = signed_in
    browser.submit(browser.find("form[action$='logout'] button"))
    assert browser.path.startswith(ui("login"))
    assert_accessible(browser)
    browser.screenshot("login")
    browser.phone()
    try:
        browser.driver.refresh()
        assert_fits_a_phone(browser)
    finally:
        browser.desktop()
