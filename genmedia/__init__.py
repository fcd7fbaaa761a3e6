"""genmedia's library: what the BentoML services in `services/` share.

- `genmedia.contract`: what a request and an answer look like (request models, errors, guarded uploads);
- `genmedia.outputs`: where generated files go (object storage, and the spool when it fails);
- `genmedia.model_loading`: model store → a ready model, CUDA fp16 or CPU fp32;
- `genmedia.settings`, `genmedia.metrics`: the environment, and the Prometheus counters.
"""

import logging

# `bentoml serve` shows INFO records only from loggers under "bentoml", so genmedia's one logger lives there.
logger = logging.getLogger("bentoml.genmedia")
