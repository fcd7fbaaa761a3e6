"""The spool: outputs whose upload failed wait on local disk until storage takes them again.

A generated image or clip is paid GPU work. When `publish` cannot upload it, the bytes go to the spool
before the error reaches the caller (who answers 503), so nothing is thrown away, and `drain` puts them up
once storage is back, also after a restart: each entry is one file, written atomically.

An entry is named by the hash of its key (keys have slashes; the spool is flat) and holds one JSON line
with the key and content type, then the bytes. Writers never share a temporary file, so saving the same
key from two threads leaves one whole entry; keys are content-addressed, so either entry is the same
object, and uploading it twice is an idempotent upsert.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from genmedia import logger
from genmedia.outputs.storage import (
    ObjectStore,
    StorageError,
    StorageUnavailable,
    StoredObject,
    validate_key,
    write_atomically,
)

ENTRY_SUFFIX = ".entry"


class Spool:
    """Outputs waiting for storage, one file each in `directory` (created on first save)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def save(self, key: str, data: bytes, content_type: str) -> None:
        header = json.dumps({"key": key, "content_type": content_type}).encode()
        write_atomically(self._entry(key), header + b"\n" + data)

    def load(self, key: str) -> StoredObject | None:
        try:
            header, _, data = self._entry(key).read_bytes().partition(b"\n")
        except FileNotFoundError:
            return None
        return StoredObject(data, json.loads(header)["content_type"])

    def remove(self, key: str) -> None:
        self._entry(key).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        """The spooled keys, oldest first, so a drain uploads in the order outputs were made."""
        entries = []
        for path in self.directory.glob(f"*{ENTRY_SUFFIX}"):
            try:
                with path.open("rb") as entry:
                    header = json.loads(entry.readline())  # the key only: the bytes can be megabytes
                entries.append((path.stat().st_mtime, header["key"]))
            except FileNotFoundError:
                continue  # uploaded and removed by another thread or process meanwhile
        return [key for _, key in sorted(entries)]

    def _entry(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(validate_key(key).encode()).hexdigest() + ENTRY_SUFFIX)


def publish(store: ObjectStore, spool: Spool, key: str, data: bytes, content_type: str) -> None:
    """Upload an output; if storage fails, keep it in the spool and re-raise (the caller answers 503)."""
    try:
        store.put(key, data, content_type)
    except StorageError:
        spool.save(key, data, content_type)
        logger.warning("kept %s in the spool: %s did not take it", key, store.name)
        raise


def upload_spooled(store: ObjectStore, spool: Spool, key: str) -> str | None:
    """Upload `key` from the spool and forget it there; answers its content type, None if it is not spooled.

    The entry is removed only after the upload succeeded, so a crash in between uploads it again later.
    """
    spooled = spool.load(key)
    if spooled is None:
        return None
    store.put(key, spooled.data, spooled.content_type)
    spool.remove(key)
    return spooled.content_type


def drain(store: ObjectStore, spool: Spool) -> int:
    """Upload everything spooled; return how many went up.

    Stops at the first `StorageUnavailable` (the rest would fail the same way, each after a full retry
    budget). An object that storage refuses stays spooled, and the others still go up.
    """
    uploaded = 0
    # Listed once: whatever is spooled during this drain waits for the next one.
    spooled = spool.keys()
    for key in spooled:
        try:
            if upload_spooled(store, spool, key):
                uploaded += 1
        except StorageUnavailable as error:
            logger.warning("spool drain stopped, %d uploaded: %s", uploaded, error)
            break
        except StorageError as error:
            logger.error("left %s in the spool: %s", key, error)
    return uploaded
