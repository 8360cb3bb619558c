"""Benchmarks (not tests), run by ``make bench``.

Each prints its figures, records them in ``data/08_reporting/benchmarks.json`` and compares
against a baseline measured in the same run.
"""
