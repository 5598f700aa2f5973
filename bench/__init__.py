"""Benchmarks: `python -m bench` runs the speed suite (see bench/suite.py); the scripts beside it
measure single questions (indexer throughput, search latency, index kinds)."""
