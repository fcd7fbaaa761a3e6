"""Load tests (`make load`: locust against a tiny gateway) and benchmarks (`make bench`: serving vs bare model)."""
