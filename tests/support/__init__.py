"""Helpers shared by the test modules (and the worker processes some tests start)."""
