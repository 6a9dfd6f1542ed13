"""The machinery of the browser tests (tests/browser.py): Debian's Chromium and chromedriver,
which scripts/test.sh installs with apt-get when missing, and nothing Selenium would download;
every test that uses the browser is marked `browser` (README.md: `pytest -m browser`)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.browser import CHROMEDRIVER, CHROMIUM, DOC_IMAGES, DOCUMENTED, ROOT, Browser
from tests.console.conftest import backends


def test_the_test_script_installs_chromium_and_its_driver() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    for command, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        assert re.search(rf"^apt_ensure {command} {package}\b", script, re.MULTILINE)


@backends("embedded")
def test_the_browser_is_debians_chromium_through_its_driver(
    browser: Browser, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("browser"), "-m browser would not select it"
    assert browser.driver.service.path == str(CHROMEDRIVER)
    version = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert browser.driver.capabilities["browserVersion"] in version
    driver = browser.driver.capabilities["chrome"]["chromedriverVersion"].split()[0]
    assert (
        driver
        in subprocess.run(
            [str(CHROMEDRIVER), "--version"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_readme_shows_the_screenshots_the_tests_write() -> None:
    """README.md's console images are those `screenshot()` writes with
    BRIDGE_UPDATE_SCREENSHOTS=1 (tests/console/test_pages.py), and each is committed."""
    shown = set(
        re.findall(r"\(docs/images/console-([\w-]+)\.png\)", (ROOT / "README.md").read_text())
    )
    assert shown == set(DOCUMENTED)
    for name in DOCUMENTED:
        assert (DOC_IMAGES / f"console-{name}.png").stat().st_size > 10_000
