"""Benchmarks (never tests: nothing here asserts on time). Run them as modules, e.g. ``python3 -m bench.bench_forward``."""
