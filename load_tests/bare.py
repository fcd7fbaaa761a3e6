"""The bare baseline of `load_tests/bench.py`: the text-to-image pipeline in a plain Python process.

It does what one `/generate_image` asks of the image service, with no server around it: load the latest
`text-to-image` from the model store through `genmedia.model_loading` (`pick_device`, `load_text_to_image`:
the service's code path, CUDA fp16 or CPU fp32), then per request check storage for the key, generate with
the same arguments and seeded generator, encode the PNG and put it into local storage.

    python -m load_tests.bare MODEL_DIR MODEL_TAG STORAGE_DIR [--once] [--safety-checker CHECKER_DIR]

It prints one JSON line when loaded, then reads requests (JSON lines with the `/generate_image` fields and
an optional `repeat`) from stdin and answers each with the seconds its generations took, measured here, and
the part of them the pipeline calls took.
`--once` generates the default request once and exits: the cold start `bench.py` compares the service's to.
`--safety-checker` also runs the safety checker on each image, before it is encoded, as the service does
with `SAFETY_CHECKER=on`, and answers the seconds it took apart (`check_s`).
Only `torch`, `diffusers` and genmedia's loading and storage modules are imported, not BentoML (which a plain
script would not pay for): `bench.py` looks the model up in the store and passes its directory and tag.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()

# What `--once` generates: bench.py's request (its PROMPT, SIDE and STEPS), with a seed of its own.
ONCE_REQUEST = {"prompt": "a lighthouse at dawn", "width": 128, "height": 128, "steps": 1, "guidance_scale": 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bare", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the text-to-image model's directory in the model store")
    parser.add_argument("model_tag", help="its store tag, part of every output's key")
    parser.add_argument("storage_dir", help="where generated images are put (local storage)")
    parser.add_argument("--once", action="store_true", help="generate once, print the cold start, exit")
    parser.add_argument("--safety-checker", metavar="CHECKER_DIR", help="the safety checker's directory in the store")
    arguments = parser.parse_args()

    import torch

    from genmedia.contract.requests import ImageRequest
    from genmedia.model_loading import load_safety_checker, load_text_to_image, pick_device
    from genmedia.outputs.storage import LocalObjectStore

    device, dtype = pick_device()
    pipeline = load_text_to_image(arguments.model_dir, device, dtype)
    store = LocalObjectStore(Path(arguments.storage_dir), "http://127.0.0.1")
    version = arguments.model_tag
    checker = load_safety_checker(arguments.safety_checker, device, dtype) if arguments.safety_checker else None
    check_s = []  # the checker's seconds per image of the current request

    def generate(fields: dict) -> float:
        """The service's work for one fresh request: cache lookup, denoise, (check,) PNG, upload; answers the
        seconds the pipeline call took (the service's `genmedia_generation_seconds`)."""
        request = ImageRequest(**fields)
        key = request.content_key(version)
        store.exists(key)
        started = time.perf_counter()
        image = pipeline(
            **request.pipeline_arguments(), generator=torch.Generator(device=device).manual_seed(request.seed)
        ).images[0]
        model_s = time.perf_counter() - started
        if checker is not None:
            started = time.perf_counter()
            checker.flags([image])
            check_s.append(time.perf_counter() - started)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)  # services.text_to_image.ENCODE_OPTIONS["png"]
        store.put(key, buffer.getvalue(), "image/png")
        return model_s

    loaded_s = time.perf_counter() - STARTED
    if arguments.once:
        generate({**ONCE_REQUEST, "seed": time.time_ns() % 2**32})
        seconds = time.perf_counter() - STARTED
        print(json.dumps({"event": "generated", "seconds": seconds, "loaded_s": loaded_s}), flush=True)
        return 0

    print(json.dumps({"event": "loaded", "seconds": loaded_s, "device": device}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        check_s.clear()
        started = time.perf_counter()
        model_s = sum(generate({**request, "seed": request["seed"] + n}) for n in range(request.pop("repeat", 1)))
        seconds = time.perf_counter() - started
        answer = {"event": "generated", "seconds": seconds, "model_s": model_s, "check_s": sum(check_s)}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
