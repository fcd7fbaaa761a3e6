"""The whole composition (`bentoml serve services.gateway:Gateway`) on tiny models, end to end.

The two gateways of the session (`gateway`, `strict_gateway`) are described in `tests/gateways.py`.
"""

from __future__ import annotations

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import soundfile
from PIL import Image

from testbed.serving import Server
from tests.gateways import AUTH, FORWARDED, KEY, ORIGIN, OTHER_KEY, STRICT_KEYS


def post(server: Server, route: str, headers=AUTH, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", headers=headers, timeout=120, **kwargs)


def post_when_allowed(server: Server, route: str, headers, **kwargs) -> httpx.Response:
    """`post`, waiting out the strict gateway's limit of 3 a minute first if it answers 429 (its
    Retry-After is exact: the oldest of the last three requests leaves the moving window then)."""
    response = post(server, route, headers, **kwargs)
    if response.status_code == 429:
        time.sleep(int(response.headers["Retry-After"]))
        response = post(server, route, headers, **kwargs)
    return response


def png_bytes(size=(48, 32), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def forwarded(server: Server) -> float:
    return server.metric(FORWARDED)


# Every route, end to end, with outputs readable from public_url.


def test_generate_image_end_to_end(gateway):
    response = post(gateway, "/generate_image", json={"prompt": "a boat", "width": 128, "height": 96, "seed": 3})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["cached"] is False and result["seed"] == 3
    assert result["public_url"] == f"{gateway.url}/files/{result['file_key']}"
    served = httpx.get(result["public_url"], timeout=30)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).size == (128, 96)


def test_synthesize_speech_end_to_end(gateway):
    response = post(gateway, "/synthesize_speech", json={"text": "Good morning. How are you?", "format": "flac"})
    assert response.status_code == 200, response.text
    result = response.json()
    served = httpx.get(result["public_url"], timeout=30)
    assert served.headers["content-type"] == "audio/flac"
    samples, rate = soundfile.read(io.BytesIO(served.content))
    assert rate == result["sample_rate"]
    assert abs(len(samples) / rate - result["duration_s"]) <= 1 / rate
    assert abs(samples).max() > 0


def test_caption_image_end_to_end(gateway):
    response = post(gateway, "/caption_image", files={"image": ("red.png", png_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["caption"].strip()
    assert response.json()["model"].startswith("image-captioning:")


def test_files_route_refuses_traversal_and_answers_404_for_missing(gateway):
    for path in ("/files/..%2F..%2Fetc%2Fpasswd", "/files/images/%2E%2E/secret", "/files/%2Fetc%2Fpasswd"):
        response = httpx.get(gateway.url + path)
        assert response.status_code in (400, 404), path
        assert "error" in response.json()
        assert "root:" not in response.text
    missing = httpx.get(f"{gateway.url}/files/images/{'0' * 64}.png")
    assert missing.status_code == 404
    assert missing.json()["error"]


# Authentication, rate limits, IP blocks, CORS.


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": KEY},
    ],
    ids=["no key", "wrong key", "wrong scheme", "empty bearer", "no scheme"],
)
def test_requests_without_the_right_key_get_401_and_wake_nothing(gateway, headers):
    before = forwarded(gateway)
    response = post(gateway, "/generate_image", headers=headers, json={"prompt": "x", "width": 64, "height": 64})
    assert response.status_code == 401
    assert "API key" in response.json()["error"]
    assert forwarded(gateway) == before


def test_either_configured_key_is_accepted(gateway):
    for key in (KEY, OTHER_KEY):
        response = post(
            gateway, "/caption_image", headers={"Authorization": f"Bearer {key}"}, files={"image": png_bytes()}
        )
        assert response.status_code == 200, response.text


def test_rate_limit_gives_429_with_retry_after_and_spares_other_keys(strict_gateway):
    first, second = ({"Authorization": f"Bearer {key}"} for key in STRICT_KEYS[:2])
    before = forwarded(strict_gateway)
    answers = [
        post(strict_gateway, "/generate_image", headers=first, json={"prompt": ""}).status_code for _ in range(3)
    ]
    assert answers == [400, 400, 400]
    limited = post(strict_gateway, "/generate_image", headers=first, json={"prompt": "x"})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "Rate limit" in limited.json()["error"]
    assert post(strict_gateway, "/generate_image", headers=second, json={"prompt": ""}).status_code == 400
    assert forwarded(strict_gateway) == before


def test_blocked_range_behind_trusted_proxy_gets_403_and_wakes_nothing(strict_gateway):
    before = forwarded(strict_gateway)
    headers = {"Authorization": f"Bearer {STRICT_KEYS[1]}", "X-Forwarded-For": "198.51.100.23"}
    response = post(strict_gateway, "/generate_image", headers=headers, json={"prompt": "x"})
    assert response.status_code == 403
    assert "blocked" in response.json()["error"]
    assert forwarded(strict_gateway) == before


def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(gateway):
    # 203.0.113.0/24 is blocked on this gateway, but loopback is not a trusted proxy here.
    headers = {**AUTH, "X-Forwarded-For": "203.0.113.9"}
    response = post(gateway, "/caption_image", headers=headers, files={"image": png_bytes()})
    assert response.status_code == 200


def test_cors_preflight_is_answered_without_a_key(gateway):
    preflight = httpx.options(
        f"{gateway.url}/generate_image",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.post(f"{gateway.url}/generate_image", headers={"Origin": ORIGIN}, json={"prompt": "x"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        f"{gateway.url}/generate_image",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


# Validation and the result cache: nothing that can be refused or answered from storage wakes a model.


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate_image", {"prompt": ""}, "prompt"),
        ("/generate_image", {"prompt": "x", "width": 1537}, "width"),
        ("/generate_image", {"prompt": "x", "height": 100}, "height"),
        ("/generate_image", {"prompt": "x", "seed": 2**32}, "seed"),
        ("/generate_image", {"prompt": "x", "format": "bmp"}, "format"),
        ("/synthesize_speech", {"text": ""}, "text"),
        ("/synthesize_speech", {"text": "x" * 2001}, "text"),
        ("/synthesize_speech", {"text": "hi", "description": "x" * 501}, "description"),
        ("/synthesize_speech", {"text": "hi", "format": "opus"}, "format"),
        ("/synthesize_speech", {"text": "hi", "voice": "bob"}, "voice"),
    ],
)
def test_invalid_input_is_refused_naming_the_field_without_waking_a_model(gateway, route, body, field):
    before = forwarded(gateway)
    response = post(gateway, route, json=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}:"), response.json()
    assert forwarded(gateway) == before


@pytest.mark.parametrize(
    ("upload", "status"),
    [
        (b"just some text, not an image", 400),
        (b"\x89PNG" + b"\0" * (11 * 1024 * 1024), 413),
    ],
    ids=["text file", "11 MB"],
)
def test_bad_uploads_are_refused_before_the_captioner(gateway, upload, status):
    before = forwarded(gateway)
    response = post(gateway, "/caption_image", files={"image": ("upload.png", upload, "image/png")})
    assert response.status_code == status
    assert response.json()["error"]
    assert forwarded(gateway) == before


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"file": ("a.png", png_bytes(), "image/png")}, "file: not a field of this route"),
        ({"Image": ("a.png", png_bytes(), "image/png")}, "Image: not a field of this route"),
        ({"image[]": ("a.png", png_bytes(), "image/png")}, "image[]: not a field of this route"),
        ({"image": ("x" * 241 + ".png", png_bytes(), "image/png")}, "image: the file name is over 128 bytes"),
    ],
    ids=["file", "Image", "image[]", "245-byte file name"],
)
def test_upload_field_names_and_file_names_are_checked_before_bentoml_parses_them(gateway, files, message):
    before = forwarded(gateway)
    response = post(gateway, "/caption_image", files=files)
    assert response.status_code == 400 and response.json()["error"].startswith(message), response.text
    assert forwarded(gateway) == before


def test_a_truncated_upload_is_refused_by_the_captioner_and_its_400_passed_on(gateway):
    # Only a decode tells it, and the captioner does the one full decode (`genmedia.contract.uploads`).
    response = post(gateway, "/caption_image", files={"image": ("upload.png", png_bytes()[:60], "image/png")})
    assert response.status_code == 400
    assert response.json()["error"].startswith("image: the file is truncated or corrupt")


def test_oversized_json_body_gets_413(gateway):
    body = b'{"prompt": "' + b"x" * 200_000 + b'"}'
    response = post(gateway, "/generate_image", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 413
    assert "over" in response.json()["error"]


def test_repeated_seeded_requests_are_answered_from_storage_without_waking_a_model(gateway):
    image_request = {"prompt": "cached", "width": 64, "height": 64, "seed": 11}
    speech_request = {"text": "Cached words.", "seed": 11}
    first_image = post(gateway, "/generate_image", json=image_request).json()
    first_speech = post(gateway, "/synthesize_speech", json=speech_request).json()
    before = forwarded(gateway)
    image = post(gateway, "/generate_image", json=image_request).json()
    speech = post(gateway, "/synthesize_speech", json=speech_request).json()
    assert forwarded(gateway) == before
    assert image["cached"] is True and image["file_key"] == first_image["file_key"]
    assert speech["cached"] is True and speech["file_key"] == first_speech["file_key"]
    assert speech["duration_s"] == first_speech["duration_s"]
    assert gateway.metric("genmedia_cache_hits_total", where="gateway") >= 2


def test_readyz_does_not_call_the_model_services(gateway):
    before = forwarded(gateway)
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    assert forwarded(gateway) == before


# A model service stopped mid-run: 503 + Retry-After for its routes, the others keep working.


def service_processes(server: Server, service_name: str) -> list[psutil.Process]:
    root = psutil.Process(server.process.pid)
    return [
        process for process in root.children(recursive=True) if any(service_name in part for part in process.cmdline())
    ]


def test_hanging_model_service_gives_503_while_others_work_and_recovers(strict_gateway):
    headers = {"Authorization": f"Bearer {STRICT_KEYS[1]}"}
    speech = service_processes(strict_gateway, "TextToSpeech")
    assert speech, "speech service process not found"
    for process in speech:
        process.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            hung = pool.submit(
                post_when_allowed, strict_gateway, "/synthesize_speech", headers, json={"text": "Are you there?"}
            )
            caption = post_when_allowed(strict_gateway, "/caption_image", headers, files={"image": png_bytes()})
            assert caption.status_code == 200, caption.text
            response = hung.result(timeout=60)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "Speech synthesis is unavailable" in response.json()["error"]
    finally:
        for process in speech:
            process.send_signal(signal.SIGCONT)
    recovered = post_when_allowed(strict_gateway, "/synthesize_speech", headers, json={"text": "Back again."})
    assert recovered.status_code == 200, recovered.text


def test_killed_model_service_restarts_while_requests_wait(gateway):
    """The documented behaviour: a crashed model service keeps its socket, is restarted by BentoML, and a
    request sent meanwhile waits for it (the gateway retries the connection within BACKEND_TIMEOUT_S,
    600 s here) instead of failing. The 503 for a service that stays away is the hanging-service test."""
    killed = service_processes(gateway, "ImageCaptioning")
    assert killed, "captioning service process not found"
    for process in killed:
        os.kill(process.pid, signal.SIGKILL)
    response = post(gateway, "/caption_image", files={"image": png_bytes()})
    assert response.status_code == 200, response.text
    assert response.json()["caption"]
    restarted = service_processes(gateway, "ImageCaptioning")
    assert restarted and {process.pid for process in restarted}.isdisjoint(process.pid for process in killed)
