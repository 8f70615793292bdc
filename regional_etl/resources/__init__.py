"""Dagster resources: the FX-rate client (with its circuit breaker), paths, and the resource map
per environment. The Spark resource lives with the rest of Spark in `regional_etl.spark`."""
