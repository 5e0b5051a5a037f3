"""Headless Chromium for the console's browser tests: Debian's ``chromium`` and
``chromium-driver`` through Selenium, found on ``PATH``; Selenium Manager is never asked (it
would download a driver), so a missing browser is a clear failure, not a download."""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

BROWSERS = ("chromium", "chromium-browser")
WINDOW = (1280, 800)
MISSING = (
    "the console's browser tests need Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver): {what} not found on PATH"
)


def chromium_paths() -> tuple[str, str]:
    """The Chromium binary and its chromedriver; RuntimeError naming the missing one."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        what = " and ".join(
            name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path
        )
        raise RuntimeError(MISSING.format(what=what))
    return browser, driver


def start_chromium(profile: Path, log: Path) -> webdriver.Chrome:
    """A headless Chromium at the fixed window size, its profile in ``profile`` and the
    driver's log in ``log``; only loopback traffic (no proxy)."""
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    service = Service(executable_path=driver, log_output=str(log))
    chrome = webdriver.Chrome(service=service, options=options)
    # Headless Chromium keeps room for a window frame it does not draw: the page gets the
    # fixed size exactly from the DevTools protocol (the screenshots' size).
    chrome.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
    )
    chrome.set_page_load_timeout(30)
    return chrome
