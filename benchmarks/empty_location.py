"""An empty code location: the floor of `dagster definitions validate` (the CLI's own cost)."""

from dagster import Definitions

defs = Definitions()
