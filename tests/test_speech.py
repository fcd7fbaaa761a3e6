"""`POST /synthesize_speech` on the speech service alone, through a real `bentoml serve` of the tiny model.

The tiny Parler-TTS has random weights: its audio is noise, 0.5 to 2 s a piece, but of the real shape (44.1 kHz
codec frames, one row per piece of text), so these tests check the contract, not how the speech sounds.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile
import yaml

from genmedia.outputs.storage import LocalObjectStore
from genmedia.text_chunks import MAX_PIECE_CHARS, split_for_speech
from testbed.serving import Server, base_env

VOICE = "A calm female voice, close to the microphone."
# Eight sentences of about 120 characters: four pieces of two sentences each.
LONG_TEXT = " ".join(
    f"Sentence number {number} of this story goes on for a while, so that two of them fill most of one piece."
    for number in range(1, 9)
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def speech(tiny_store, workdir):
    """The speech service on a free port, storing files in a fresh local directory; started once for the file."""
    env = base_env(
        tiny_store,
        STORAGE_BACKEND="local",
        LOCAL_STORAGE_DIR=str(workdir / "files"),
        SPOOL_DIR=str(workdir / "spool"),
    )
    server = Server("services.text_to_speech:TextToSpeech", env, workdir / "serve.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files(workdir):
    """The service's storage, read directly."""
    return LocalObjectStore(workdir / "files", "http://x")


@pytest.fixture(scope="module")
def model_sampling_rate(tiny_store) -> int:
    """The sampling rate recorded in the stored model's metadata."""
    model_dir = tiny_store / "models" / "text-to-speech"
    version = (model_dir / "latest").read_text().strip()
    return int(yaml.safe_load((model_dir / version / "model.yaml").read_text())["metadata"]["sampling_rate"])


def synthesize(server: Server, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/synthesize_speech", json=body, timeout=120)


def stored_audio(files: LocalObjectStore, key: str) -> tuple[np.ndarray, int]:
    return soundfile.read(io.BytesIO(files.get(key).data), dtype="float32")


@pytest.mark.parametrize("format", ["wav", "flac", "ogg"])
def test_speech_is_stored_as_audio_of_the_answered_format_rate_and_duration(speech, files, model_sampling_rate, format):
    response = synthesize(speech, text="Hello there, how are you?", description=VOICE, format=format, seed=11)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["format"] == format
    assert result["cached"] is False
    assert result["file_key"].startswith("audio/") and result["file_key"].endswith(f".{format}")
    assert result["public_url"].endswith(result["file_key"])
    assert result["model"].startswith("text-to-speech:")
    assert result["sample_rate"] == model_sampling_rate
    samples, rate = stored_audio(files, result["file_key"])
    assert rate == model_sampling_rate
    assert abs(len(samples) / rate - result["duration_s"]) <= 1 / rate
    assert result["duration_s"] > 0.4
    assert np.abs(samples).max() > 1e-3, "the audio is silent"


def test_same_seed_gives_the_same_samples(speech, files):
    # WAV and FLAC are both lossless 16-bit: the same generation decodes to the same samples.
    request = dict(text="Repeat after me.", description=VOICE, seed=5)
    wav = synthesize(speech, **request, format="wav").json()
    flac = synthesize(speech, **request, format="flac").json()

    wav_samples, _ = stored_audio(files, wav["file_key"])
    flac_samples, _ = stored_audio(files, flac["file_key"])
    assert np.array_equal(wav_samples, flac_samples)


def test_same_request_with_seed_is_answered_from_storage(speech):
    request = dict(text="Say this only once.", description=VOICE, format="wav", seed=42)
    first = synthesize(speech, **request).json()
    generated = speech.metric("genmedia_outputs_generated_total", capability="text-to-speech")
    assert first["cached"] is False and generated >= 1

    second = synthesize(speech, **request)

    assert second.status_code == 200, second.text
    assert second.json()["file_key"] == first["file_key"]
    assert second.json()["cached"] is True
    assert second.json()["duration_s"] == first["duration_s"]
    assert speech.metric("genmedia_outputs_generated_total", capability="text-to-speech") == generated


def test_different_seeds_give_different_files(speech, files):
    one = synthesize(speech, text="Pick a voice.", description=VOICE, format="wav", seed=1).json()
    two = synthesize(speech, text="Pick a voice.", description=VOICE, format="wav", seed=2).json()

    assert one["file_key"] != two["file_key"]
    assert files.get(one["file_key"]).data != files.get(two["file_key"]).data


def test_seed_is_random_when_absent_and_every_answer_is_new(speech):
    one = synthesize(speech, text="No seed given.", description=VOICE)
    two = synthesize(speech, text="No seed given.", description=VOICE)

    assert one.status_code == two.status_code == 200
    assert one.json()["file_key"] != two.json()["file_key"]
    assert not one.json()["cached"] and not two.json()["cached"]


def test_long_text_is_split_at_sentence_ends_and_spoken_in_full(speech, files):
    assert len(LONG_TEXT) > MAX_PIECE_CHARS and len(split_for_speech(LONG_TEXT)) >= 4
    single = synthesize(speech, text="Sentence number one goes on.", description=VOICE, seed=3).json()

    long = synthesize(speech, text=LONG_TEXT, description=VOICE, seed=3)

    assert long.status_code == 200, long.text
    # The tiny model speaks 0.5 to 2 s a piece: four pieces and their pauses outlast any single one.
    assert long.json()["duration_s"] > single["duration_s"]
    samples, rate = stored_audio(files, long.json()["file_key"])
    assert abs(len(samples) / rate - long.json()["duration_s"]) <= 1 / rate


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("text", {"text": ""}),
        ("text", {"text": "  \n\t "}),
        ("text", {"text": "a" * 2001}),
        ("description", {"text": "Hi.", "description": "d" * 501}),
        ("format", {"text": "Hi.", "format": "mp3"}),
        ("seed", {"text": "Hi.", "seed": -1}),
        ("seed", {"text": "Hi.", "seed": 2**32}),
    ],
    ids=["empty-text", "blank-text", "long-text", "long-description", "unknown-format", "negative-seed", "big-seed"],
)
def test_invalid_input_is_refused_naming_the_field(speech, field, body):
    response = synthesize(speech, **body)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error, str) and field in error
