"""`services.image_captioning:ImageCaptioning` with adaptive batching turned off, for `load_tests/bench.py`.

BentoML takes batching settings only from the `@bentoml.api` decorator (no configuration key or environment
variable reaches it, and `max_batch_size` must be at least 2), so the bench serves this module instead:
the same service, class and code, with `caption_batch` no longer `batchable`. Each request's one-image
list then goes to `generate` on its own instead of being merged with its neighbours' by the dispatcher.

    bentoml serve load_tests.unbatched_captioner:ImageCaptioning
"""

import attrs

from services.image_captioning import ImageCaptioning

ImageCaptioning.apis["caption_batch"] = attrs.evolve(ImageCaptioning.apis["caption_batch"], batchable=False)

__all__ = ["ImageCaptioning"]
