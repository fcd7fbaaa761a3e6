"""The spool keeps outputs that storage did not take, across restarts, until a drain puts them up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from genmedia.outputs.spool import Spool, drain, publish, upload_spooled
from genmedia.outputs.storage import InvalidKey, StorageError, StorageUnavailable, StoredObject
from testbed.storage_server import FakeSupabaseStorage

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


class MemoryStore:
    """An `ObjectStore` in a dict that can be switched down, refusing, or up, and counts its puts."""

    name = "memory storage"

    def __init__(self):
        self.objects: dict[str, StoredObject] = {}
        self.failure: StorageError | None = None
        self.puts = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        if self.failure is not None:
            raise self.failure
        self.objects[key] = StoredObject(data, content_type)

    def exists(self, key: str) -> bool:
        return key in self.objects

    def get(self, key: str) -> StoredObject:
        return self.objects[key]

    def public_url(self, key: str) -> str:
        return f"memory://{key}"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def spool(tmp_path) -> Spool:
    return Spool(tmp_path / "spool")


def test_publish_with_storage_down_spools_and_reraises(store, spool):
    store.failure = StorageUnavailable("memory storage is down")

    with pytest.raises(StorageUnavailable):
        publish(store, spool, "images/a.png", PNG, "image/png")

    assert spool.keys() == ["images/a.png"]
    assert spool.load("images/a.png") == StoredObject(PNG, "image/png")


def test_publish_with_storage_up_spools_nothing(store, spool):
    publish(store, spool, "images/a.png", PNG, "image/png")

    assert store.objects["images/a.png"] == StoredObject(PNG, "image/png")
    assert spool.keys() == []


def test_a_restarted_process_finds_what_was_spooled(store, spool, tmp_path):
    store.failure = StorageUnavailable("down")
    with pytest.raises(StorageUnavailable):
        publish(store, spool, "speech/a.wav", b"RIFF", "audio/wav")

    restarted = Spool(tmp_path / "spool")

    assert restarted.keys() == ["speech/a.wav"]
    assert restarted.load("speech/a.wav") == StoredObject(b"RIFF", "audio/wav")


def test_upload_spooled_puts_the_object_up_and_forgets_it(store, spool):
    spool.save("images/a.png", PNG, "image/png")

    assert upload_spooled(store, spool, "images/a.png") == "image/png"
    assert store.objects["images/a.png"] == StoredObject(PNG, "image/png")
    assert spool.load("images/a.png") is None
    assert upload_spooled(store, spool, "images/a.png") is None


def test_drain_after_recovery_uploads_everything_and_empties_the_spool(store, spool):
    store.failure = StorageUnavailable("down")
    for index in range(3):
        with pytest.raises(StorageUnavailable):
            publish(store, spool, f"images/{index}.png", PNG + bytes([index]), "image/png")

    store.failure = None
    uploaded = drain(store, spool)

    assert uploaded == 3
    assert spool.keys() == []
    assert store.objects["images/2.png"] == StoredObject(PNG + bytes([2]), "image/png")


def test_drain_stops_at_the_first_unavailable_and_keeps_the_rest(store, spool):
    for index in range(3):
        spool.save(f"images/{index}.png", PNG, "image/png")
    store.failure = StorageUnavailable("down")

    assert drain(store, spool) == 0
    assert store.puts == 1  # one full retry budget is enough to know
    assert len(spool.keys()) == 3


def test_drain_keeps_an_object_storage_refuses_and_uploads_the_others(store, spool):
    spool.save("images/a.png", PNG, "image/png")
    spool.save("images/b.png", PNG, "image/png")
    refused_key = spool.keys()[0]
    original_put = store.put

    def refuse_one(key, data, content_type):
        if key == refused_key:
            raise StorageError("memory storage refused it")
        original_put(key, data, content_type)

    store.put = refuse_one

    assert drain(store, spool) == 1
    assert spool.keys() == [refused_key]


def test_drain_through_supabase_after_an_outage(spool):
    with FakeSupabaseStorage() as fake:
        store = fake.new_store(retry_budget_s=0.5)
        fake.set_down(True)
        with pytest.raises(StorageUnavailable):
            publish(store, spool, "images/a.png", PNG, "image/png")

        fake.set_down(False)

        assert drain(store, spool) == 1
        assert store.get("images/a.png").data == PNG
        assert spool.keys() == []


def test_concurrent_saves_of_the_same_and_different_keys_stay_whole(spool):
    keys = [f"images/{index % 4}.png" for index in range(40)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: spool.save(key, PNG * 100, "image/png"), keys))

    assert sorted(spool.keys()) == [f"images/{index}.png" for index in range(4)]
    assert all(spool.load(key) == StoredObject(PNG * 100, "image/png") for key in set(keys))
    assert [path.name for path in spool.directory.iterdir() if path.name.endswith(".tmp")] == []


def test_unsafe_keys_are_refused(spool):
    with pytest.raises(InvalidKey):
        spool.save("../outside.png", PNG, "image/png")
