"""The OpenAI-compatible routes, named voices, the audio formats and batched images, through real clients.

One tiny-model gateway for the module, called with the official `openai` Python package and the `openai`
npm package (tests/openai_node, installed by `make test` with `npm ci`), each set up with only `base_url`
and `api_key`; native routes with httpx.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
import soundfile
from PIL import Image

from genmedia.contract.errors import InvalidInput
from genmedia.contract.voices import OPENAI_VOICES, SPEAKERS, VOICES
from services.gateway.openai import ImageGeneration, SpeechCreation, openai_error
from testbed.servers import server_missing
from tests.gateways import start_gateway

KEY = "openai-key-0123456789"
RATE_KEY = "openai-rate-key-0123456789"
RATE_LIMIT = 40
NODE_CLIENT = Path(__file__).parent / "openai_node"
FORWARDED = "genmedia_gateway_forwarded_total"
GENERATED = "genmedia_outputs_generated_total"


@pytest.fixture(scope="module")
def gateway(tiny_store, tmp_path_factory):
    server = start_gateway(
        tiny_store,
        tmp_path_factory.mktemp("openai-gateway"),
        GATEWAY_API_KEYS=f"{KEY},{RATE_KEY}",
        RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gateway):
    # No retries: a typed error must surface at once, not after the SDK's backoff.
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def key_of(url: str) -> str:
    return url.split("/files/", 1)[1]


# What the translation layer makes of OpenAI's fields (no server).


def test_size_and_extensions_become_the_image_request():
    generation = ImageGeneration(prompt="a boat", size="128x64", n=2, seed=9, steps=2, output_format="webp")
    request = generation.image_request()
    assert (request.width, request.height, request.seed, request.steps, request.format) == (128, 64, 9, 2, "webp")
    assert generation.n == 2


def test_a_word_is_a_voice_name_and_words_are_a_description():
    assert SpeechCreation(input="Hi.", voice="alloy").speech_request().voice == "alloy"
    described = SpeechCreation(input="Hi.", voice="A deep, slow voice.").speech_request()
    assert (described.voice, described.description) == (None, "A deep, slow voice.")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "width": 64}, "width: unknown field here; /v1/ sets it with size"),
        ({"prompt": "x", "size": "100x64"}, "size: (width) Input should be a multiple of 8"),
        ({"prompt": "x", "output_format": "gif"}, "output_format: (format) Input should be 'png', 'webp' or 'jpeg'"),
    ],
)
def test_image_fields_are_named_as_v1_names_them(body, message):
    with pytest.raises(InvalidInput) as raised:
        ImageGeneration(**body).image_request()
    assert raised.value.message == message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "x", "text": "y"}, "text: unknown field here; /v1/ sets it with input"),
        ({"input": "x", "description": "A voice."}, "description: unknown field here; /v1/ sets it with voice"),
        ({"input": "x" * 2001}, "input: (text) String should have at most 2000 characters"),
    ],
)
def test_speech_fields_are_named_as_v1_names_them(body, message):
    with pytest.raises(InvalidInput) as raised:
        SpeechCreation(**body).speech_request()
    assert raised.value.message == message


def test_openai_error_names_the_field_of_a_400():
    assert openai_error(400, "size: (width) Input should be a multiple of 8") == {
        "message": "size: (width) Input should be a multiple of 8",
        "type": "invalid_request_error",
        "param": "size",
        "code": None,
    }
    assert openai_error(429, "Rate limit reached")["code"] == "rate_limit_exceeded"


# Images.


def test_images_generate_with_url_and_b64_json(client):
    by_url = client.images.generate(prompt="a lighthouse", size="64x64", n=3, extra_body={"seed": 21})
    assert len(by_url.data) == 3
    files = [fetch(image.url) for image in by_url.data]
    assert len({key_of(image.url) for image in by_url.data}) == 3
    for file in files:
        assert Image.open(io.BytesIO(file)).size == (64, 64)

    as_base64 = client.images.generate(
        prompt="a lighthouse", size="64x64", n=3, response_format="b64_json", extra_body={"seed": 21}
    )
    # The same seeded request: the same images, now base64-encoded.
    assert [base64.b64decode(image.b64_json) for image in as_base64.data] == files


def test_n_images_are_one_image_service_call_each_stored_under_its_own_key(client, gateway):
    forwarded, generated = gateway.metric(FORWARDED, service="TextToImage"), gateway.metric(GENERATED)
    result = client.images.generate(prompt="four kites", size="64x64", n=4, extra_body={"seed": 500})
    assert gateway.metric(FORWARDED, service="TextToImage") - forwarded == 1
    assert gateway.metric(GENERATED, capability="text-to-image") - generated == 4
    keys = [key_of(image.url) for image in result.data]
    assert len(set(keys)) == 4
    assert len({fetch(image.url) for image in result.data}) == 4

    # Image 2 alone (seed 500 + 2) is already stored: a cache hit, without the image service.
    forwarded = gateway.metric(FORWARDED, service="TextToImage")
    alone = httpx.post(
        f"{gateway.url}/generate_image",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"prompt": "four kites", "width": 64, "height": 64, "seed": 502},
        timeout=120,
    ).json()
    assert (alone["cached"], alone["file_key"]) == (True, keys[2])
    assert gateway.metric(FORWARDED, service="TextToImage") == forwarded


def test_repeated_seeded_image_is_answered_without_the_image_service(client, gateway):
    first = client.images.generate(prompt="a quiet pond", size="64x64", extra_body={"seed": 77})
    forwarded = gateway.metric(FORWARDED, service="TextToImage")
    again = client.images.generate(prompt="a quiet pond", size="64x64", extra_body={"seed": 77})
    assert again.data[0].url == first.data[0].url
    assert gateway.metric(FORWARDED, service="TextToImage") == forwarded


# Speech: every format decodes at its stated rate, speed changes the length.


def speech(client, response_format: str, **extra) -> bytes:
    response = client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input="Hello there. This is genmedia.",
        response_format=response_format,
        extra_body={"seed": 5, **extra},
    )
    return response.read()


def decoded_seconds(data: bytes, response_format: str) -> tuple[float, int]:
    if response_format == "pcm":
        assert len(data) % 2 == 0
        return len(data) / 2 / 24_000, 24_000
    info = soundfile.info(io.BytesIO(data))
    assert info.channels == 1
    return info.frames / info.samplerate, info.samplerate


def test_audio_speech_in_every_format_decodes_at_its_rate(client, gateway):
    native = httpx.post(
        f"{gateway.url}/synthesize_speech",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"text": "Hello there. This is genmedia.", "voice": "alloy", "seed": 5, "format": "wav"},
        timeout=120,
    ).json()
    expected_rates = {"wav": native["sample_rate"], "flac": native["sample_rate"], "mp3": native["sample_rate"]}
    expected_rates.update(opus=48_000, pcm=24_000)
    for response_format, rate in expected_rates.items():
        seconds, decoded_rate = decoded_seconds(speech(client, response_format), response_format)
        assert decoded_rate == rate, response_format
        # The same seed and voice: the same speech, whatever the container (lossy codecs pad a little).
        assert abs(seconds - native["duration_s"]) < 0.1, (response_format, seconds, native["duration_s"])


def test_speed_scales_the_duration(client):
    normal, _ = decoded_seconds(speech(client, "wav"), "wav")
    for speed in (2.0, 0.5):
        seconds, _ = decoded_seconds(speech(client, "wav", speed=speed), "wav")
        assert abs(seconds / (normal / speed) - 1) <= 0.25, (speed, seconds, normal)


def test_mp3_on_synthesize_speech(gateway):
    result = httpx.post(
        f"{gateway.url}/synthesize_speech",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"text": "An MP3 for the browser.", "format": "mp3"},
        timeout=120,
    ).json()
    served = httpx.get(result["public_url"], timeout=30)
    assert served.headers["content-type"] == "audio/mpeg"
    samples, rate = soundfile.read(io.BytesIO(served.content))
    assert rate == result["sample_rate"] and len(samples) > 0


# Named voices.


def test_voices_lists_every_name_with_its_description(gateway):
    response = httpx.get(f"{gateway.url}/voices", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    voices = {voice["name"]: voice["description"] for voice in response.json()["voices"]}
    assert voices == VOICES
    assert set(OPENAI_VOICES) <= set(voices) and set(SPEAKERS) <= set(voices)


def test_a_voice_and_its_description_share_one_output(gateway):
    def synthesize(**voice):
        return httpx.post(
            f"{gateway.url}/synthesize_speech",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"text": "Same voice.", "seed": 8, **voice},
            timeout=120,
        ).json()

    by_name = synthesize(voice="onyx")
    by_description = synthesize(description=VOICES["onyx"])
    assert by_description["file_key"] == by_name["file_key"]
    assert by_description["cached"] is True


def test_unknown_voice_is_a_400_listing_the_names(gateway, client):
    response = httpx.post(
        f"{gateway.url}/synthesize_speech",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"text": "Hi.", "voice": "bob"},
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("voice: ")
    assert all(f"'{name}'" in response.json()["error"] for name in VOICES)

    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model="tts-1", voice="bob", input="Hi.")
    assert raised.value.param == "voice" and "'alloy'" in raised.value.message


# OpenAI's errors, raised as the SDK's typed errors.


def test_bad_size_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a boat", size="100x100")
    assert raised.value.status_code == 400
    assert raised.value.param == "size" and "multiple of 8" in raised.value.message
    assert raised.value.type == "invalid_request_error"


def test_wrong_key_raises_authentication_error(gateway):
    wrong = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.models.list()
    assert raised.value.code == "invalid_api_key" and "API key" in raised.value.message


def test_rate_limit_raises_rate_limit_error(gateway):
    limited = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=RATE_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        for _ in range(RATE_LIMIT + 5):
            limited.models.list()
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert raised.value.code == "rate_limit_exceeded"


def test_unknown_v1_route_is_a_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "/v1/chat/completions" in raised.value.message


def test_models_lists_the_served_models(client):
    assert {model.id for model in client.models.list()} >= {"text-to-image", "text-to-speech", "image-captioning"}


# The npm package, from Node.


def test_openai_npm_package_from_a_route_handler(gateway):
    node = shutil.which("node")
    if node is None or not (NODE_CLIENT / "node_modules" / "openai").is_dir():
        server_missing("Node.js with tests/openai_node installed (make test runs npm ci) is missing")
    completed = subprocess.run(
        [node, "route.mjs"],
        cwd=NODE_CLIENT,
        env={**os.environ, "GENMEDIA_URL": gateway.url, "GENMEDIA_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200, answer
    assert Image.open(io.BytesIO(fetch(answer["url"]))).size == (64, 64)
    assert answer["contentType"] == "audio/wav"
    samples, _ = soundfile.read(io.BytesIO(base64.b64decode(answer["audio"])))
    assert len(samples) > 0
