"""Benchmarks (`make bench`): figures measured side by side, never asserted."""
