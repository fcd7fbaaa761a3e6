"""A model service that hangs: 503 + Retry-After inside the gateway's BACKEND_TIMEOUT_S, the other
capabilities (and cached results) keep working, and it recovers by itself once the service runs again.

`tests/test_gateway.py` checks the basic promise on another composition (speech hung, captioner killed);
this adds the timing bounds, the result cache during the fault, and the time to recover. A service killed
mid-request is in `test_storage_faults.py` (`crash`), which shares its restart.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from testbed.composition import BACKEND_TIMEOUT_S, Suspended
from testbed.figures import FIGURES

# The gateway's own work around the call (a cache lookup in storage for a seeded request) plus slack for
# two busy cores.
SLACK_S = 4.0


def test_a_hung_image_service_answers_503_within_the_backend_timeout_while_the_rest_keeps_working(gateway):
    cached_request = {"seed": 12345, "size": 64}
    assert FIGURES.record(gateway.image(**cached_request)).status_code == 200

    FIGURES.inject()
    with Suspended(gateway.process("TextToImage")), ThreadPoolExecutor(max_workers=4) as pool:
        started = time.monotonic()
        hung = pool.submit(gateway.image)
        speech = pool.submit(gateway.speech)
        caption = pool.submit(gateway.caption)
        cached = pool.submit(gateway.image, **cached_request)
        others = [FIGURES.record(future.result(), fault=True) for future in (speech, caption, cached)]
        response = FIGURES.record(hung.result(), fault=True)
        elapsed = time.monotonic() - started

    FIGURES.timing("hung service: 503 in", elapsed)
    assert [other.status_code for other in others] == [200, 200, 200]
    assert others[2].json()["cached"] is True
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert "Image generation is unavailable" in response.json()["error"]
    assert BACKEND_TIMEOUT_S - 0.5 <= elapsed <= BACKEND_TIMEOUT_S + SLACK_S

    started = time.monotonic()
    recovered = FIGURES.record(gateway.image())
    FIGURES.timing("hung service: back in", time.monotonic() - started)
    assert recovered.status_code == 200, recovered.text
