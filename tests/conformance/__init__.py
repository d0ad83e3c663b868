"""Conformance and contract tests, run on every installed backend."""
