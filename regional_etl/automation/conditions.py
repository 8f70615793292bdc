"""Declarative automation: aggregates follow their inputs, history included."""

from dagster import AutomationCondition

# `eager()` only looks at the latest time window; reprocessed history must propagate too. The
# blocking-checks clause keeps a date whose regions have not all passed their gates out of gold
# (a failed partition is not materialized either, so `eager` would also wait for it).
DAILY_REVENUE_CONDITION = (
    AutomationCondition.eager().without(AutomationCondition.in_latest_time_window())
    & AutomationCondition.all_deps_blocking_checks_passed()
).with_label("all regions of the date updated and gated")
