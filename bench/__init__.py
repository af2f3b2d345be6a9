"""Benchmarks for renewald: `python -m bench` (see README.md)."""
