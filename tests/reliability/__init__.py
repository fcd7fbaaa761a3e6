"""Reliability and security: the whole composition under storage and backend faults, overload and hostile
input, with nothing lost (issue #8). `make test` runs it; `make soak` runs the longer `load_tests/soak.py`."""
