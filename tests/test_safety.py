"""Content safety (issue 19): prompts screened before any model service, images checked before they are kept.

The screen is checked in-process on its own and through a gateway with `BLOCKED_PROMPT_TERMS_FILE`. The
checker is the real one on tiny random weights; what it flags is chosen at import (`--safety-threshold`):
`flagging_store` holds the tiny models of `tiny_store` (the same versions) beside a checker that flags every
image, while `tiny_store`'s own checker flags none.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from genmedia.contract import screening
from genmedia.contract.errors import Withheld
from genmedia.contract.requests import ImageRequest, SpeechRequest
from genmedia.model_loading import IMAGE_CAPTIONING, SAFETY_CHECKER, TEXT_TO_IMAGE, TEXT_TO_SPEECH
from genmedia.outputs import WITHHELD_CONTENT_TYPE, OutputStore
from genmedia.settings import Settings, SettingsError, get_settings
from testbed import jobs
from testbed.serving import REPO_ROOT, Server, base_env

TERMS = "# what this test deployment refuses\ngore\nnud*\nblood bath\n"
FORWARDED = "genmedia_gateway_forwarded_total"
WITHHELD = "withheld by the safety checker"


def screen() -> screening.PromptScreen:
    return screening.PromptScreen(TERMS.splitlines())


# The screen on its own.


@pytest.mark.parametrize(
    "prompt",
    ["gore", "GORE", "a Gore scene", "gore, everywhere", "nude", "nudity", "blood bath", "blood-bath", "Blood  BATH"],
)
def test_a_blocked_term_matches_as_a_word_in_any_case(prompt):
    assert screen().blocks(prompt)


@pytest.mark.parametrize("prompt", ["gorent", "a gorge at dawn", "denude", "bloodbath", "a bath of blood", ""])
def test_words_that_only_contain_a_term_pass(prompt):
    assert not screen().blocks(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "g\u043er\u0435",  # Cyrillic о and е
        "g\u03bfre",  # Greek ο
        "\u0261ore",  # Latin small script g
        "\uff47\uff4f\uff52\uff45",  # fullwidth
        "\U0001d420\U0001d428\U0001d42b\U0001d41e",  # mathematical bold
        "go\u200bre",  # a zero-width space inside
        "go\u00adre",  # a soft hyphen inside
        "g\u00f3r\u00e9",  # accents
        "g\u0332o\u0332r\u0332e\u0332",  # combining underlines
    ],
    ids=["cyrillic", "greek", "script-g", "fullwidth", "math-bold", "zero-width", "soft-hyphen", "accents", "marks"],
)
def test_look_alike_letters_and_invisible_characters_do_not_slip_through(prompt):
    assert screen().blocks(f"a {prompt} scene")


def test_a_terms_file_line_with_nothing_to_match_is_refused_at_start(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("gore\n -- \n")
    with pytest.raises(SettingsError, match=r"BLOCKED_PROMPT_TERMS_FILE.*line 2"):
        screening.PromptScreen.from_file(terms)
    with pytest.raises(SettingsError, match="BLOCKED_PROMPT_TERMS_FILE"):
        Settings.from_env({"BLOCKED_PROMPT_TERMS_FILE": str(tmp_path / "missing.txt")})


def test_safety_checker_setting_is_on_unless_turned_off():
    assert Settings.from_env({}).safety_checker is True
    assert Settings.from_env({"SAFETY_CHECKER": "off"}).safety_checker is False
    with pytest.raises(SettingsError, match="SAFETY_CHECKER"):
        Settings.from_env({"SAFETY_CHECKER": "maybe"})


@pytest.fixture
def terms_file(tmp_path, monkeypatch):
    path = tmp_path / "terms.txt"
    path.write_text(TERMS)
    monkeypatch.setenv("BLOCKED_PROMPT_TERMS_FILE", str(path))
    get_settings.cache_clear()
    screening.prompt_screen.cache_clear()
    yield path
    monkeypatch.delenv("BLOCKED_PROMPT_TERMS_FILE")
    get_settings.cache_clear()
    screening.prompt_screen.cache_clear()


def test_the_request_objects_refuse_a_blocked_prompt_naming_the_field_not_the_term(terms_file):
    for make, field in (
        (lambda: ImageRequest(prompt="a GORE scene"), "prompt"),
        (lambda: SpeechRequest(text="Gore, said the narrator."), "text"),
        (lambda: SpeechRequest(text="Hello.", description="a voice from a blood bath"), "description"),
    ):
        with pytest.raises(ValidationError) as refused:
            make()
        [error] = refused.value.errors()
        assert error["loc"] == (field,)
        assert "gore" not in error["msg"].lower() and "blood" not in error["msg"].lower()
    assert ImageRequest(prompt="  a fox in the snow ", negative_prompt="gore").prompt == "a fox in the snow"


# The marker in storage.


def output_store(tmp_path) -> OutputStore:
    settings = Settings(local_storage_dir=tmp_path / "files", spool_dir=tmp_path / "spool")
    return OutputStore(TEXT_TO_IMAGE, settings)


def test_a_withheld_output_is_found_as_a_422_never_as_a_cached_image(tmp_path):
    outputs = output_store(tmp_path)
    key = f"images/{'a' * 64}.png"

    asyncio.run(outputs.withhold(key))

    with pytest.raises(Withheld) as refused:
        asyncio.run(outputs.find(key, where="service"))
    assert refused.value.status == 422
    assert outputs.store.content_type(key) == WITHHELD_CONTENT_TYPE
    assert not outputs.store.get(key).data.startswith(b"\x89PNG")


def test_a_spooled_marker_is_uploaded_and_still_refused(tmp_path):
    outputs = output_store(tmp_path)
    key = f"images/{'b' * 64}.png"
    outputs.spool.save(key, b'{"withheld": "flagged by the safety checker"}', WITHHELD_CONTENT_TYPE)

    with pytest.raises(Withheld):
        asyncio.run(outputs.find(key, where="gateway"))
    assert outputs.spool.load(key) is None
    assert outputs.store.content_type(key) == WITHHELD_CONTENT_TYPE


# Served: a gateway that screens prompts in front of a checker that flags every image.


def run_import(home, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models", "import", "--profile", "tiny", *arguments],
        cwd=REPO_ROOT,
        env=base_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def flagging_store(tiny_store, tmp_path_factory):
    """A BENTOML_HOME with tiny_store's image, speech and caption models, and a checker that flags all."""
    home = tmp_path_factory.mktemp("flagging-home")
    (home / "models").mkdir()
    for role in (TEXT_TO_IMAGE, TEXT_TO_SPEECH, IMAGE_CAPTIONING):
        (home / "models" / role).symlink_to(tiny_store / "models" / role, target_is_directory=True)
    result = run_import(home, "--only", SAFETY_CHECKER, "--safety-threshold", "-1")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def screening_gateway(flagging_store, tmp_path_factory):
    work = tmp_path_factory.mktemp("safety-gateway")
    (work / "terms.txt").write_text(TERMS)
    env = base_env(
        flagging_store,
        LOCAL_STORAGE_DIR=str(work / "files"),
        SPOOL_DIR=str(work / "spool"),
        BLOCKED_PROMPT_TERMS_FILE=str(work / "terms.txt"),
    )
    server = Server("services.gateway:Gateway", env, work / "server.log")
    server.env["PUBLIC_BASE_URL"] = server.url
    server.files = work / "files"
    yield server.start(ready_timeout_s=300)
    server.stop()


def image_service(home, work, **settings) -> Server:
    """The image service alone; it serves no `/files`, so tests read its outputs from its storage directory."""
    env = base_env(home, LOCAL_STORAGE_DIR=str(work / "files"), SPOOL_DIR=str(work / "spool"), **settings)
    server = Server("services.text_to_image:TextToImage", env, work / "server.log")
    server.files = work / "files"
    return server.start()


@pytest.fixture(scope="module")
def unchecked_service(flagging_store, tmp_path_factory):
    """The image service alone, its checker (one that flags every image) turned off."""
    server = image_service(flagging_store, tmp_path_factory.mktemp("unchecked"), SAFETY_CHECKER="off")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def checked_service(tiny_store, tmp_path_factory):
    """The image service alone with tiny_store's checker on: it flags no image."""
    server = image_service(tiny_store, tmp_path_factory.mktemp("checked"))
    yield server
    server.stop()


def post(server: Server, route: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", json=body, timeout=120)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate_image", {"prompt": "a GORE scene"}, "prompt"),
        ("/generate_image", {"prompt": "a g\u043er\u0435 scene", "seed": 1}, "prompt"),
        ("/generate_image", {"prompt": "nudity at noon"}, "prompt"),
        ("/synthesize_speech", {"text": "Gore, said the narrator."}, "text"),
    ],
    ids=["other-case", "look-alike", "wildcard", "speech"],
)
def test_a_blocked_term_is_a_400_naming_the_field_and_wakes_no_model(screening_gateway, route, body, field):
    gateway = screening_gateway
    forwarded = gateway.metric(FORWARDED)
    refused = gateway.metric("genmedia_prompts_refused_total", field=field)

    response = post(gateway, route, body)

    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(f"{field}:"), message
    for term in ("gore", "nud", "blood"):
        assert term not in message.lower()
    assert gateway.metric(FORWARDED) == forwarded
    assert gateway.metric("genmedia_prompts_refused_total", field=field) == refused + 1


def test_a_blocked_term_under_v1_is_openais_400_naming_the_prompt_and_wakes_no_model(screening_gateway):
    import openai

    forwarded = screening_gateway.metric(FORWARDED)
    client = openai.OpenAI(base_url=f"{screening_gateway.url}/v1", api_key="no-keys-configured", max_retries=0)

    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a GоRE scene", size="64x64")

    assert refused.value.status_code == 400
    assert refused.value.param == "prompt"
    assert "gore" not in str(refused.value.message).lower()
    assert screening_gateway.metric(FORWARDED) == forwarded


def test_a_blocked_term_in_a_job_is_a_400_at_submit_and_makes_no_job(screening_gateway):
    forwarded = screening_gateway.metric(FORWARDED)

    submitted = jobs.submit(screening_gateway.url, "generate_image", {"prompt": "a blood-bath", "seed": 3}, {})

    assert submitted.status_code == 400, submitted.text
    assert submitted.json()["error"].startswith("prompt:")
    assert "blood" not in submitted.json()["error"].lower()
    assert screening_gateway.metric(FORWARDED) == forwarded


def test_a_job_whose_image_is_withheld_ends_failed_with_the_422(screening_gateway):
    submitted = jobs.submit(screening_gateway.url, "generate_image", {"prompt": "a calm lake", "seed": 5}, {})
    assert submitted.status_code == 202, submitted.text

    job = jobs.wait_for(screening_gateway.url, submitted.json()["id"], {})

    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["status"] == 422
    assert "withheld by the safety checker" in job["error"]["message"]


def stored_objects(files) -> dict[str, str]:
    """Every object local storage holds under images/, by key, with its content type."""
    meta = files / ".meta"
    return {
        str(path.relative_to(files)): json.loads((meta / f"{path.relative_to(files)}.json").read_text())["content_type"]
        for path in (files / "images").rglob("*")
        if path.is_file()
    }


def test_a_flagged_image_is_a_422_with_only_a_marker_stored_and_a_seeded_repeat_wakes_no_model(screening_gateway):
    gateway = screening_gateway
    request = {"prompt": "a quiet harbour", "width": 64, "height": 64, "seed": 19}
    withheld = gateway.metric("genmedia_outputs_withheld_total", capability="text-to-image")

    flagged = post(gateway, "/generate_image", request)

    assert flagged.status_code == 422, flagged.text
    assert WITHHELD in flagged.json()["error"]
    assert "public_url" not in flagged.text and "file_key" not in flagged.text
    assert gateway.metric("genmedia_outputs_withheld_total", capability="text-to-image") == withheld + 1
    stored = stored_objects(gateway.files)
    assert stored and set(stored.values()) == {WITHHELD_CONTENT_TYPE}, stored
    for key in stored:
        assert not (gateway.files / key).read_bytes().startswith(b"\x89PNG")
        served = httpx.get(f"{gateway.url}/files/{key}", timeout=30)
        assert served.status_code == 422 and WITHHELD in served.json()["error"]

    forwarded = gateway.metric(FORWARDED)
    repeat = post(gateway, "/generate_image", request)

    assert repeat.status_code == 422 and WITHHELD in repeat.json()["error"]
    assert gateway.metric(FORWARDED) == forwarded
    assert gateway.metric("genmedia_outputs_withheld_total", capability="text-to-image") == withheld + 1
    assert stored_objects(gateway.files) == stored


def test_with_the_checker_off_the_image_is_returned(unchecked_service):
    response = post(unchecked_service, "/generate_image", {"prompt": "a quiet harbour", "width": 64, "height": 64})

    assert response.status_code == 200, response.text
    stored = (unchecked_service.files / response.json()["file_key"]).read_bytes()
    assert Image.open(io.BytesIO(stored)).size == (64, 64)
    assert unchecked_service.metric("genmedia_safety_check_seconds_count") == 0


@pytest.mark.parametrize("format", ["png", "webp", "jpeg"])
def test_an_unflagged_image_is_byte_identical_with_the_checker_on_and_off(checked_service, unchecked_service, format):
    request = {"prompt": "a lighthouse at dawn", "width": 96, "height": 64, "seed": 23, "format": format}
    checks = checked_service.metric("genmedia_safety_check_seconds_count")

    checked = post(checked_service, "/generate_image", request)
    unchecked = post(unchecked_service, "/generate_image", request)

    assert checked.status_code == unchecked.status_code == 200, (checked.text, unchecked.text)
    assert checked.json()["cached"] is unchecked.json()["cached"] is False
    assert checked.json()["file_key"] == unchecked.json()["file_key"]
    assert checked_service.metric("genmedia_safety_check_seconds_count") == checks + 1
    checked_bytes = (checked_service.files / checked.json()["file_key"]).read_bytes()
    unchecked_bytes = (unchecked_service.files / unchecked.json()["file_key"]).read_bytes()
    assert checked_bytes == unchecked_bytes
    assert Image.open(io.BytesIO(checked_bytes)).size == (96, 64)
