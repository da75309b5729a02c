"""Benchmarks for the agent (not part of the installed package).

Run them with ``scripts/bench``; see :mod:`bench.run`.
"""
