"""Software-defined assets by layer: thin Dagster wrappers around `regional_etl.transforms`."""
