"""What a request must be, and what every refusal looks like (shared/API.md "Routes" and "Errors").

Each test is named after a hole a new user found and this round closed: nothing incomplete, misspelled or
sent as the wrong type reaches a model service, every error is JSON, a bad setting stops the start.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import requests

from genmedia.contract.requests import ImageRequest, SpeechRequest
from testbed.serving import BENTOML, REPO_ROOT, base_env, free_port
from tests.gateways import AUTH, FORWARDED, KEY

JSON = {**AUTH, "Content-Type": "application/json"}


def post(url: str, **kwargs) -> httpx.Response:
    return httpx.post(url, timeout=120, **kwargs)


def forwarded(server) -> float:
    return server.metric(FORWARDED)


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate_image", {}, "prompt"),
        ("/generate_image", {"width": 64}, "prompt"),
        ("/generate_image", {"prompt": "   "}, "prompt"),
        ("/synthesize_speech", {}, "text"),
        ("/synthesize_speech", {"description": "a calm voice"}, "text"),
    ],
)
def test_missing_prompt_or_text_is_a_400_naming_it_and_wakes_no_model(gateway, route, body, field):
    before = forwarded(gateway)
    response = post(f"{gateway.url}{route}", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}:"), response.json()
    assert forwarded(gateway) == before


@pytest.mark.parametrize("route", ["/generate_image", "/synthesize_speech"])
def test_an_empty_body_is_a_400(gateway, route):
    before = forwarded(gateway)
    response = post(f"{gateway.url}{route}", headers=JSON, content=b"")
    assert response.status_code == 400
    assert response.json()["error"]
    assert forwarded(gateway) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None]
)
def test_a_json_route_sent_another_content_type_is_a_415(gateway, content_type):
    """A browser sends text/plain and forms cross-site without a preflight: none of them may generate."""
    before = forwarded(gateway)
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    response = post(f"{gateway.url}/generate_image", headers=headers, content=b'{"prompt": "a fox"}')
    assert response.status_code == 415
    assert response.json()["error"].startswith("Content-Type:")
    assert "application/json" in response.json()["error"]
    assert forwarded(gateway) == before


def test_json_with_a_charset_is_accepted(gateway):
    body = json.dumps({"prompt": "charset", "width": 64, "height": 64, "seed": 1}).encode()
    response = post(
        f"{gateway.url}/generate_image",
        headers={**AUTH, "Content-Type": "application/json; charset=utf-8"},
        content=body,
    )
    assert response.status_code == 200, response.text


def test_public_url_is_on_the_port_actually_served(gateway):
    """The gateway is started on a free port with no PUBLIC_BASE_URL: its URLs must point at that port."""
    answer = post(
        f"{gateway.url}/generate_image", headers=AUTH, json={"prompt": "port", "width": 64, "height": 64}
    ).json()
    assert answer["public_url"].startswith(f"{gateway.url}/files/images/")
    assert httpx.get(answer["public_url"]).status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate_image", {"prompt": "x", "widht": 64}, "widht"),
        ("/synthesize_speech", {"text": "x", "voice_description": "calm"}, "voice_description"),
    ],
)
def test_a_misspelled_field_is_a_400_naming_it(gateway, route, body, field):
    before = forwarded(gateway)
    response = post(f"{gateway.url}{route}", headers=AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == f"{field}: unknown field; this route's fields are listed at /docs"
    assert forwarded(gateway) == before


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "//generate_image", 404), ("GET", "/nothing-here", 404), ("GET", "/generate_image", 405)],
)
def test_unknown_routes_answer_json(gateway, method, path, status):
    response = httpx.request(method, f"{gateway.url}{path}", headers=AUTH, timeout=60)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert "/docs" in response.json()["error"]


def test_a_client_error_is_logged_as_one_warning_without_the_input(gateway):
    sentinel = "sentinel-prompt-7f3a9c"
    response = post(f"{gateway.url}/generate_image", headers=AUTH, json={"prompt": sentinel, "width": 65})
    assert response.status_code == 400
    log = gateway.log_text()
    assert sentinel not in log
    refused = [line for line in log.splitlines() if "Refused /generate_image [POST]" in line]
    assert any("invalid input in width" in line for line in refused)
    assert all("[WARNING]" in line for line in refused)
    assert "Exception on /generate_image" not in log


def test_the_api_page_is_at_docs_and_its_spec_beside_it(gateway):
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    spec = httpx.get(f"{gateway.url}/docs.json").json()
    schema = spec["paths"]["/generate_image"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema.get("required") == ["prompt"] or "prompt" in json.dumps(spec["components"])
    for asset in re.findall(r'(?:href|src)="\./(static_content/[^"]+)"', page.text):
        assert httpx.get(f"{gateway.url}/{asset}").status_code == 200, asset


def oversized_json() -> bytes:
    return b'{"prompt": "' + b"x" * (20 * 1024 * 1024) + b'"}'


def test_the_413_reaches_urllib_which_sends_the_whole_body_first(gateway):
    request = urllib.request.Request(f"{gateway.url}/generate_image", data=oversized_json(), headers=JSON)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert "over" in json.loads(refused.value.read())["error"]


def test_the_413_reaches_requests_for_an_oversized_upload(gateway):
    upload = b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024)
    response = requests.post(
        f"{gateway.url}/caption_image", headers=AUTH, files={"image": ("big.png", upload, "image/png")}, timeout=60
    )
    assert response.status_code == 413
    assert "over" in response.json()["error"]


@pytest.mark.parametrize(
    ("target", "settings", "variable"),
    [
        ("services.gateway:Gateway", {"RATE_LIMIT_PER_MINUTE": "abc"}, "RATE_LIMIT_PER_MINUTE"),
        ("services.gateway:Gateway", {"GATEWAY_API_KEYS": KEY, "CORS_ORIGINS": "*"}, "CORS_ORIGINS"),
        ("services.text_to_image:TextToImage", {"STORAGE_BACKEND": "s3"}, "STORAGE_BACKEND"),
    ],
)
def test_a_bad_setting_stops_the_start_with_one_line_naming_it(tiny_store, target, settings, variable):
    started = subprocess.run(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=base_env(tiny_store, **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 2
    [line] = [line for line in started.stderr.splitlines() if line.startswith("genmedia: configuration error:")]
    assert variable in line
    assert "Traceback" not in started.stderr


def test_make_deploy_asks_for_a_bentocloud_login_before_building(tmp_path):
    env = {**base_env(tmp_path / "home"), "MAKEFLAGS": ""}
    result = subprocess.run(["make", "deploy"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "bentoml cloud login" in result.stderr
    assert "built" not in result.stdout and not list((tmp_path / "home").glob("bentos/genmedia/*"))


# Adding a field to a request object is one edit: the key, the spec and the client follow from it.


@pytest.mark.parametrize(
    ("request_type", "changed"),
    [
        (
            ImageRequest,
            {
                "prompt": "another",
                "negative_prompt": "blur",
                "width": 72,
                "height": 72,
                "steps": 3,
                "guidance_scale": 2.5,
                "seed": 8,
                "format": "webp",
            },
        ),
        (
            SpeechRequest,
            {
                "text": "another",
                "voice": "jon",
                "description": "a deep voice",
                "format": "flac",
                "speed": 1.5,
                "seed": 8,
            },
        ),
    ],
)
def test_every_request_field_is_part_of_the_content_key(request_type, changed):
    """Each field, changed alone, names another output (a voice by the description it stands for)."""
    assert set(changed) == set(request_type.model_fields), "a field this test does not vary"
    defaults = {"default_steps": 1, "default_guidance_scale": 0.0}
    required = {"prompt": "a"} if request_type is ImageRequest else {"text": "a"}
    base = {**required, "seed": 7}
    keys = {request_type(**base).resolved(defaults).content_key("m:1")}
    for field, value in changed.items():
        keys.add(request_type(**{**base, field: value}).resolved(defaults).content_key("m:1"))
    assert len(keys) == len(changed) + 1
    assert request_type(**base).resolved(defaults).content_key("m:2") not in keys


def test_the_committed_client_spec_lists_exactly_the_request_objects_fields():
    spec = json.loads((REPO_ROOT / "client" / "openapi.json").read_text())
    schemas = spec["components"]["schemas"]
    assert set(schemas["GenerateImageRequest"]["properties"]) == set(ImageRequest.model_fields)
    assert set(schemas["SynthesizeSpeechRequest"]["properties"]) == set(SpeechRequest.model_fields)
    assert schemas["GenerateImageRequest"]["required"] == ["prompt"]
    assert all(field.get("description") for field in schemas["GenerateImageRequest"]["properties"].values())


# The layout: the contract does not depend on a storage backend, benchmarks do not import tests.


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_error_shapes_do_not_depend_on_a_storage_backend():
    for path in (REPO_ROOT / "genmedia" / "contract").glob("*.py"):
        assert not any(name.startswith("genmedia.outputs") for name in imported_modules(path)), path


def test_load_tests_and_the_testbed_never_import_from_tests():
    for folder in ("load_tests", "testbed"):
        for path in (REPO_ROOT / folder).glob("*.py"):
            assert not any(name == "tests" or name.startswith("tests.") for name in imported_modules(path)), path


def test_readme_links_stay_inside_the_repository():
    readme = (REPO_ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        resolved = (REPO_ROOT / target).resolve()
        assert resolved.is_relative_to(REPO_ROOT) and resolved.exists(), target
