"""Safe defaults of the Dagster instance and UI: the project's dagster.yaml keeps each instance
under its own DAGSTER_HOME (nothing relative to the working directory), and every command that
starts the webserver binds it to loopback."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, asset, materialize

from regional_etl_tests import e2e_support

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


# A `dagster dev` or `dagster-webserver` invocation with its options, in prose or in code.
WEBSERVER_COMMAND = re.compile(
    r"dagster(?: dev|-webserver)((?: +-{1,2}[a-z-]+(?: +[^\s`'\"-]\S*)?)+)"
)


def test_every_webserver_command_listens_on_loopback_only() -> None:
    sources = [
        PROJECT / "README.md",
        *sorted((PROJECT / "docs").glob("*.md")),
        *sorted((PROJECT / "scripts").glob("*.sh")),
        *sorted((PROJECT / "regional_etl").rglob("*.py")),
        *sorted((PROJECT / "benchmarks").rglob("*.py")),
    ]
    commands = [
        (path.relative_to(PROJECT), match.group(0))
        for path in sources
        for match in WEBSERVER_COMMAND.finditer(path.read_text())
    ]
    assert len(commands) >= 3, commands  # README's dev and read-only commands, the CLI's hint
    exposed = [c for c in commands if not re.search(r"(-h|--host) 127\.0\.0\.1\b", c[1])]
    assert exposed == [], "the UI has no login: bind it to 127.0.0.1 (README, 'The UI listens')"
    # The end-to-end test builds its argv in code.
    assert e2e_support.HOST == "127.0.0.1"
    assert '"-h", HOST' in (PROJECT / "regional_etl_tests" / "e2e_support.py").read_text()
