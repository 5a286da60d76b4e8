"""Benchmarks: one module per target, each prints one JSON object per run."""
