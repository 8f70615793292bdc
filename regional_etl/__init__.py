"""regional_etl: a multi-region orders pipeline on PySpark + Delta Lake, orchestrated by Dagster."""
