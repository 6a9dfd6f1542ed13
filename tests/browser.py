"""Debian's headless Chromium driven by Selenium, for the console's tests (tests/console/).

scripts/test.sh installs the `chromium` and `chromium-driver` packages. Both binaries are named
here, so Selenium Manager has nothing to find and downloads nothing (SE_OFFLINE makes sure).

A `Browser` records every URL it requested (redirects, scripts, the event stream included, from
Chromium's network log), so a test can show no secret ever went into one, and reads what the
pages reported on the console (`console_errors`: a script's error, a CSP violation). `screenshot(name)`
writes `.artifacts/screenshots/<name>.png`; with BRIDGE_UPDATE_SCREENSHOTS=1 the pictures the
documentation shows (`DOCUMENTED`) also go to `docs/images/console-<name>.png`.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never a download

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
DOC_IMAGES = ROOT / "docs" / "images"
DESKTOP = (1280, 900)
PHONE = (390, 844)  # an iPhone 12 to 15's viewport in CSS pixels
WAIT_S = 20  # generous: a loaded 2-core machine
DOCUMENTED = ("overview", "job")  # the screenshots in docs/images (README.md shows them)

T = TypeVar("T")


def missing() -> str | None:
    """Why no browser can start here, or None."""
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not binary.exists():
            return f"{binary} is missing: run scripts/test.sh, which installs {package}"
    return None


class Browser:
    """One headless Chromium on a fresh profile, its viewport DESKTOP until `phone()`."""

    def __init__(self, profile: Path, base_url: str) -> None:
        if (why := missing()) is not None:
            raise RuntimeError(why)
        self.base_url = base_url.rstrip("/")
        self.requested: list[str] = []  # every URL requested so far, in order
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            # The tests run as root here (CI containers too), and Chromium's sandbox refuses to
            # start as root; the browser only ever loads the test daemon's own pages.
            "--no-sandbox",
            "--disable-dev-shm-usage",  # a container's /dev/shm is small: Chromium would crash
            f"--user-data-dir={profile}",
            f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
            "--no-first-run",
            "--disable-background-networking",  # no calls home: the test sees only its own URLs
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",  # screenshots the width of the page
        ):
            options.add_argument(argument)
        # The network log (`urls`) and the console's (`console_errors`: script errors, CSP
        # violations, failed loads).
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        # A confirm() is answered by the test, never by the driver behind its back.
        options.unhandled_prompt_behavior = "ignore"
        self.driver = webdriver.Chrome(
            options=options,
            service=Service(str(CHROMEDRIVER), log_output=os.devnull),
        )
        self.desktop()

    def quit(self) -> None:
        self.driver.quit()

    # -- where the browser is

    def open(self, path: str) -> None:
        """Load a path of the daemon (`/admin/ui/jobs`) and wait for the page, which must be
        one (HTML), not an error's JSON body."""
        self.driver.get(self.base_url + path)
        kind, body = self.driver.execute_script(
            "return [document.contentType, document.body ? document.body.innerText : '']"
        )
        if kind != "text/html":
            raise AssertionError(f"{path} is no page but {kind}: {body[:500]}")

    @property
    def path(self) -> str:
        """The current URL without the daemon's address."""
        url: str = self.driver.current_url
        return url.removeprefix(self.base_url)

    def urls(self) -> list[str]:
        """Every URL requested since the browser started (the network log, read out)."""
        for entry in self.driver.get_log("performance"):  # type: ignore[no-untyped-call]
            message = orjson.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        return self.requested

    def console_errors(self) -> list[str]:
        """What the page's console reported since this was last read: errors (a script's, a
        load that failed) and any Content Security Policy violation, whatever its level."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
        ]

    # -- viewport and pictures

    def desktop(self) -> None:
        self._viewport(*DESKTOP, mobile=False)

    def phone(self) -> None:
        """A phone's viewport: `mobile` makes the page's <meta name="viewport"> count, as on a
        phone (without one a phone lays a page out 980 px wide)."""
        self._viewport(*PHONE, mobile=True)

    def _viewport(self, width: int, height: int, *, mobile: bool) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self, name: str) -> Path:
        """The whole page as `.artifacts/screenshots/<name>.png` (and in docs/images when
        BRIDGE_UPDATE_SCREENSHOTS=1 and the documentation shows it)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {  # the whole page, not only what the viewport shows
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        if name in DOCUMENTED and os.environ.get("BRIDGE_UPDATE_SCREENSHOTS") == "1":
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOC_IMAGES / f"console-{name}.png")
        return path

    # -- waiting and acting

    def wait(
        self,
        condition: Callable[[Any], T],
        timeout: float = WAIT_S,
        message: str = "",
        ignored: tuple[type[Exception], ...] = (),
    ) -> T:
        """Poll `condition(driver)` until it returns something truthy (and return that)."""
        return WebDriverWait(
            self.driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored
        ).until(condition, message)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def has(self, css: str) -> bool:
        try:
            self.find(css)
        except NoSuchElementException:
            return False
        return True

    def text(self, css: str = "main") -> str:
        text: str = self.find(css).text
        return text

    def submit(self, css: str, *, confirm: bool = False) -> None:
        """Click the button (or link) `css` finds and wait for the page it leads to. With
        `confirm`, the button (or its form) must say what will happen (`data-confirm`) and the
        page's confirm() must ask that first; the test accepts. Found afresh when the live part
        of the page was re-rendered between finding and clicking."""
        page = self._mark()
        for attempt in range(3):
            try:
                button = self.find(css)
                question = self.driver.execute_script(
                    "const b = arguments[0];"
                    "return b.dataset.confirm || (b.form && b.form.dataset.confirm)",
                    button,
                )
                button.click()
            except StaleElementReferenceException:
                if attempt == 2:
                    raise
                continue
            break
        if confirm:
            assert question, f"no data-confirm on {css}"
            alert = self.wait(expected_conditions.alert_is_present(), message="no confirm()")
            assert alert and alert.text == question
            alert.accept()
        self.wait(
            lambda _: self.driver.execute_script("return window.browserTestPage") != page,
            message="the page did not change",
            ignored=(WebDriverException,),  # between two pages the driver may answer errors
        )

    def _mark(self) -> str:
        """Tag the current page, so that `submit` can tell when another has replaced it
        (Selenium's staleness check meets Chromium's inspector errors while a page unloads)."""
        token = uuid.uuid4().hex
        self.driver.execute_script("window.browserTestPage = arguments[0]", token)
        return token

    def press(self, *keys: str) -> None:
        """Keys typed into whatever has the focus, as a person at the keyboard would."""
        ActionChains(self.driver).send_keys(*keys).perform()

    def focused(self) -> WebElement:
        return self.driver.switch_to.active_element

    def flash(self) -> str:
        """The outcome a page shows after a POST (its `role="status"` flash)."""
        return self.wait(lambda _: self.text(".flash[role=status]"), message="no flash")

    def cookie(self, name: str = "bridge_console") -> dict[str, Any] | None:
        cookie: dict[str, Any] | None = self.driver.get_cookie(name)
        return cookie

    def storage(self) -> dict[str, dict[str, str]]:
        """Everything the page's origin keeps in localStorage and sessionStorage."""
        stored: dict[str, dict[str, str]] = self.driver.execute_script(
            "const dump = s => Object.fromEntries(Object.keys(s).map(k => [k, s.getItem(k)]));"
            "return {local: dump(localStorage), session: dump(sessionStorage)};"
        )
        return stored

    def fetch(self, method: str, path: str, form: dict[str, str]) -> int:
        """A request from the page itself (its origin, its cookie), as a script on it could
        send; the answer's status, or 0 for a redirect (not followed: fetch's own way)."""
        status: int = self.driver.execute_async_script(
            "const [method, url, form, done] = arguments;"
            "fetch(url, {method, body: new URLSearchParams(form), redirect: 'manual',"
            " credentials: 'same-origin'})"
            ".then(r => done(r.status),"
            " e => done(String(e)));",
            method,
            self.base_url + path,
            form,
        )
        return status
