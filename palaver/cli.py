"""The `palaver` command: `palaver serve` runs the server exactly as the Procfile does."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def procfile_command() -> list[str]:
    """Return the Procfile's web command, split into arguments."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line.removeprefix("web:"))
    raise SystemExit("the Procfile has no web process")


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
        command = procfile_command()
        os.execvp(sys.executable, [sys.executable, "-m", *command] if command[0] == "gunicorn" else command)
