"""genmedia's BentoML services: one module per model service, and the gateway package in front of them.

Importing any of them first checks the settings when this process is a `bentoml serve` command (so a bad
value stops the start, before a worker exists) and keeps clients' 4xx out of the error log.
"""

from genmedia.contract.errors import install_client_error_log_filter
from genmedia.settings import check_before_serving

# Callers of a model service (the gateway, a service's own batching client) would otherwise close their
# session to it every 100 calls or 300 s (BentoML's runner_connection defaults), failing every call in flight.
ONE_LASTING_CONNECTION = {"max_requests": 2**31 - 1, "max_age": 10.0**9}

check_before_serving()
install_client_error_log_filter()
