"""The `palaver` command: `palaver serve` runs the server exactly as the Procfile does."""

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
    args = parser.parse_args(argv)
    if args.command == "serve":
        os.chdir(ROOT)  # the Procfile's paths (gunicorn.conf.py, app:app) are relative to the project
        os.environ["PORT"] = str(args.port)
        # This environment's gunicorn, through a shell as a PaaS runs a Procfile line.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        os.execvp("sh", ["sh", "-c", "exec " + procfile_command()])
