"""genmedia's BentoML services: one module per model service, and the gateway package in front of them."""

# Callers of a model service (the gateway, a service's own batching client) would otherwise close their
# session to it every 100 calls or 300 s (BentoML's runner_connection defaults), failing every call in flight.
ONE_LASTING_CONNECTION = {"max_requests": 2**31 - 1, "max_age": 10.0**9}
