"""Measurement scripts (run them as ``python benchmarks/<name>.py``); importable for tests."""
