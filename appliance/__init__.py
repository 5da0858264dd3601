"""Baseline hashing appliance."""

__version__ = "0.1.0"
