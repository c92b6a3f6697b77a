"""The `palaver` command: `palaver serve` runs the server as the Procfile does; `palaver db upgrade` migrates."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project: Procfile, gunicorn.conf.py, templates/, static/


def procfile_command() -> str:
    """Return the Procfile's web command, exactly as a PaaS would run it."""
    procfile = ROOT / "Procfile"
    if not procfile.is_file():
        raise SystemExit(f"palaver: no Procfile at {procfile}; run from a checkout (pip install -e .)")
    for line in procfile.read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit("palaver: the Procfile has no web process")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the command."""
    parser = argparse.ArgumentParser(prog="palaver", description="A self-hosted chatbot server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the chat page and the APIs, as the Procfile does")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    db = commands.add_parser("db", help="manage the conversation database")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply every migration not yet applied")
    args = parser.parse_args(argv)
    if args.command == "db":
        upgrade_database()
        return
    if args.command == "serve":
        os.chdir(ROOT)  # the Procfile's paths (gunicorn.conf.py, app:app) are relative to the project
        os.environ["PORT"] = str(args.port)
        # This environment's gunicorn, through a shell as a PaaS runs a Procfile line.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        os.execvp("sh", ["sh", "-c", "exec " + procfile_command()])


def upgrade_database() -> None:
    """Apply the database's pending migrations, for the URL the server would use."""
    from palaver.config import Settings
    from palaver.storage.database import connect, database_url, upgrade

    settings = Settings.from_env()
    url = database_url(settings.database_url, settings.cache_dir)
    engine = connect(url)
    revision = upgrade(engine)
    print(f"palaver: {engine.url.render_as_string(hide_password=True)} is at revision {revision}")
