"""The storage contract, checked on every backend; then what only Supabase Storage adds (retries, buckets).

Supabase runs through the real `storage3` client against `FakeSupabaseStorage` on loopback, each test on a
fresh bucket. The `live` variant runs the same contract against a real project when SUPABASE_URL and
SUPABASE_SERVICE_ROLE_KEY are set (`pytest -m live`), under a random key prefix that it removes afterwards.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError

from genmedia.outputs.storage import (
    InvalidKey,
    LocalObjectStore,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    SupabaseObjectStore,
    open_store,
    validate_key,
)
from genmedia.settings import Settings
from testbed.storage_server import FakeSupabaseStorage

PUBLIC_BASE_URL = "http://gateway.test:3000"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--boundary-lookalike\r\n"
LIVE = bool(os.environ.get("SUPABASE_URL") and os.environ.get("SUPABASE_SERVICE_ROLE_KEY"))

# Keys that would escape a storage root or be read differently by a file system or URL parser.
UNSAFE_KEYS = ["../escape.png", "/etc/passwd", "images\\evil.png", "images/nul\x00.png"]


@pytest.fixture
def fake_supabase():
    with FakeSupabaseStorage() as storage:
        yield storage


@pytest.fixture
def prefix() -> str:
    """A key prefix of one test, so tests never meet each other's objects (on a live project, too)."""
    return f"genmedia-tests/{uuid.uuid4().hex}"


@pytest.fixture(
    params=[
        "local",
        "supabase",
        "supabase-private",
        pytest.param(
            "supabase-live",
            marks=[pytest.mark.live, pytest.mark.skipif(not LIVE, reason="needs SUPABASE_URL and a service key")],
        ),
    ]
)
def store(request, tmp_path, prefix):
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "files", PUBLIC_BASE_URL)
    elif request.param == "supabase-live":
        settings = Settings.from_env({**os.environ, "STORAGE_BACKEND": "supabase"})
        live = open_store(settings)
        yield live
        live.close()
        remove_live_prefix(settings, prefix)
    else:
        with FakeSupabaseStorage() as fake:
            yield fake.new_store(public_bucket=request.param == "supabase")


def remove_live_prefix(settings: Settings, prefix: str) -> None:
    key = settings.supabase_service_role_key
    headers = {"apiKey": key, "Authorization": f"Bearer {key}"}
    with SyncStorageClient(f"{settings.supabase_url}/storage/v1/", headers) as client:
        bucket = client.from_(settings.supabase_bucket)
        try:
            names = [f"{prefix}/{item['name']}" for item in bucket.list(prefix)]
        except StorageApiError as error:
            if str(error.status) == "404":
                return  # no bucket yet: the test uploaded nothing
            raise
        if names:
            bucket.remove(names)


def test_the_live_cleanup_removes_what_a_test_made(fake_supabase, prefix):
    settings = Settings.from_env(fake_supabase.env(bucket="media"))
    store = open_store(settings)
    store.put(f"{prefix}/a.png", PNG, "image/png")
    store.put("kept.png", PNG, "image/png")
    store.close()

    remove_live_prefix(settings, prefix)

    assert list(fake_supabase.objects) == [("media", "kept.png")]


# The contract: every backend.


def test_put_then_get_returns_the_same_bytes_and_content_type(store, prefix):
    store.put(f"{prefix}/image.png", PNG, "image/png")

    stored = store.get(f"{prefix}/image.png")

    assert stored.data == PNG
    assert stored.content_type == "image/png"


def test_public_url_serves_the_same_bytes_and_content_type(store, prefix):
    key = f"{prefix}/speech.wav"
    store.put(key, PNG, "audio/wav")

    url = store.public_url(key)

    if isinstance(store, LocalObjectStore):
        assert url == f"{PUBLIC_BASE_URL}/files/{key}"  # served by the gateway's GET /files/{file_key}
    else:
        response = httpx.get(url)  # no key: a public or signed URL opens as a plain link
        assert response.status_code == 200, response.text
        assert response.content == PNG
        assert response.headers["content-type"] == "audio/wav"


def test_exists_only_after_put(store, prefix):
    assert store.exists(f"{prefix}/image.png") is False

    store.put(f"{prefix}/image.png", PNG, "image/png")

    assert store.exists(f"{prefix}/image.png") is True
    assert store.exists(f"{prefix}/other.png") is False


def test_content_type_is_that_of_the_stored_object_or_none(store, prefix):
    assert store.content_type(f"{prefix}/image.png") is None

    store.put(f"{prefix}/image.png", PNG, "image/png")
    store.put(f"{prefix}/withheld.png", b'{"withheld": "x"}', "application/vnd.genmedia.withheld+json")

    assert store.content_type(f"{prefix}/image.png") == "image/png"
    assert store.content_type(f"{prefix}/withheld.png") == "application/vnd.genmedia.withheld+json"
    assert store.content_type(f"{prefix}/other.png") is None


def test_putting_a_key_again_replaces_it(store, prefix):
    store.put(f"{prefix}/image.png", b"first", "image/png")
    store.put(f"{prefix}/image.png", PNG, "image/png")

    assert store.get(f"{prefix}/image.png").data == PNG


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused_by_every_method(store, key):
    for call in (
        lambda: store.put(key, PNG, "image/png"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.public_url(key),
    ):
        with pytest.raises(InvalidKey):
            call()


def test_get_of_a_missing_key_raises_object_not_found(store, prefix):
    store.put(f"{prefix}/present.png", PNG, "image/png")

    with pytest.raises(ObjectNotFound, match="missing.png"):
        store.get(f"{prefix}/missing.png")


# Keys.


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "empty"),
        ("../x.png", "'..' segment"),
        ("images/../../x.png", "'..' segment"),
        ("/abs/x.png", "absolute"),
        ("images\\x.png", "backslash"),
        ("images/x\x00.png", "control character"),
        ("images/x\n.png", "control character"),
        ("images//x.png", "empty segment"),
        ("images/", "empty segment"),
        (".meta/x.png.json", "starting with '.'"),
        ("images/x y.png", "outside A-Z"),
        ("images/%2e%2e/x.png", "outside A-Z"),
        ("x" * 600, "600 characters long"),
    ],
)
def test_validate_key_says_what_is_wrong(key, complaint):
    with pytest.raises(InvalidKey, match=re.escape(complaint)):
        validate_key(key)


@pytest.mark.parametrize("key", ["images/3f2a.png", "speech/a-b_c.d/e.wav", "x"])
def test_validate_key_accepts_plain_relative_paths(key):
    assert validate_key(key) == key


# Local storage.


def test_local_store_refuses_a_symlink_that_leads_out_of_the_root(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "files" / "link").symlink_to(tmp_path / "outside")
    store = LocalObjectStore(tmp_path / "files", PUBLIC_BASE_URL)

    with pytest.raises(InvalidKey, match="outside"):
        store.put("link/x.png", PNG, "image/png")
    assert list((tmp_path / "outside").iterdir()) == []


def test_local_put_leaves_only_the_object_and_its_content_type(tmp_path):
    store = LocalObjectStore(tmp_path, PUBLIC_BASE_URL)

    store.put("images/a.png", PNG, "image/png")
    store.put("images/a.png", PNG, "image/png")

    files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert files == [".meta/images/a.png.json", "images/a.png"]


# Choosing the backend.


def test_open_store_follows_storage_backend(tmp_path, fake_supabase):
    local = open_store(Settings.from_env({"LOCAL_STORAGE_DIR": str(tmp_path)}))
    supabase = open_store(Settings.from_env(fake_supabase.env(bucket="media")))

    assert isinstance(local, LocalObjectStore) and local.root == tmp_path.resolve()
    assert isinstance(supabase, SupabaseObjectStore) and supabase.name == "Supabase Storage (media)"
    supabase.put("a.png", PNG, "image/png")
    supabase.close()
    assert fake_supabase.objects["media", "a.png"].data == PNG


# Supabase Storage: buckets.


def test_the_bucket_is_created_on_first_upload_and_an_existing_one_is_fine(fake_supabase):
    first = fake_supabase.new_store(bucket="media")
    second = fake_supabase.new_store(bucket="media")  # e.g. another worker process

    first.put("a.png", PNG, "image/png")
    second.put("b.png", PNG, "image/png")

    assert fake_supabase.buckets["media"].public is True
    assert fake_supabase.bucket_creations == 2  # the second was answered "409 Duplicate"
    assert second.get("a.png").data == PNG


def test_a_private_bucket_answers_signed_urls_for_one_object_until_they_expire(fake_supabase):
    store = fake_supabase.new_store(public_bucket=False, signed_url_ttl=1)
    store.put("a.png", PNG, "image/png")
    store.put("b.png", b"other", "image/png")

    url = store.public_url("a.png")

    assert fake_supabase.buckets[store.bucket_id].public is False
    assert httpx.get(url).content == PNG
    assert httpx.get(url.replace("/a.png?", "/b.png?")).status_code == 400
    time.sleep(1.2)
    assert httpx.get(url).status_code == 400


def test_first_uploads_from_a_thread_pool_all_succeed(fake_supabase):
    store = fake_supabase.new_store()
    keys = [f"images/{index}.png" for index in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: store.put(key, PNG, "image/png"), keys))

    assert all(fake_supabase.uploads[key] == 1 for key in keys)
    assert [fake_supabase.buckets[store.bucket_id].public] == [True]


# Supabase Storage: failures.


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_failures_are_retried_through(fake_supabase, status):
    store = fake_supabase.new_store()
    store.put("warm.png", PNG, "image/png")  # the bucket exists: every request below is an upload
    seen = fake_supabase.requests_seen

    fake_supabase.fail_next(2, status=status)
    store.put("a.png", PNG, "image/png")

    assert fake_supabase.requests_seen - seen == 3
    assert store.get("a.png").data == PNG


def test_a_request_that_hangs_is_retried_after_the_timeout(fake_supabase):
    store = fake_supabase.new_store(timeout_s=0.3, retry_budget_s=3.0)
    store.put("warm.png", PNG, "image/png")

    fake_supabase.hang_next(1, seconds=2.0)
    started = time.monotonic()
    store.put("a.png", PNG, "image/png")

    assert time.monotonic() - started < 1.5  # the second attempt answered; the hung one was abandoned
    assert store.get("a.png").data == PNG


def test_storage_that_stays_down_raises_unavailable_within_the_budget(fake_supabase):
    store = fake_supabase.new_store(retry_budget_s=1.0)
    fake_supabase.set_down(True)

    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        store.put("images/a.png", PNG, "image/png")

    assert time.monotonic() - started < 1.0 + 0.5
    assert fake_supabase.requests_seen > 1  # it did retry
    message = str(raised.value)
    assert store.name in message and "upload" in message and "images/a.png" in message
    assert fake_supabase.service_key not in message


def test_a_hang_on_every_attempt_still_ends_within_the_budget(fake_supabase):
    store = fake_supabase.new_store(timeout_s=0.4, retry_budget_s=1.0)
    fake_supabase.hang_next(100, seconds=5.0)

    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="Timeout"):
        store.put("a.png", PNG, "image/png")

    assert time.monotonic() - started < 1.0 + 0.3


def test_a_refusal_is_not_retried_and_does_not_leak_the_key(fake_supabase):
    store = fake_supabase.new_store(service_key="wrong-service-role-key")

    with pytest.raises(StorageError) as raised:
        store.put("a.png", PNG, "image/png")

    assert not isinstance(raised.value, StorageUnavailable)
    assert fake_supabase.requests_seen == 1
    assert "wrong-service-role-key" not in str(raised.value)
    assert store.name in str(raised.value)


def test_a_wrong_bearer_token_is_refused_like_storage_does(fake_supabase):
    headers = {"apiKey": fake_supabase.service_key, "Authorization": "Bearer forged"}

    with (
        SyncStorageClient(f"{fake_supabase.url}/storage/v1/", headers) as client,
        pytest.raises(StorageApiError, match="invalid signature") as raised,
    ):
        client.list_buckets()

    assert str(raised.value.status) == "403"
