"""Signing in to the console and out, in a real browser: with the keyboard alone; an API key
with the admin scope signs in too; a wrong credential, or a token without the admin scope, gets
an error and no session."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests
from selenium.webdriver.common.keys import Keys

from tests.browser import Browser
from tests.conftest import API_KEY
from tests.console.conftest import Console, backends, sign_in, ui

pytestmark = backends("embedded")  # the session's machinery is the same on both backends


def tab_until(browser: Browser, wanted: str, most: int = 15) -> list[str]:
    """Press Tab until the focused element matches the CSS selector `wanted`; the elements
    the focus went through on the way (their outer HTML), the wanted one last."""
    stops: list[str] = []
    for _ in range(most):
        browser.press(Keys.TAB)
        focused = browser.focused()
        stops.append(str(focused.get_attribute("outerHTML"))[:200])
        if browser.driver.execute_script(
            "return arguments[0].matches(arguments[1])", focused, wanted
        ):
            return stops
    raise AssertionError(f"{most} presses of Tab never reached {wanted}: {stops}")


def refused(browser: Browser, credential: str) -> None:
    """Signing in with `credential` shows the form again, with an error, and sets no cookie."""
    sign_in(browser, credential)
    assert browser.path.startswith(ui("login"))
    assert browser.has("#credential")
    error = browser.find("[role=alert], .flash[role=status]")
    assert error.is_displayed() and error.text.strip()
    assert browser.cookie() is None
    assert credential not in browser.driver.page_source


def test_an_operator_signs_in_and_out_with_the_keyboard_alone(
    signed_out: Browser, console: Console
) -> None:
    browser = signed_out
    browser.open(ui("jobs"))  # not signed in: to the sign-in page, which knows where to go back
    login = urlsplit(browser.path)
    assert login.path == ui("login")
    assert parse_qs(login.query)["next"] == [ui("jobs")]

    if browser.focused().get_attribute("id") != "credential":  # no autofocus: Tab to it
        tab_until(browser, "#credential")
    # Round the page's Tab order back to the field: the skip link comes just before it.
    stops = tab_until(browser, "#credential")
    assert len(stops) > 1 and 'href="#main"' in stops[-2], f"no skip link before it: {stops}"
    assert browser.find("#credential").accessible_name == "Admin token or API key"
    browser.press(console.admin_token, Keys.ENTER)
    browser.wait(lambda _: browser.path == ui("jobs"), message="Enter did not sign in")

    cookie = browser.cookie()
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == ui() and cookie["secure"] is False  # plain HTTP here
    assert "expiry" in cookie  # a lifetime of its own, not the browser's session

    tab_until(browser, "form[action$='logout'] button", most=40)
    browser.press(Keys.ENTER)
    browser.wait(lambda _: browser.path.startswith(ui("login")), message="Enter did not sign out")
    assert browser.cookie() is None
    # Forgotten by the server too: the old cookie opens nothing.
    old = requests.get(
        console.url + ui("jobs"),
        headers={"Cookie": f"bridge_console={cookie['value']}"},
        allow_redirects=False,
        timeout=30,
    )
    assert old.status_code == 303 and urlsplit(old.headers["Location"]).path.endswith("login")


def test_an_api_key_with_the_admin_scope_signs_in(signed_out: Browser, console: Console) -> None:
    browser = signed_out
    sign_in(browser, API_KEY)
    assert browser.path == ui()
    assert browser.cookie() is not None
    browser.submit("form[action$='logout'] button")
    assert browser.path.startswith(ui("login")) and browser.cookie() is None


def test_a_wrong_credential_shows_an_error_and_sets_no_cookie(
    signed_out: Browser, console: Console
) -> None:
    browser = signed_out
    refused(browser, "not-a-token-nor-a-key")
    refused(browser, console.admin_token[:-4] + "AAAA")  # a forged signature


def test_a_token_without_the_admin_scope_is_refused(signed_out: Browser, console: Console) -> None:
    browser = signed_out
    refused(browser, console.status_token)
