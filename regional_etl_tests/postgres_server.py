"""A real PostgreSQL server for tests, from the machine's server binaries: a data directory of its
own, on 127.0.0.1 and a free port only, in a process group of its own, and stopped whatever way
the test ends."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regional_etl_tests.e2e_support import HOST, free_port, wait_for
from regional_etl_tests.procs import process_groups

# PostgreSQL refuses to run as root: as root, the server runs as this unprivileged user.
SERVER_USER = "nobody"
STARTUP_TIMEOUT = 120.0


def server_bin_dir() -> Path:
    """The newest server installed the Debian way (/usr/lib/postgresql/<major>/bin), else the
    one on PATH."""
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if debian:
        return max(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise AssertionError(
        "no PostgreSQL server binaries (initdb): run scripts/setup.sh as root, or install "
        "the postgresql package"
    )


@dataclass(frozen=True)
class PostgresServer:
    """Where the server listens and the one role and database the tests use."""

    port: int
    user: str
    password: str
    db_name: str
    log: Path

    def dagster_env(self) -> dict[str, str]:
        """The variables that deploy/dagster-postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    def connect(self, db_name: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=HOST,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=db_name or self.db_name,
            connect_timeout=10,
        )

    def query(self, sql: str) -> list[tuple]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        return rows

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"<no log: {exc}>"


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root for the server's commands, and the uid/gid to own its
    files (None, None when the tests already run unprivileged)."""
    if os.geteuid() != 0:
        return [], None, None
    entry = pwd.getpwnam(SERVER_USER)
    prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    return prefix, entry.pw_uid, entry.pw_gid


@contextmanager
def postgres_server(log: Path, db_name: str = "dagster") -> Iterator[PostgresServer]:
    """initdb a cluster (password authentication for one role), start `postgres` in its own
    process group, create `db_name`, yield; then `pg_ctl stop -m immediate`, end the process
    group and delete the cluster, on success, failure or timeout alike. The server's output goes
    to `log` (in the test's tmp folder, kept for a look after a failure).

    The cluster lives in a temporary folder of its own, not under pytest's tmp folder: that
    tree is 0700 root, and the unprivileged server user opens its files by absolute path for as
    long as it runs, while pytest tightens its root folder again whenever a session starts."""
    bin_dir = server_bin_dir()
    prefix, uid, gid = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="regional-etl-postgres-"))
    try:
        data, sockets = root / "data", root / "sockets"
        sockets.mkdir()
        password_file = root / "password"
        server = PostgresServer(free_port(), "dagster", "dagster-test-secret", db_name, log)
        password_file.write_text(server.password + "\n")
        if uid is not None and gid is not None:
            for path in (root, sockets, password_file):
                os.chown(path, uid, gid)

        def run(*argv: str) -> None:
            done = subprocess.run(
                [*prefix, *argv], capture_output=True, text=True, timeout=STARTUP_TIMEOUT
            )
            assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{done.stderr}"

        run(
            str(bin_dir / "initdb"),
            f"--pgdata={data}",
            f"--username={server.user}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",  # a throwaway cluster: no fsync, here or below
        )
        postgres = [
            *prefix,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(server.port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        with (
            open(log, "wb") as out,
            process_groups(
                postgres, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            ) as (proc,),
        ):
            try:
                _wait_until_accepting(server, proc)
                conn = server.connect("postgres")
                conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
                with conn.cursor() as cur:
                    cur.execute(f'CREATE DATABASE "{db_name}"')
                conn.close()
                yield server
            finally:
                # Immediate: nothing to keep; the process group is ended after it in any case.
                with suppress(subprocess.SubprocessError, AssertionError, OSError):
                    run(str(bin_dir / "pg_ctl"), "stop", f"--pgdata={data}", "-m", "immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_accepting(server: PostgresServer, proc: subprocess.Popen) -> None:
    import psycopg2

    def accepting() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError(f"postgres exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.connect("postgres").close()
        except psycopg2.OperationalError:  # not listening yet
            return None
        return True

    wait_for("PostgreSQL to accept connections", accepting, STARTUP_TIMEOUT, 0.5)
