"""Terapan image science: pure functions on arrays and files, no Django."""

__all__ = ["__version__"]
__version__ = "0.1.0"
