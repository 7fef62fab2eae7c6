"""Chromium through Playwright, for the tests that drive a real browser.

Playwright cannot download its own browser here: it drives Debian's ``chromium`` from
PATH (``scripts/test`` installs it), with the flags that keep it off the network. A
module whose tests need it sets ``pytestmark = needs_chromium``: without chromium it is
skipped, unless ``AUDITMW_REQUIRE_BROWSER`` is set; then the ``browser`` fixture
(tests/conftest.py) fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, sync_playwright

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("AUDITMW_REQUIRE_BROWSER"),
    reason="Debian's chromium is not on PATH (scripts/test installs it: "
    "apt-get install chromium); set AUDITMW_REQUIRE_BROWSER=1 to fail instead",
)


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """Chromium, closed afterwards; without it (and with ``AUDITMW_REQUIRE_BROWSER`` set,
    or ``needs_chromium`` would have skipped the test) the test fails."""
    if CHROMIUM is None:
        pytest.fail("AUDITMW_REQUIRE_BROWSER is set but chromium is not on PATH")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh context (no cookies) whose actions wait 15 s at most; ``options``: more of
    ``Browser.new_context``'s."""
    context = browser.new_context(**options)
    context.set_default_timeout(15_000)
    return context


# Every Content-Security-Policy violation is sent to this process (reportViolation); the
# promise of each call resolves once this process has recorded it.
_REPORT_VIOLATIONS = """
window.__violationReports = [];
document.addEventListener("securitypolicyviolation", (event) => window.__violationReports.push(
    window.reportViolation(`${event.violatedDirective} ${event.blockedURI}`)));
"""
# Blink dispatches a violation's event in a task of its own, which the action that caused
# it posts to the page's networking task queue: it may still wait when the action returns.
# An idle callback runs only once no other task is waiting, so every event queued before
# has fired; then the promises say each report has been recorded. (An idle callback waits
# 10 s at most: a page that is never idle must not hang the test.)
_REPORTS_RECORDED = """() => new Promise((idle) => requestIdleCallback(idle, { timeout: 10000 }))
    .then(() => Promise.all(window.__violationReports || []))"""


@contextmanager
def watched_page(context: BrowserContext) -> Iterator[Page]:
    """A page of ``context`` (closed afterwards) that fails the test on any script error,
    dialog or breach of the page's Content-Security-Policy, up to the end of the block."""
    errors: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    context.expose_binding(
        "reportViolation", lambda _source, directive: errors.append(f"CSP: {directive}")
    )
    context.add_init_script(_REPORT_VIOLATIONS)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("dialog", on_dialog)
    try:
        yield page
        page.evaluate(_REPORTS_RECORDED)
    finally:
        context.close()
    assert errors == [], errors
