"""The project's dagster.yaml keeps each instance under its own DAGSTER_HOME: nothing relative to
the working directory, so two homes started from the project folder share no runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, asset, materialize

PROJECT = Path(__file__).resolve().parents[1]


@asset
def probe() -> int:
    """A one-line asset: a real run needs something to run."""
    return 1


def _home(path: Path) -> Path:
    path.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", path / "dagster.yaml")
    return path


def test_two_homes_in_the_project_folder_are_two_instances(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _home(tmp_path / "first"), _home(tmp_path / "second")
    # The demo's working directory: a relative storage path would land here, shared by both.
    monkeypatch.chdir(PROJECT)

    monkeypatch.setenv("DAGSTER_HOME", str(first))
    with DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == first
        result = materialize([probe], instance=instance)
        assert result.success
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]
        assert instance.get_latest_materialization_event(probe.key) is not None
    assert (first / "history" / "runs.db").is_file()

    monkeypatch.setenv("DAGSTER_HOME", str(second))
    with DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == second
        assert instance.get_runs() == []
        assert instance.get_run_by_id(result.run_id) is None
        assert instance.get_latest_materialization_event(probe.key) is None
