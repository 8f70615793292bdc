"""What both fixed references (`reference_spark.py`, `reference_duckdb.py`) read besides the
landing lines, in plain Python: the complete drops of a range and the FX rates of its dates.

Only the contract's constants and the bundled ECB history file are used, never the package's
pipeline, transforms or I/O helpers: the references must not get faster when those do.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import zipfile
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, localcontext
from importlib import resources
from pathlib import Path

from regional_etl.contract import (
    CURRENCIES,
    LANDING_SUFFIX,
    REGIONS,
    SUCCESS_MARKER,
    drop_path,
)


def parse_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--warehouse", required=True, type=Path)
    parser.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    parser.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    parser.add_argument("--regions", help="comma-separated regions (default: all of them)")
    args = parser.parse_args(argv)
    args.regions = args.regions.split(",") if args.regions else list(REGIONS)
    return args


def dates_between(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def landing_files(landing: Path, dates: list[str], regions: list[str]) -> list[Path]:
    """Every data file of the range's drops; a drop without `_SUCCESS` may still be arriving,
    so the whole run refuses it (the references have no per-partition failure)."""
    files: list[Path] = []
    for region in regions:
        for date in dates:
            folder = drop_path(landing, date, region)
            if not (folder / SUCCESS_MARKER).is_file():
                raise SystemExit(f"landing drop {folder} has no {SUCCESS_MARKER}: not ingested")
            files += sorted(p for p in folder.iterdir() if p.name.endswith(LANDING_SUFFIX))
    return files


def fx_rows(dates: list[str]) -> list[tuple[dt.date, str, Decimal]]:
    """(order_date, currency, usd_per_unit) for every region currency of every date: the ECB
    business day on or before the date (the last one after the history ends), units per USD
    rounded to 6 places half-even as the FX service answers them, inverted half-up to 10."""
    archive = resources.files("currency_converter") / "eurofxref-hist.zip"
    with zipfile.ZipFile(str(archive)) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".csv"))
        text = zf.read(name).decode("utf-8")
    per_eur: dict[dt.date, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        rates = {k.strip(): v.strip() for k, v in row.items() if k and v}
        if rates.get("USD", "N/A") != "N/A":
            per_eur[dt.date.fromisoformat(rates["Date"])] = rates
    days = sorted(per_eur)
    out = []
    for date in dates:
        day = dt.date.fromisoformat(date)
        row = per_eur[max(d for d in days if d <= day)]
        for currency in CURRENCIES:
            if currency == "USD":
                out.append((day, currency, Decimal(1)))
                continue
            units_per_eur = Decimal(1) if currency == "EUR" else Decimal(row[currency])
            with localcontext() as ctx:
                ctx.prec = 40
                units_per_usd = (units_per_eur / Decimal(row["USD"])).quantize(
                    Decimal("0.000001"), ROUND_HALF_EVEN
                )
                usd_per_unit = (1 / units_per_usd).quantize(Decimal("1e-10"), ROUND_HALF_UP)
            out.append((day, currency, usd_per_unit))
    return out
