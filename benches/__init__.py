"""Benchmarks: fire precision, run throughput, idle cost and API speed, against the alternatives.

Run with ``make bench`` (or ``python -m benches.run --help``). Nothing here is a runtime dependency.
"""
