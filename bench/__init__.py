"""Benchmarks: `ops/bench NAME` runs bench/NAME.py and prints one JSON object per metric.

See bench/README.md for what each benchmark measures and the figures measured so far.
"""
