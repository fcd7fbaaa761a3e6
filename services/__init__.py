"""genmedia's BentoML services and the modules they share."""

import logging

# `bentoml serve` shows INFO records only from loggers under "bentoml", so ours lives there.
logger = logging.getLogger("bentoml.genmedia")
