"""`make screenshots`: a picture of each playground panel after a real request, for the README.

Serves the tiny models (built offline into a scratch BentoML home) behind a gateway with an API key, drives
the page in Debian's Chromium as a person would (key, prompt, voice, a dropped-in file), and writes
`docs/screenshots/{image,speech,caption}.png` at desktop width and `phone.png` at 375 px. The tiny models'
image is noise and their caption gibberish; the page around them is what the pictures show.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from testbed.browser import chromium_path, launch_chromium
from testbed.serving import REPO_ROOT, Server, base_env, import_tiny_models

KEY = "playground-screenshots-key"
SAILBOAT = REPO_ROOT / "samples" / "sailboat.jpg"
FLOW_TIMEOUT_MS = 180_000


def finish(page, panel: str) -> None:
    """Wait until the panel's request is over; stop on an error (a screenshot of it would mislead)."""
    page.locator(f"#{panel}-status[data-kind=done], #{panel}-status[data-kind=error]").wait_for()
    status = page.locator(f"#{panel}-status")
    if status.get_attribute("data-kind") == "error":
        raise SystemExit(f"screenshots: the {panel} panel answered an error: {status.text_content()}")


def take(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, chromium_path())
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page.set_default_timeout(FLOW_TIMEOUT_MS)
        page.goto(url)
        page.get_by_label("API key", exact=True).fill(KEY)
        page.get_by_label("API key", exact=True).press("Tab")

        page.get_by_label("Prompt", exact=True).fill("a sailboat on a calm sea at sunset, oil painting")
        page.get_by_label("Negative prompt", exact=True).fill("blurry")
        page.get_by_label("Width", exact=True).fill("256")
        page.get_by_label("Height", exact=True).fill("256")
        page.get_by_label("Seed", exact=True).fill("42")
        page.get_by_role("button", name="Generate image", exact=True).click()
        finish(page, "image")
        page.locator("#image-result details").evaluate("details => details.open = true")

        page.wait_for_function("() => document.querySelector('#voice').options.length > 1")
        page.get_by_label("Voice", exact=True).select_option("lea")
        page.get_by_label("Text", exact=True).fill("Hello! This is the genmedia playground speaking.")
        page.get_by_role("button", name="Speak", exact=True).click()
        finish(page, "speech")

        page.get_by_label("Image", exact=True).set_input_files(SAILBOAT)
        page.get_by_role("button", name="Caption", exact=True).click()
        finish(page, "caption")

        out.mkdir(parents=True, exist_ok=True)
        for panel in ("image", "speech", "caption"):
            page.locator(f"#{panel}-panel").screenshot(path=str(out / f"{panel}.png"))
        page.set_viewport_size({"width": 375, "height": 812})
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(out / "phone.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if chromium_path() is None:
        sys.exit("screenshots: chromium is not installed (apt-get install chromium, or `make servers` as root)")
    with tempfile.TemporaryDirectory(prefix="genmedia-screenshots-") as scratch:
        work = Path(scratch)
        home = work / "bentoml-home"
        home.mkdir()
        print("screenshots: building the tiny models", flush=True)
        import_tiny_models(home)
        env = base_env(
            home,
            GATEWAY_API_KEYS=KEY,
            LOCAL_STORAGE_DIR=str(work / "files"),
            SPOOL_DIR=str(work / "spool"),
            JOB_STORE_URL=f"sqlite:///{work / 'jobs.db'}",
        )
        server = Server("services.gateway:Gateway", env, work / "server.log").start(ready_timeout_s=300)
        try:
            print(f"screenshots: gateway at {server.url}; driving the page", flush=True)
            take(server.url, args.out)
        finally:
            server.stop()
    print(f"screenshots: wrote {', '.join(sorted(path.name for path in args.out.glob('*.png')))} to {args.out}")


if __name__ == "__main__":
    main()
