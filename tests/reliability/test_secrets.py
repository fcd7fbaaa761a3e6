"""No secret (the Supabase service role key, the API keys) in any answer, error message, `/metrics`, the
OpenAPI spec or the server log, including the answers given while storage fails.

The session's conftest also searches the whole server log once every test has run.
"""

from __future__ import annotations

import httpx
import pytest

from testbed.composition import API_KEY, AUTH, BUCKET, SUPABASE_KEY, new_seed
from testbed.figures import FIGURES

SECRETS = {"Supabase service role key": SUPABASE_KEY, "API key": API_KEY}


@pytest.fixture(scope="module")
def answers(composition, storage):
    """Answers from every path that could echo configuration: refusals, validation, storage failures,
    and BentoML's own pages."""
    url = composition.url
    wrong_key = {"Authorization": "Bearer " + API_KEY[:-1]}
    collected = [
        httpx.post(f"{url}/generate_image", headers=wrong_key, json={"prompt": "x"}, timeout=30),
        httpx.post(f"{url}/generate_image", json={"prompt": "x"}, timeout=30),
        composition.post("/generate_image", json={"prompt": "", "width": 7}),
        composition.post("/generate_image", content=b"{", headers={"Content-Type": "application/json"}),
        composition.post("/caption_image", files={"image": ("x.png", b"not an image", "image/png")}),
        composition.post("/jobs/nope/cancel"),
        httpx.get(f"{url}/jobs/nope", headers=AUTH, timeout=30),
        httpx.get(f"{url}/files/images/{'0' * 64}.png", timeout=30),
        httpx.get(f"{url}/no-such-route", timeout=30),
    ]
    # Refused (403: a revoked key, say): not retried; the error texts that reach logs quote Storage's answer.
    faulted = [(composition.image, new_seed()), (composition.image, new_seed()), (composition.speech, new_seed())]
    storage.fail_next(3, 403)
    FIGURES.inject()
    try:
        collected.append(faulted[0][0](seed=faulted[0][1]))
    finally:
        storage.clear_faults()
    storage.set_down(True)
    FIGURES.inject()
    try:
        collected += [call(seed=seed) for call, seed in faulted[1:]]
    finally:
        storage.set_down(False)
    for response in collected:
        FIGURES.record(response, fault=True)
    # The same requests again, now that storage takes them: what the faults spooled is stored, not regenerated.
    for call, seed in faulted:
        again = FIGURES.record(call(seed=seed))
        assert again.status_code == 200, again.text
        FIGURES.spooled(again.json()["file_key"])
    collected += [
        httpx.get(f"{url}{page}", timeout=60) for page in ("/metrics", "/docs.json", "/docs", "/readyz", "/livez")
    ]
    return collected


def test_storage_failures_were_answered(answers):
    # Sanity: the storage faults above did reach the answers being searched.
    assert any(response.status_code == 503 and "Supabase Storage" in response.text for response in answers)


@pytest.mark.parametrize("name", SECRETS)
def test_no_secret_in_any_answer_body_or_header(answers, name):
    secret = SECRETS[name]
    for response in answers:
        headers = "\n".join(f"{key}: {value}" for key, value in response.headers.items())
        assert secret not in response.text and secret not in headers, f"{response.request.url} shows the {name}"


@pytest.mark.parametrize("name", SECRETS)
def test_no_secret_in_the_server_log(composition, answers, name):
    assert SECRETS[name] not in composition.log_path.read_text(errors="replace")


def test_no_secret_in_the_spool(composition, answers):
    for entry in composition.spool_dir.rglob("*"):
        if entry.is_file():
            data = entry.read_bytes()
            assert all(secret.encode() not in data for secret in SECRETS.values()), entry


def test_stored_urls_carry_no_key(composition, answers, storage):
    response = composition.image()
    assert response.status_code == 200, response.text
    assert SUPABASE_KEY not in response.json()["public_url"]
    assert f"/object/public/{BUCKET}/" in response.json()["public_url"]
