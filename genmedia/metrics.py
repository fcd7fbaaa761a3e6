"""genmedia's Prometheus metrics, served at `/metrics` beside BentoML's own.

`prometheus_client` picks single- or multi-process mode when it is first imported, and BentoML sets
`PROMETHEUS_MULTIPROC_DIR` in each worker only after the service module is imported. So the metrics are
built on first use (from a service's `__init__`), never at import. All services of one `bentoml serve` share
that directory, so the gateway's `/metrics` also shows the model services' counters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Metrics:
    generation_seconds: Any  # Histogram{capability}: model time per request (or per batch for captions)
    outputs_generated: Any  # Counter{capability}: images / audio files / captions produced
    generations_stopped: Any  # Counter{capability}: stopped early because their caller went away
    audio_seconds: Any  # Counter: seconds of speech produced (real-time factor = generation / audio)
    caption_batch_size: Any  # Histogram: images per captioning forward pass
    cache_hits: Any  # Counter{capability, where}: answered from storage without generating
    spool_uploads: Any  # Counter{capability}: outputs uploaded from the spool after a storage failure
    storage_failures: Any  # Counter{capability}: uploads that failed and went to the spool
    gateway_refused: Any  # Counter{reason}: blocked, auth, rate, invalid, too_large
    gateway_forwarded: Any  # Counter{service}: calls the gateway made to a model service
    backend_unavailable: Any  # Counter{service}: model service down, starting or timing out


@functools.cache
def metrics() -> Metrics:
    import prometheus_client as prom

    return Metrics(
        generation_seconds=prom.Histogram(
            "genmedia_generation_seconds", "Model time per call", ["capability"], buckets=SECONDS_BUCKETS
        ),
        outputs_generated=prom.Counter("genmedia_outputs_generated", "Outputs generated", ["capability"]),
        generations_stopped=prom.Counter(
            "genmedia_generations_stopped", "Generations stopped because their caller went away", ["capability"]
        ),
        audio_seconds=prom.Counter("genmedia_audio_seconds", "Seconds of audio synthesized"),
        caption_batch_size=prom.Histogram(
            "genmedia_caption_batch_size", "Images per captioning forward pass", buckets=BATCH_BUCKETS
        ),
        cache_hits=prom.Counter("genmedia_cache_hits", "Requests answered from storage", ["capability", "where"]),
        spool_uploads=prom.Counter("genmedia_spool_uploads", "Outputs uploaded from the spool", ["capability"]),
        storage_failures=prom.Counter("genmedia_storage_failures", "Uploads that failed", ["capability"]),
        gateway_refused=prom.Counter("genmedia_gateway_refused", "Requests refused by the gateway", ["reason"]),
        gateway_forwarded=prom.Counter("genmedia_gateway_forwarded", "Calls forwarded to a model service", ["service"]),
        backend_unavailable=prom.Counter(
            "genmedia_backend_unavailable", "Model service calls that failed as unavailable", ["service"]
        ),
    )
