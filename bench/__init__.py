"""Benchmarks for tfaudit-ci (issue 8). ``make bench`` runs ``bench/run_all.py``."""
