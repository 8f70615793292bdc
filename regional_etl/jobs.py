"""Jobs: one per partition scheme (Dagster jobs cannot mix partition definitions)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from regional_etl.partitions import daily_partitions, date_region_partitions

fx_rates_job = define_asset_job(
    "fx_rates_job",
    selection=AssetSelection.assets("fx_rates"),
    partitions_def=daily_partitions,
    description="Fetch the FX rates of a date (or a range) into reference/fx_rates.",
)
regional_orders_job = define_asset_job(
    "regional_orders_job",
    selection=AssetSelection.assets("raw_orders", "orders", "orders_quarantine"),
    partitions_def=date_region_partitions,
    description="Ingest, validate and convert (date, region) drops: bronze and silver.",
)
daily_revenue_job = define_asset_job(
    "daily_revenue_job",
    selection=AssetSelection.assets("daily_revenue"),
    partitions_def=daily_partitions,
    description="Aggregate silver orders of all regions into gold/daily_revenue.",
)

ALL_JOBS = [fx_rates_job, regional_orders_job, daily_revenue_job]
