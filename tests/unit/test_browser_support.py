"""The browser tests' set-up (tests/support/browser.py): without Chromium and no way to install
it, a browser test fails under CI=true (a skip there would hide a dashboard never seen to load)
and is skipped elsewhere; with both binaries present nothing is installed."""

from __future__ import annotations

import pytest

from tests.support import browser


def no_browser_and_no_installer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def install() -> str:
        attempts.append("install")
        return "apt-get is missing"

    monkeypatch.setattr(browser, "_found", lambda candidates: None)
    monkeypatch.setattr(browser, "_install", install)
    return attempts


def test_without_chromium_a_ci_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = no_browser_and_no_installer(monkeypatch)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get is missing"):
        browser.chromium_and_driver()
    assert attempts == ["install"]


def test_without_chromium_elsewhere_the_test_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    no_browser_and_no_installer(monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get is missing"):
        browser.chromium_and_driver()


def test_present_binaries_are_used_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "_found", lambda candidates: f"/usr/bin/{candidates[0]}")
    monkeypatch.setattr(browser, "_install", lambda: pytest.fail("nothing to install"))
    assert browser.chromium_and_driver() == ("/usr/bin/chromium", "/usr/bin/chromedriver")
