"""Where generated files go: object storage, and an on-disk spool when storage fails.

Paid GPU work is never thrown away. An output whose upload fails is kept in the spool under its
content-addressed key and the caller gets 503 + Retry-After; the next identical request uploads it from
the spool instead of generating again, and a background thread drains the spool (at start too, so outputs
spooled before a crash reach storage). Storage calls are blocking, so they run in threads, never on the
event loop.

An output the safety checker withholds (`genmedia.safety`) is never stored: a small marker object takes its
place under the same key, with a content type of its own, so a repeat of the request finds it and is refused
(`Withheld`, 422) without generating again, in the gateway's cache lookup as in the service's.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from genmedia import logger
from genmedia.contract.errors import STORAGE_RETRY_AFTER_S, Unavailable, Withheld
from genmedia.metrics import metrics
from genmedia.outputs import spool as spooling
from genmedia.outputs.storage import ObjectStore, StorageError, StorageUnavailable, open_store
from genmedia.settings import Settings

DRAIN_INTERVAL_S = 30
WITHHELD_CONTENT_TYPE = "application/vnd.genmedia.withheld+json"


def kept_for_retry(error: StorageUnavailable) -> Unavailable:
    """The client's 503 for an output that is spooled while storage is down."""
    return Unavailable(f"{error} The result is kept and will be stored on retry.", retry_after=STORAGE_RETRY_AFTER_S)


class OutputStore:
    """Storage for one capability's outputs (named by its model role), with a spool when `spooled` is set."""

    def __init__(self, capability: str, settings: Settings, *, spooled: bool = True):
        self.capability = capability
        self.store: ObjectStore = open_store(settings)
        self.spool = spooling.Spool(settings.spool_dir / capability) if spooled else None

    def public_url(self, key: str) -> str:
        return self.store.public_url(key)

    async def find(self, key: str, where: str) -> bool:
        """True when `key` is in storage, uploading it from the spool first if it was spooled.

        Raises `Withheld` (422) when a withheld output's marker is stored there, and `Unavailable` (503) when
        the output is spooled but storage is still down: the client retries later and the GPU is not woken
        for work already done. When storage cannot even say whether the key exists, this answers False so
        the work is done (and spooled) rather than refused.
        """
        content_type = None
        if self.spool is not None:
            try:
                content_type = await asyncio.to_thread(spooling.upload_spooled, self.store, self.spool, key)
            except StorageUnavailable as error:
                raise kept_for_retry(error) from None
            if content_type is not None:
                metrics().spool_uploads.labels(self.capability).inc()
        if content_type is None:
            try:
                content_type = await asyncio.to_thread(self.store.content_type, key)
            except StorageError as error:
                logger.warning("cache lookup skipped for %s: %s", key, error)
                return False
        if content_type == WITHHELD_CONTENT_TYPE:
            raise Withheld()
        if content_type is not None:
            metrics().cache_hits.labels(self.capability, where).inc()
        return content_type is not None

    async def save(self, key: str, data: bytes, content_type: str) -> None:
        """Upload `data` under `key`; on failure it stays in the spool and a 503 is raised."""
        try:
            await asyncio.to_thread(spooling.publish, self.store, self.spool, key, data, content_type)
        except StorageError as error:
            metrics().storage_failures.labels(self.capability).inc()
            if isinstance(error, StorageUnavailable):
                raise kept_for_retry(error) from None
            raise

    async def withhold(self, key: str) -> None:
        """Store the marker of a withheld output under its key (spooled like an output if storage fails)."""
        marker = json.dumps({"withheld": "flagged by the safety checker"}).encode()
        await self.save(key, marker, WITHHELD_CONTENT_TYPE)

    def start_draining(self, interval_s: float = DRAIN_INTERVAL_S) -> None:
        """Upload spooled outputs now and every `interval_s`, in a daemon thread."""

        def drain_forever() -> None:
            while True:
                try:
                    if drained := spooling.drain(self.store, self.spool):
                        metrics().spool_uploads.labels(self.capability).inc(drained)
                        logger.info("uploaded %d spooled %s output(s)", drained, self.capability)
                except StorageError as error:
                    logger.warning("spool drain deferred: %s", error)
                time.sleep(interval_s)

        threading.Thread(target=drain_forever, name=f"{self.capability}-spool-drain", daemon=True).start()
