"""Layer 4, the CLI: one module per command, add_arguments(parser) and run(args) -> int.

May import: every other package of processing/ (and processing.bench).
"""
