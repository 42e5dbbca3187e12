"""Benchmarks: `make bench` runs every bench_*.py here and writes build/bench.json."""
