"""Locust scenario: a mix of the gateway's three routes, cached repeats, and requests that must be refused.

Run by `make load` (`load_tests/run_load.py`) against a gateway on tiny models, or by hand against any
deployment:

    GENMEDIA_API_KEY=... locust -f load_tests/locustfile.py --host https://genmedia.example.com

Each simulated user, with the API key of `GENMEDIA_API_KEY`, picks by weight:
- a fresh image (random seed, a small size) or fresh speech: real work for the model services;
- a seeded image or speech request from a short list, repeated across users: after its first time, the
  gateway answers it from storage (`cached: true`) without waking a model;
- a caption for a small PNG upload;
- an invalid request (a bad field, an upload that is no image): the gateway must answer 400 with an `error`
  naming the problem. Those 400s are counted as successes, and anything else they get as a failure.
Every other answer than 200 to a valid request is a failure, so a clean run has no failures at all.
"""

from __future__ import annotations

import io
import os
import random

from locust import HttpUser, between, task

API_KEY = os.environ.get("GENMEDIA_API_KEY", "")
SIDES = (64, 96, 128)
PROMPTS = ("a lighthouse at dawn", "a red fox in the snow", "a bowl of ramen, studio light")
# Seeded requests shared by all users: the first of each generates, every later one is a cache hit.
CACHED_IMAGES = [{"prompt": prompt, "width": 64, "height": 64, "seed": seed} for prompt in PROMPTS for seed in (1, 2)]
CACHED_SPEECH = [{"text": "Welcome back. Your order is on its way.", "seed": seed} for seed in (1, 2, 3)]
INVALID_JSON = [
    ("/generate_image", {"prompt": "", "width": 64, "height": 64}, "prompt"),
    ("/generate_image", {"prompt": "a cat", "width": 100, "height": 64}, "width"),
    ("/generate_image", {"prompt": "a cat", "width": 64, "height": 64, "steps": 0}, "steps"),
    ("/synthesize_speech", {"text": ""}, "text"),
    ("/synthesize_speech", {"text": "Hello.", "format": "mp3"}, "format"),
]


def png_upload(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), ((seed * 37) % 256, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


UPLOADS = [png_upload(seed) for seed in range(8)]


class GenmediaUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    def expect_ok(self, route: str, name: str, **request) -> None:
        with self.client.post(route, name=name, catch_response=True, **request) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(4)
    def fresh_image(self) -> None:
        side = random.choice(SIDES)
        request = {"prompt": random.choice(PROMPTS), "width": side, "height": side, "seed": random.randrange(2**32)}
        self.expect_ok("/generate_image", "/generate_image", json=request)

    @task(3)
    def cached_image(self) -> None:
        self.expect_ok("/generate_image", "/generate_image (seeded repeat)", json=random.choice(CACHED_IMAGES))

    @task(2)
    def fresh_speech(self) -> None:
        request = {"text": "Hello there. This is a load test.", "seed": random.randrange(2**32)}
        self.expect_ok("/synthesize_speech", "/synthesize_speech", json=request)

    @task(1)
    def cached_speech(self) -> None:
        self.expect_ok("/synthesize_speech", "/synthesize_speech (seeded repeat)", json=random.choice(CACHED_SPEECH))

    @task(2)
    def caption(self) -> None:
        image = random.choice(UPLOADS)
        self.expect_ok("/caption_image", "/caption_image", files={"image": ("photo.png", image, "image/png")})

    @task(2)
    def invalid(self) -> None:
        """A request the gateway must refuse with 400 and an error naming the field; that is a success."""
        if random.random() < 0.25:
            route, field = "/caption_image", "image"
            request = {"files": {"image": ("notes.png", b"just some text, not an image", "image/png")}}
        else:
            route, body, field = random.choice(INVALID_JSON)
            request = {"json": body}
        with self.client.post(
            route, name=f"{route} (invalid, 400 expected)", catch_response=True, **request
        ) as response:
            try:
                error = str(response.json().get("error", ""))
            except (ValueError, AttributeError):  # not JSON, or not an object
                error = ""
            if response.status_code == 400 and error.startswith(field):
                response.success()
            else:
                response.failure(f"expected 400 naming {field!r}, got {response.status_code}: {response.text[:200]}")
