"""Pure Spark transforms (DataFrame -> DataFrame): tested without Dagster, wired by the assets."""
