"""A real browser for the playground's tests and screenshots: Debian's Chromium, driven by Playwright.

Playwright's own browser download needs the internet, so it drives the system's `chromium` through
`executable_path`, headless, with the background services (updates, sync, network prefetch) switched off.
"""

from __future__ import annotations

from pathlib import Path

from testbed.servers import find_program

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> Path | None:
    return find_program("chromium")


def launch_chromium(playwright, executable: Path):
    """A headless Chromium browser of `playwright` (a started `sync_playwright()`)."""
    return playwright.chromium.launch(executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS))
