"""Real headless Chromium for browser tests: Debian's `chromium` and `chromium-driver`, installed
with apt-get when missing (as root, or through sudo without a password). When they cannot be
installed the test is skipped on a developer's machine and fails under CI=true, where a
skipped browser test would hide a dashboard nobody has seen load."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT_SECONDS = 600
# Where Debian's packages put them.
CHROMIUM_PATHS = ("chromium", "/usr/bin/chromium")
DRIVER_PATHS = ("chromedriver", "/usr/bin/chromedriver")


def _found(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def _installer() -> list[str] | None:
    """The command prefix that may run apt-get here, or None."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def _install() -> str | None:
    """Install the packages; None when done, else why not."""
    prefix = _installer()
    if prefix is None:
        return "apt-get is missing, or this user may not run it (not root, no password-less sudo)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [*prefix, "apt-get", "update", "-q"],
        [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT_SECONDS)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{' '.join(command)} exited {done.returncode}: {' / '.join(tail)}"
    return None


def chromium_and_driver() -> tuple[str, str]:
    """Paths of chromium and its chromedriver, installing them first if missing; skips the
    test when they cannot be had, or fails it under CI=true."""
    chromium, driver = _found(CHROMIUM_PATHS), _found(DRIVER_PATHS)
    if chromium and driver:
        return chromium, driver
    problem = _install()
    chromium, driver = _found(CHROMIUM_PATHS), _found(DRIVER_PATHS)
    if chromium and driver:
        return chromium, driver
    reason = f"headless Chromium is not available: {problem or 'installed, yet chromium or chromedriver is missing'}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def headless_chromium(width: int = 1360, height: int = 1000) -> Iterator[Any]:
    """A selenium WebDriver on headless Chromium, its console kept (``driver.get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = chromium_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def save_full_page(driver: Any, path: Path, width: int = 1360) -> None:
    """A screenshot of the whole page: the viewport made as tall as the document (the window
    size of headless Chromium does not grow past the screen's), then put back."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": width, "height": max(height, 600), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
