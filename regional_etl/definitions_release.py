"""The release location (workspace-release.yaml loads it beside the live one): the pipeline
writing the namespace readers do not see, keys prefixed `release/`, with the release jobs."""

from regional_etl.definitions import build_definitions

defs = build_definitions(release_location=True)
