"""Benchmarks of supplyflow against the local broker (``python -m bench``, ``make bench``).

Kept apart from the tests: tests assert behaviour, benchmarks measure speed.
"""
