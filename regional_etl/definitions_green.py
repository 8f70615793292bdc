"""The "green" release code location (workspace.yaml loads it beside the live one)."""

from regional_etl.definitions import build_definitions

defs = build_definitions(namespace="green")
