"""genmedia's BentoML services: one module per model service, and the gateway package in front of them.

Importing any of them first checks the settings when this process is a `bentoml serve` command (so a bad
value stops the start, before a worker exists) and keeps clients' 4xx out of the error log.
"""

from genmedia.contract.errors import install_client_error_log_filter
from genmedia.settings import check_before_serving

# Callers of a model service (the gateway, a service's own batching client) would otherwise close their
# session to it every 100 calls or 300 s (BentoML's runner_connection defaults), failing every call in flight.
ONE_LASTING_CONNECTION = {"max_requests": 2**31 - 1, "max_age": 10.0**9}
# A model service's worker allocates from one glibc arena, the main one. Each service runs its passes on a
# thread of its own, and glibc gives such a thread an arena built of heaps of at most 64 MiB: a bigger block
# (a VAE activation) is then mapped and unmapped at every pass whatever `genmedia.cpu_allocator` sets, about
# 80 000 page faults and a fifth of the time of a 128² CPU image. glibc reads this only when a process
# starts, so it is set for the workers `bentoml serve` starts (a value in the environment wins).
ONE_MALLOC_ARENA = [{"name": "MALLOC_ARENA_MAX", "value": "1", "stage": "runtime"}]

check_before_serving()
install_client_error_log_filter()
