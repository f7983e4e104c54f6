"""Benchmarks: speed of every part of the system, as ratios measured side by side."""
