"""Developer tools: run from the repository root as `python -m tools.<module>` (see the Makefile)."""
