"""Real databases for tests: a fresh SQLite file, and a throwaway PostgreSQL cluster started for the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from servers import reserved_port

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres_user(*command: str) -> list[str]:
    """Run a PostgreSQL tool as the postgres user when we are root: initdb refuses to run as root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a PostgreSQL server in a temporary directory, as pytest-postgresql does; yield its URL."""
    if not (POSTGRES_BIN / "initdb").exists():
        raise RuntimeError("PostgreSQL 15 is not installed: make test installs Debian's postgresql package")
    directory = Path(tempfile.mkdtemp(prefix="palaver-pg-"))
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    log = directory / "server.log"
    subprocess.run(
        as_postgres_user(
            str(POSTGRES_BIN / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            # As hosted PostgreSQL is: a UTF-8 locale, so that lower() folds every letter, not ASCII only.
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ),
        check=True,
        capture_output=True,
    )
    with reserved_port() as port:  # held until the server listens on it
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            as_postgres_user(
                str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"
            ),
            check=True,
            capture_output=True,
        )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            as_postgres_user(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


def fresh_postgres_database(server_url: str) -> str:
    """Create an empty database on the session's server; return its URL."""
    name = f"palaver_{time.monotonic_ns()}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name
