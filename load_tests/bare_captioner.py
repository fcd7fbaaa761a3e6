"""The bare baseline of the caption rows of `load_tests/bench.py`: stock transformers captioning in a plain process.

What a user of transformers would write to caption photos on a CPU: load the captioner from the model store's
directory (`genmedia.model_loading.load_image_captioner`: `from_pretrained`, float32, nothing else), then for
each image open the file, run the processor and stock `model.generate` with the service's greedy options,
one image at a time, and decode the ids. PyTorch gets as many threads as the service reserves cores, so
both sides run on the same cores on any machine (the captioner never runs on a GPU).

    python -m load_tests.bare_captioner MODEL_DIR IMAGE_DIR THREADS

It prints one JSON line when loaded, then reads requests (JSON lines `{"images": [file names in IMAGE_DIR]}`)
from stdin and answers each with the seconds its captions took, measured here, and the captions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()

# services.image_captioning's NUM_BEAMS and MAX_NEW_TOKENS: the same captions, token for token.
GREEDY = {"num_beams": 1, "do_sample": False, "max_new_tokens": 30}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bare_captioner", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the image-captioning model's directory in the model store")
    parser.add_argument("image_dir", help="where the images named in requests are")
    parser.add_argument("threads", type=int, help="PyTorch threads (the service's reserved cores)")
    arguments = parser.parse_args()

    import torch
    from PIL import Image

    from genmedia.model_loading import load_image_captioner

    torch.set_num_threads(arguments.threads)
    captioner = load_image_captioner(arguments.model_dir, "cpu", torch.float32)
    print(json.dumps({"event": "loaded", "seconds": time.perf_counter() - STARTED}), flush=True)

    def caption(name: str) -> str:
        with Image.open(Path(arguments.image_dir) / name) as image:
            pixel_values = captioner.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            ids = captioner.model.generate(pixel_values=pixel_values, **GREEDY)
        return captioner.tokenizer.decode(ids[0], skip_special_tokens=True).strip()

    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        captions = [caption(name) for name in request["images"]]
        seconds = time.perf_counter() - started
        print(json.dumps({"event": "captioned", "seconds": seconds, "captions": captions}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
