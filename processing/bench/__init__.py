"""Layer 4, benchmarks: one module per target, each prints one JSON object per run.

May import: every other package of processing/ (and processing.commands).
"""
