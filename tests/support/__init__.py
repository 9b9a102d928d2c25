"""Helpers shared by the test suites (waiting, cluster access, harnesses)."""
