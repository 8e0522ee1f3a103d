"""Beacon engine: the pure decision core and its I/O adapters."""

__version__ = "0.1.0"
