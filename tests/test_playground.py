"""The playground at `/` (API.md "Playground"), in a real browser against a tiny-model gateway.

Each flow runs end to end in Debian's Chromium: the page submits a job and follows its events, then shows
the image or audio from `public_url`; a caption is the API's caption of the same file. Errors show the
gateway's own message, 429 a countdown that ends in a retry. Any console error fails a flow, except the
browser's own report of the failed response the test provoked.
"""

from __future__ import annotations

import base64
import json
import re
import shlex

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from genmedia.contract.requests import MAX_UPLOAD_BYTES
from genmedia.settings import Settings
from services.gateway.docs import ApiDocs
from services.gateway.playground import Playground
from testbed.browser import chromium_path, launch_chromium
from testbed.servers import server_missing
from testbed.serving import REPO_ROOT
from tests.gateways import AUTH, KEY, STRICT_KEYS

SAILBOAT = REPO_ROOT / "samples" / "sailboat.jpg"
FLOW_TIMEOUT_MS = 120_000
STATUS_LOG = """
window.statusLog = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    const status = change.target.closest ? change.target.closest('[role=status]') : change.target.parentElement;
    if (status) window.statusLog.push(status.id + ': ' + status.textContent);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""

# The label of the focused control, or its text (a button's name).
FOCUSED_NAME = "(() => { const el = document.activeElement; return el.labels?.[0]?.textContent ?? el.textContent; })()"


# --- The page as served (in-process: the middleware pair the gateway stacks) -----------------------------


def served(settings: Settings) -> TestClient:
    """Playground in front of ApiDocs in front of a stand-in for BentoML's own routes, as the gateway stacks them."""
    bentoml_routes = Starlette(routes=[Route("/", lambda request: PlainTextResponse("BentoML's API page"))])
    return TestClient(Playground(ApiDocs(bentoml_routes), settings=settings), follow_redirects=False)


def test_root_is_the_playground_page_with_a_self_only_content_security_policy():
    client = served(Settings(gateway_api_keys=("k",), public_base_url="http://files.example:3000"))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    # public_url's origin, and nothing else from elsewhere.
    assert "img-src 'self' http://files.example:3000 blob:" in policy
    assert "media-src 'self' http://files.example:3000" in policy
    assert 'data-needs-key="true"' in page.text and f'data-max-upload-bytes="{MAX_UPLOAD_BYTES}"' in page.text
    assert "{{" not in page.text
    # Every script and style the page loads is its own.
    assert re.findall(r'(?:src|href)="([^"]+)"', page.text) == [
        "/playground/icon.svg",
        "/playground/style.css",
        "/playground/app.js",
        "/docs",
    ]
    for asset, media_type in (
        ("/playground/app.js", "text/javascript"),
        ("/playground/style.css", "text/css"),
        ("/playground/icon.svg", "image/svg+xml"),
    ):
        answer = client.get(asset)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media_type)
    assert client.get("/docs").text == "BentoML's API page"
    assert client.get("/playground/index.html").status_code == 404


def test_playground_false_keeps_the_redirect_to_docs():
    client = served(Settings(playground=False))
    answer = client.get("/")
    assert answer.status_code == 307 and answer.headers["location"] == "/docs"
    assert client.get("/playground/app.js").status_code == 404
    assert client.get("/docs").text == "BentoML's API page"


def test_a_gateway_without_keys_serves_the_page_without_the_key_field():
    assert 'data-needs-key="false"' in served(Settings()).get("/").text


def test_the_page_and_its_assets_need_no_key_but_blocked_ips_are_refused(strict_gateway):
    for path in ("/", "/playground/app.js", "/playground/style.css"):
        assert httpx.get(f"{strict_gateway.url}{path}", timeout=30).status_code == 200
        blocked = httpx.get(f"{strict_gateway.url}{path}", headers={"X-Forwarded-For": "198.51.100.7"}, timeout=30)
        assert blocked.status_code == 403, path


# --- In the browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    executable = chromium_path()
    if executable is None:
        server_missing("chromium is not installed (apt-get install chromium): the playground's browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, executable)
        yield browser
        browser.close()


class Browser:
    """One page in a fresh context, with every console error and uncaught exception it logs."""

    def __init__(self, chromium, url: str, width: int = 1280):
        self.context = chromium.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(FLOW_TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.add_init_script(STATUS_LOG)
        self.page.goto(url)

    def enter_key(self, key: str) -> None:
        field = self.page.get_by_label("API key", exact=True)
        field.fill(key)
        field.press("Tab")

    def errors_besides(self, status: int | None = None) -> list[str]:
        """Console errors other than the browser's report of a response with `status`, which the test provoked."""
        expected = f"the server responded with a status of {status}"
        return [text for text in self.errors if status is None or expected not in text]


@pytest.fixture
def browser(chromium, gateway):
    opened = Browser(chromium, gateway.url)
    yield opened
    opened.context.close()


def status_of(browser: Browser, panel: str):
    return browser.page.locator(f"#{panel}-status")


def finished(browser: Browser, panel: str) -> str:
    """The panel's status once its request is over: "Done." or what went wrong."""
    status = status_of(browser, panel)
    browser.page.locator(f"#{panel}-status[data-kind=done], #{panel}-status[data-kind=error]").wait_for()
    return status.text_content()


def job_of(gateway, response) -> dict:
    job_id = response.json()["id"]
    return httpx.get(f"{gateway.url}/jobs/{job_id}", headers=AUTH, timeout=30).json()


def test_controls_have_the_contracts_accessible_names(browser):
    page = browser.page
    for label in ("Prompt", "Text", "API key", "Image"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    assert page.get_by_label("Image", exact=True).get_attribute("type") == "file"
    for button in ("Generate image", "Speak", "Caption"):
        assert page.get_by_role("button", name=button, exact=True).count() == 1, button
    assert browser.errors == []


def test_image_flow_shows_the_jobs_image_at_the_requested_size_its_seed_and_a_working_curl(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    page.get_by_label("Prompt", exact=True).fill("a red sailboat")
    page.get_by_label("Width", exact=True).fill("128")
    page.get_by_label("Height", exact=True).fill("96")
    page.get_by_label("Steps", exact=True).fill("2")
    page.get_by_label("Seed", exact=True).fill("7")
    with page.expect_response(lambda r: r.url.endswith("/jobs/generate_image")) as submitted:
        page.get_by_role("button", name="Generate image", exact=True).click()
    assert finished(browser, "image") == "Done.", browser.errors
    image = page.locator("#image-output")
    assert image.is_visible()
    job = job_of(gateway, submitted.value)
    assert job["status"] == "succeeded"
    assert image.get_attribute("src") == job["result"]["public_url"]
    assert image.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]") == [True, 128, 96]
    assert page.locator("#image-seed").text_content() == "7"
    statuses = page.evaluate("window.statusLog")
    assert any(line.startswith("image-status: Queued") for line in statuses), statuses
    # The curl of the same request reproduces the image: its seed makes it a stored answer.
    curl = shlex.split(page.locator("#image-curl").text_content().replace("\\\n", " "))
    assert curl[:4] == ["curl", "-X", "POST", f"{gateway.url}/generate_image"]
    assert "Authorization: Bearer $GENMEDIA_API_KEY" in curl
    again = httpx.post(curl[3], json=json.loads(curl[curl.index("-d") + 1]), headers=AUTH, timeout=120).json()
    assert again["cached"] is True and again["public_url"] == job["result"]["public_url"]
    assert browser.errors == []


def test_speech_flow_plays_the_jobs_audio_with_its_duration(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    voices = httpx.get(f"{gateway.url}/voices", headers=AUTH, timeout=30).json()["voices"]
    voice_field = page.get_by_label("Voice", exact=True)
    first = voices[0]["name"]
    page.wait_for_function(f"() => document.querySelector('#voice').options.length === {len(voices) + 1}")
    assert voice_field.locator("option").all_text_contents()[1:] == [voice["name"] for voice in voices]
    voice_field.select_option(first)
    assert page.locator("#voice-about").text_content() == voices[0]["description"]
    page.get_by_label("Text", exact=True).fill("Hello from the playground.")
    page.get_by_label("Format", exact=True).select_option("wav")
    with page.expect_response(lambda r: r.url.endswith("/jobs/synthesize_speech")) as submitted:
        page.get_by_role("button", name="Speak", exact=True).click()
    assert finished(browser, "speech") == "Done.", browser.errors
    audio = page.locator("#speech-output")
    assert audio.is_visible()
    job = job_of(gateway, submitted.value)
    assert job["status"] == "succeeded"
    result = job["result"]
    assert audio.get_attribute("src") == result["public_url"]
    duration = audio.evaluate("audio => audio.duration")
    assert abs(duration - result["duration_s"]) <= 0.1, (duration, result["duration_s"])
    assert page.locator("#speech-duration").text_content() == f"{result['duration_s']:.2f}"
    assert browser.errors == []


def test_caption_flow_by_keyboard_shows_the_apis_caption_of_the_same_file(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    with SAILBOAT.open("rb") as image:
        expected = httpx.post(f"{gateway.url}/caption_image", files={"image": image}, headers=AUTH, timeout=120)
    assert expected.status_code == 200
    page.get_by_label("Image", exact=True).set_input_files(SAILBOAT)
    preview = page.locator("#caption-preview")
    preview.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#caption-preview').naturalWidth > 0")
    page.get_by_role("button", name="Caption", exact=True).focus()
    page.keyboard.press("Enter")
    caption = page.locator("#caption-output")
    caption.wait_for(state="visible")
    assert caption.text_content() == expected.json()["caption"]
    assert browser.errors == []


def test_a_dropped_file_is_previewed_and_captioned(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    encoded = base64.b64encode(SAILBOAT.read_bytes()).decode()
    dropped = page.evaluate_handle(
        """(encoded) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'sailboat.jpg', {type: 'image/jpeg'}));
            return transfer;
        }""",
        encoded,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    page.wait_for_function("() => document.querySelector('#caption-preview').naturalWidth > 0")
    assert page.get_by_label("Image", exact=True).evaluate("input => input.files[0].name") == "sailboat.jpg"
    page.get_by_role("button", name="Caption", exact=True).click()
    page.locator("#caption-output").wait_for(state="visible")
    with SAILBOAT.open("rb") as image:
        expected = httpx.post(f"{gateway.url}/caption_image", files={"image": image}, headers=AUTH, timeout=120)
    assert page.locator("#caption-output").text_content() == expected.json()["caption"]
    assert browser.errors == []


def test_a_file_over_the_limit_is_refused_in_the_page_with_the_gateways_message(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    size = MAX_UPLOAD_BYTES + 1
    too_large = httpx.post(
        f"{gateway.url}/caption_image",
        files={"image": ("big.png", b"\0" * size, "image/png")},
        headers=AUTH,
        timeout=120,
    )
    assert too_large.status_code == 413
    sent = []
    page.on("request", lambda request: "/caption_image" in request.url and sent.append(request.url))
    dropped = page.evaluate_handle(
        """(size) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(size)], 'big.png', {type: 'image/png'}));
            return transfer;
        }""",
        size,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    page.get_by_role("button", name="Caption", exact=True).click()
    status = status_of(browser, "caption")
    status.filter(has_text=too_large.json()["error"]).wait_for()
    assert status.text_content() == too_large.json()["error"]
    assert sent == []
    assert browser.errors == []


def test_an_empty_prompt_shows_the_400s_message(browser, gateway):
    page = browser.page
    browser.enter_key(KEY)
    refused = httpx.post(f"{gateway.url}/jobs/generate_image", json={"prompt": ""}, headers=AUTH, timeout=30)
    assert refused.status_code == 400
    page.get_by_role("button", name="Generate image", exact=True).click()
    status = status_of(browser, "image")
    status.filter(has_text=refused.json()["error"]).wait_for()
    assert status.text_content() == refused.json()["error"]
    assert browser.errors_besides(400) == []


def test_a_wrong_key_shows_the_401s_message(browser, gateway):
    page = browser.page
    refused = httpx.get(f"{gateway.url}/voices", headers={"Authorization": "Bearer wrong-key"}, timeout=30)
    assert refused.status_code == 401
    browser.enter_key("wrong-key")
    page.get_by_label("Image", exact=True).set_input_files(SAILBOAT)
    page.get_by_role("button", name="Caption", exact=True).click()
    status = status_of(browser, "caption")
    status.filter(has_text=refused.json()["error"]).wait_for()
    assert status.text_content() == refused.json()["error"]
    # The voice list was refused with the same words.
    assert refused.json()["error"] in status_of(browser, "speech").text_content()
    assert browser.errors_besides(401) == []


def test_the_key_is_kept_for_the_tab_and_sent_only_in_the_authorization_header(browser, gateway):
    page = browser.page
    requests = []
    page.on("request", lambda request: requests.append((request.url, request.headers.get("authorization"))))
    browser.enter_key(KEY)
    page.get_by_label("Image", exact=True).set_input_files(SAILBOAT)
    page.get_by_role("button", name="Caption", exact=True).click()
    page.locator("#caption-output").wait_for(state="visible")
    page.reload()
    assert page.get_by_label("API key", exact=True).input_value() == KEY
    api_calls = [(url, header) for url, header in requests if "/voices" in url or "/caption_image" in url]
    assert api_calls and all(header == f"Bearer {KEY}" for _, header in api_calls)
    assert not any(KEY in url for url, _ in requests)
    assert browser.errors == []


def test_a_429_shows_a_countdown_from_retry_after_and_then_retries(chromium, strict_gateway):
    browser = Browser(chromium, strict_gateway.url)
    try:
        page = browser.page
        key = STRICT_KEYS[1]
        browser.enter_key(key)
        page.wait_for_function("() => document.querySelector('#speech-status').textContent.endsWith('voices.')")
        # Spend the rest of this key's 3 a minute.
        for _ in range(10):
            limited = httpx.get(f"{strict_gateway.url}/voices", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            if limited.status_code == 429:
                break
        assert limited.status_code == 429
        wait_s = int(limited.headers["Retry-After"])
        page.get_by_label("Image", exact=True).set_input_files(SAILBOAT)
        page.get_by_role("button", name="Caption", exact=True).click()
        status = status_of(browser, "caption")
        countdown = re.compile(r"Rate limit of 3 requests per minute reached; retry in (\d+) s\. Retrying in (\d+) s…")
        status.filter(has_text=countdown).wait_for()
        told, left = map(int, countdown.fullmatch(status.text_content()).groups())
        assert left <= told <= wait_s
        # The countdown ends in a retry, which the refilled bucket lets through.
        page.locator("#caption-output").wait_for(state="visible", timeout=(wait_s + 60) * 1000)
        assert browser.errors_besides(429) == []
    finally:
        browser.context.close()


def test_the_page_is_readable_and_usable_by_keyboard_at_375_px(chromium, gateway):
    browser = Browser(chromium, gateway.url, width=375)
    try:
        page = browser.page
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        for panel in ("#image-panel", "#speech-panel", "#caption-panel"):
            box = page.locator(panel).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375, panel
        # Tab reaches every control of the contract, in reading order.
        reached = []
        for _ in range(40):
            page.keyboard.press("Tab")
            reached.append(page.evaluate(FOCUSED_NAME))
        named = ["API key", "Prompt", "Generate image", "Text", "Speak", "Image", "Caption"]
        positions = [reached.index(name) for name in named]
        assert positions == sorted(positions), reached
        assert browser.errors == []
    finally:
        browser.context.close()
