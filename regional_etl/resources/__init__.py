"""Dagster resources: the Spark session, the FX-rate client (with its circuit breaker), paths."""
