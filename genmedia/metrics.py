"""genmedia's Prometheus metrics, served at `/metrics` beside BentoML's own.

`prometheus_client` picks single- or multi-process mode when it is first imported, and BentoML sets
`PROMETHEUS_MULTIPROC_DIR` in each worker only after the service module is imported. So the metrics are
built on first use (from a service's `__init__`), never at import. All services of one `bentoml serve` share
that directory, so the gateway's `/metrics` also shows the model services' counters.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# BentoML 1.4.39 labels its HTTP metrics with the raw request path (label values escape `"` as `\"`).
FILE_ENDPOINT = re.compile(r'endpoint="/files/(?:[^"\\]|\\.)*"')
FOLDED_FILE_ENDPOINT = 'endpoint="/files/{file_key}"'


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
    gateway_refused: Any  # Counter{reason}: blocked, auth, auth_failures, rate, invalid, too_large, metrics
    gateway_forwarded: Any  # Counter{service}: calls the gateway made to a model service
    backend_unavailable: Any  # Counter{service}: model service down, starting or timing out
    rate_limit_fallback: Any  # Counter: checks counted in one replica's memory because the shared storage failed
    prompts_refused: Any  # Counter{field}: prompts refused for a term of BLOCKED_PROMPT_TERMS_FILE
    outputs_withheld: Any  # Counter{capability}: outputs the safety checker flagged, stored as a marker only
    safety_check_seconds: Any  # Histogram{capability}: the safety checker's time per output


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
        rate_limit_fallback=prom.Counter(
            "genmedia_rate_limit_fallback", "Rate limit checks counted per replica because the shared storage failed"
        ),
        prompts_refused=prom.Counter("genmedia_prompts_refused", "Prompts refused for a blocked term", ["field"]),
        outputs_withheld=prom.Counter(
            "genmedia_outputs_withheld", "Outputs withheld by the safety checker", ["capability"]
        ),
        safety_check_seconds=prom.Histogram(
            "genmedia_safety_check_seconds", "Safety checker time per output", ["capability"], buckets=SECONDS_BUCKETS
        ),
    )


def without_file_keys(exposition: bytes) -> bytes:
    """`/metrics` text with every `/files/<key>` endpoint folded into one `/files/{file_key}` series.

    A raw path label would publish the key of every file anyone fetched, and so its URL. Samples that
    become identical are summed (counts, bucket counts and sums all add up), in the place of the first.
    """
    lines: list[str] = []
    totals: dict[str, float] = {}
    for line in exposition.decode("utf-8").splitlines():
        if line.startswith("#") or not FILE_ENDPOINT.search(line):
            lines.append(line)
            continue
        sample, _, value = line.rpartition(" ")
        folded = FILE_ENDPOINT.sub(FOLDED_FILE_ENDPOINT, sample)
        if folded not in totals:
            totals[folded] = 0.0
            lines.append(folded)
        totals[folded] += float(value)
    return "".join(f"{line} {totals[line]!r}\n" if line in totals else f"{line}\n" for line in lines).encode()
