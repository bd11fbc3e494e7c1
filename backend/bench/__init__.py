"""Benchmarks that print their figures (``vigil bench ...``); never timing assertions in tests."""
