"""Benchmarks of botpress-py (issue 6). Not part of the test run; see bench/README.md."""
