"""What the release tests share: a green whose new FX source quotes EUR 1% higher, the resources
of a namespace under a test folder, and launching the release's assets and jobs as a user
would (the diff with the run config docs/releases.md gives)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from dagster import AssetKey, DagsterInstance, Definitions, materialize

from regional_etl.fx.server import FXRequestHandler, FXServer, answer
from regional_etl_tests.conftest import pipeline_resources

REPO = Path(__file__).resolve().parents[1]
EUR_SHIFT = Decimal("1.01")


def shifted_quote(units_per_usd: float) -> float:
    """The new FX source's EUR quote: 1% more EUR per USD, 6 decimals like the service."""
    return float((Decimal(str(units_per_usd)) * EUR_SHIFT).quantize(Decimal("0.000001")))


class ShiftedEURHandler(FXRequestHandler):
    """The product's FX answers with the EUR quote shifted: green's deliberate rule change."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        status, body = answer(parts.path, parse_qs(parts.query))
        if status == 200 and "EUR" in body["rates"]:
            body["rates"]["EUR"] = shifted_quote(body["rates"]["EUR"])
        self.send_json(status, body)


class ShiftedEURServer(FXServer):
    """The FX server that answers with the EUR quote shifted."""

    handler = ShiftedEURHandler


def namespace_resources(tmp: Path, namespace: str, fx_url: str) -> dict[str, Any]:
    """The resources of one namespace's code location; landing and warehouse are shared."""
    return pipeline_resources(tmp, fx_url, namespace)


def docs_diff_config(start: str, end: str) -> dict[str, Any]:
    """docs/releases.md's launchpad config for the diff, as pasted, with this range's dates."""
    docs = (REPO / "docs" / "releases.md").read_text()
    (snippet,) = re.findall(r"`(ops: \{release_diff: .*?\}\}\})`", docs)
    config = yaml.safe_load(snippet)
    config["ops"]["release_diff"]["config"].update(start=start, end=end)
    return config


def materialize_diff(
    green: Definitions, instance: DagsterInstance, start: str, end: str
) -> dict[str, Any]:
    """Materialize green's release_diff with the docs' config, and return its metadata."""
    assets_def = green.resolve_assets_def(AssetKey(["release", "release_diff"]))
    result = materialize([assets_def], instance=instance, run_config=docs_diff_config(start, end))
    assert result.success
    [mat] = result.asset_materializations_for_node(assets_def.op.name)
    return dict(mat.metadata)


def run_job(defs: Definitions, job: str, instance: DagsterInstance, **kwargs: Any):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, **kwargs
    )


def failure(result) -> str:
    """The description of a run's one failed step."""
    [event] = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.user_failure_data.description


def refusal_reasons(result) -> list[str]:
    """The reasons of a refused promotion, one per entry, as its step failure lists them."""
    [event] = [e for e in result.all_events if e.is_step_failure]
    return list(event.step_failure_data.user_failure_data.metadata["reasons"].value)
