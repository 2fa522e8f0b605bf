"""Benchmarks of botpress-py. Not part of the test run; see bench/README.md."""
