"""The daily schedule: yesterday's partitions, in the partitions' own time zone."""

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from regional_etl.jobs import fx_rates_job, regional_orders_job

# FX first (the ECB publishes around 16:00 CET, so yesterday's rate exists at midnight), then
# the four regions of yesterday; daily_revenue follows through its automation condition.
fx_rates_schedule = build_schedule_from_partitioned_job(
    fx_rates_job,
    name="fx_rates_daily",
    hour_of_day=0,
    minute_of_hour=15,
    default_status=DefaultScheduleStatus.RUNNING,
)
regional_orders_schedule = build_schedule_from_partitioned_job(
    regional_orders_job,
    name="regional_orders_daily",
    hour_of_day=1,
    minute_of_hour=0,
    default_status=DefaultScheduleStatus.RUNNING,
)

SCHEDULES = [fx_rates_schedule, regional_orders_schedule]
