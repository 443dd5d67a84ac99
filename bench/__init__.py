"""Benchmarks: each prints a table, writes JSON and a PNG, and compares side by side in one run."""
