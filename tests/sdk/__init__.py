"""Tests of the Python SDK (a package, so its conftest does not shadow tests/conftest.py)."""
