"""The console's guards, in a real browser: a POST without the session's CSRF token is refused
and changes nothing; the session cookie opens nothing on the JSON API; no credential in any URL
the browser requested, any page, its storage or its cookies; every answer carries the strict
Content-Security-Policy and the other security headers."""

from __future__ import annotations

from urllib.parse import unquote, urljoin

import requests

from tests.browser import Browser
from tests.conftest import API_KEY
from tests.console.conftest import (
    CSP,
    PAGES,
    SECURITY_HEADERS,
    Console,
    backends,
    sign_in,
    ui,
)

pytestmark = backends("embedded")  # the guards do not depend on the backend


def session(browser: Browser) -> dict[str, str]:
    """Headers that carry the browser's session cookie, for a plain HTTP client."""
    cookie = browser.cookie()
    assert cookie is not None
    return {"Cookie": f"bridge_console={cookie['value']}"}


def directives(policy: str) -> dict[str, set[str]]:
    parsed = (part.split() for part in policy.split(";") if part.strip())
    return {name: set(sources) for name, *sources in parsed}


def assert_secured(answer: requests.Response) -> None:
    where = f"{answer.request.method} {answer.url} ({answer.status_code})"
    assert directives(answer.headers.get("Content-Security-Policy", "")) == directives(CSP), where
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name, "").lower() == value.lower(), f"{where}: {name}"


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    signed_in: Browser, console: Console
) -> None:
    browser = signed_in
    job_id = console.submit("sleep", [{"json": {}}], parameters={"seconds": 120})
    browser.open(ui(f"jobs/{job_id}"))
    cancel = ui(f"jobs/{job_id}/cancel")

    # From the page's own origin, with its cookie, as an injected script could.
    assert browser.fetch("POST", cancel, {}) == 403
    assert browser.fetch("POST", ui("drain"), {"action": "drain"}) == 403
    # With the cookie and a forged token, or none; and without the cookie.
    cookie = session(browser)
    for form, headers in (
        ({"action": "drain", "csrf": "forged"}, cookie),
        ({"action": "drain"}, cookie),
        ({"action": "drain"}, {}),
    ):
        answer = requests.post(
            console.url + ui("drain"), data=form, headers=headers, allow_redirects=False, timeout=30
        )
        assert answer.status_code == 403, (form, headers, answer.status_code)
    assert console.ready() == 200
    assert console.job(job_id)["status"] in ("queued", "running")

    # The page's own token does it: the refusals above were for want of it.
    token = browser.find("form[action$='cancel'] input[name=csrf]").get_attribute("value")
    done = requests.post(
        console.url + cancel,
        data={"csrf": token},
        headers=cookie,
        allow_redirects=False,
        timeout=30,
    )
    assert done.status_code == 303
    console.job_in(job_id, "cancelled")


def test_the_session_cookie_opens_nothing_on_the_json_api(
    signed_in: Browser, console: Console
) -> None:
    cookie = session(signed_in)
    job_id = console.submit("echo", [{"json": {"n": 1}}])
    for method, path in (
        ("GET", "/admin/status"),
        ("GET", "/admin/dead-letters"),
        ("GET", "/admin/jobs"),
        ("POST", "/admin/drain"),
        ("POST", f"/admin/jobs/{job_id}/retry"),
        ("GET", f"/api/v1/workflow/status/{job_id}"),
        ("GET", "/api/v1/processors"),
        ("GET", "/api/v1/subscriptions"),
        ("POST", "/api/v1/workflow/execute"),
    ):
        answer = requests.request(
            method, console.url + path, headers=cookie, json={}, allow_redirects=False, timeout=30
        )
        assert answer.status_code == 401, f"{method} {path}: {answer.status_code}"
    assert console.ready() == 200


def test_no_credential_in_any_url_page_storage_or_cookie(
    signed_out: Browser, console: Console
) -> None:
    browser = signed_out
    job_id = console.submit("echo", [{"json": {"n": 1}}])
    console.job_in(job_id, "completed")
    for credential in (console.admin_token, API_KEY):
        sign_in(browser, credential)
        secrets = {credential, *credential.split(".")[1:]}  # a JWT's payload and signature too
        for page in PAGES.values():
            browser.open(ui(page.format(job=job_id)))
            source = browser.driver.page_source
            assert not [s for s in secrets if s in source], f"a credential in {page}"
        stored = str(browser.storage())
        cookies = str(browser.driver.get_cookies())
        for secret in secrets:
            assert secret not in stored and secret not in cookies
        browser.submit("form[action$='logout'] button")
    urls = browser.urls()
    assert any(url.endswith(ui("events")) or ui("events") in url for url in urls), urls
    leaked = [
        url
        for url in urls
        for secret in (console.admin_token, API_KEY)
        if secret in url or secret in unquote(url)
    ]
    assert not leaked


def test_every_console_answer_carries_the_security_headers(
    signed_in: Browser, console: Console
) -> None:
    cookie = session(signed_in)
    job_id = console.submit("echo", [{"json": {"n": 1}}])
    console.job_in(job_id, "completed")

    def get(path: str, headers: dict[str, str]) -> requests.Response:
        return requests.get(console.url + path, headers=headers, allow_redirects=False, timeout=30)

    for page in PAGES.values():
        answer = get(ui(page.format(job=job_id)), cookie)
        assert answer.status_code == 200, f"{page}: {answer.status_code}"
        assert_secured(answer)
    assets = {
        urljoin(signed_in.driver.current_url, str(element.get_attribute(attribute)))
        for css, attribute in (("link[rel=stylesheet]", "href"), ("script[src]", "src"))
        for element in signed_in.find_all(css)
    }
    assert assets, "no stylesheet nor script"
    for asset in assets:
        answer = get(asset.removeprefix(console.url), cookie)
        assert answer.status_code == 200
        assert answer.headers.get("X-Content-Type-Options") == "nosniff"
    assert_secured(get(ui("login"), {}))  # the sign-in page
    assert_secured(get(ui("jobs"), {}))  # not signed in: the way to it (303)
    refused = requests.post(console.url + ui("drain"), data={}, allow_redirects=False, timeout=30)
    assert refused.status_code == 403
    assert_secured(refused)
