"""Benchmarks of the regional_etl pipeline: `python -m benchmarks.run [--quick]` (see README.md)."""
