"""Jobs: one per partition scheme (Dagster jobs cannot mix partition definitions); each takes
its partitions from the assets it selects."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import AssetKey, AssetSelection, define_asset_job

# regional_orders_job holds bronze and silver, whose backfill policies differ on purpose (see
# MAX_DROPS_PER_RUN in assets/bronze.py): Dagster warns that the job takes the smaller one,
# which only a backfill launched from the job's own page uses, and then with bronze's bound.
warnings.filterwarnings(
    "ignore", message=r"Asset job .* materializes assets with varying BackfillPolicies"
)


def asset_jobs(key_prefix: str | None = None) -> list[Any]:
    """The pipeline's jobs over the assets of a code location whose keys carry `key_prefix`
    (a release location); the same job names in every location, so tools find them by name."""

    def keys(*names: str) -> AssetSelection:
        prefix = [key_prefix] if key_prefix else []
        return AssetSelection.assets(*(AssetKey([*prefix, n]) for n in names))

    return [
        define_asset_job(
            "fx_rates_job",
            selection=keys("fx_rates"),
            description="Fetch the FX rates of a date (or a range) into reference/fx_rates.",
        ),
        define_asset_job(
            "regional_orders_job",
            selection=keys("raw_orders", "orders", "orders_quarantine"),
            description="Ingest, validate and convert (date, region) drops: bronze and silver.",
        ),
        define_asset_job(
            "daily_revenue_job",
            selection=keys("daily_revenue"),
            description="Aggregate silver orders of all regions into gold/daily_revenue.",
        ),
    ]


ALL_JOBS = asset_jobs()
fx_rates_job, regional_orders_job, daily_revenue_job = ALL_JOBS
