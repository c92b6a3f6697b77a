"""The `palaver` command: serve, chat in a terminal, run a preset over a file, describe and pull models, migrate."""

from __future__ import annotations

import json
import os
import shlex
import sys
from contextlib import closing
from pathlib import Path
from typing import NoReturn

import click
from pydantic_core import PydanticCustomError

from palaver.cli import library

ROOT = Path(__file__).resolve().parents[2]  # in a checkout, the project: Procfile, gunicorn.conf.py, app.py


def procfile_command() -> str:
    """Return the Procfile's web command, exactly as a PaaS would run it."""
    procfile = ROOT / "Procfile"
    if not procfile.is_file():
        raise click.ClickException(f"no Procfile at {procfile}; run from a checkout (pip install -e .)")
    for line in procfile.read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise click.ClickException("the Procfile has no web process")


def exit_now(status: int) -> NoReturn:
    """Exit at once with status, joining no thread: what was written is flushed and closed already."""
    # A normal exit joins every worker thread, and a row stuck in a model load or an upstream's read would hold it
    # for minutes; the rows written so far were flushed one by one and their file closed when the run was closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def open_backend(model: str | None = None):
    """Read the settings, resolve the models they name, and create the backend and presets; or exit saying why.

    model, when given, must name a configured model; the returned name is the one requests use.
    """
    from palaver.backends import create_backend
    from palaver.backends.sources import resolve_settings
    from palaver.chat.presets import Presets
    from palaver.core.config import Settings
    from palaver.core.errors import ConfigurationError, PalaverError

    try:
        settings = resolve_settings(Settings.from_env())
        backend = create_backend(settings)
        return settings, backend, Presets(settings), backend.resolve(model)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    except PalaverError as exc:
        raise click.ClickException(exc.message) from None


MODEL_OPTION = click.option(
    "--model", default=None, help="A model PALAVER_MODELS names; default: the first (or PALAVER_MODEL)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A self-hosted chatbot server. Settings come from PALAVER_* environment variables."""


@main.command()
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "8000")), show_default="$PORT or 8000")
def serve(port: int) -> None:
    """Serve the chat page and the APIs, as the Procfile does."""
    if (ROOT / "Procfile").is_file():
        command = procfile_command()
        os.chdir(ROOT)  # the Procfile's paths (gunicorn.conf.py, app:app) are relative to the project
    else:  # installed from a wheel: the same settings and app, from the package, under this interpreter
        app = "'palaver.web.app:create_app()'"
        command = f"{shlex.quote(sys.executable)} -m gunicorn --config python:palaver.web.gunicorn_config {app}"
    os.environ["PORT"] = str(port)
    # This environment's gunicorn, through a shell as a PaaS runs a Procfile line.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.execvp("sh", ["sh", "-c", "exec " + command])  # noqa: S606 -- our own Procfile line, not a client's input


@main.group()
def db() -> None:
    """Manage the conversation database."""


@db.command()
def upgrade() -> None:
    """Apply every migration not yet applied, to the database the server would use."""
    from palaver.core.config import Settings
    from palaver.storage.database import connect, database_url
    from palaver.storage.database import upgrade as migrate

    settings = Settings.from_env()
    engine = connect(database_url(settings.database_url, settings.cache_dir))
    revision = migrate(engine)
    click.echo(f"palaver: {engine.url.render_as_string(hide_password=True)} is at revision {revision}")


@main.group(invoke_without_command=True)
@MODEL_OPTION
@click.pass_context
def models(context: click.Context, model: str | None) -> None:
    """Show what each configured model resolves to (or --model's); `ls` and `rm` manage the models pulled."""
    if context.invoked_subcommand is not None:
        return
    settings, backend, _, chosen = open_backend(model)
    names = [chosen] if model else backend.names
    for index, name in enumerate(names):
        if index:
            click.echo()
        describe_model(backend, name)
        if len(names) > 1:
            backend.unload(name)  # one at a time: the next may need the memory


def describe_model(backend, name: str) -> None:
    """Load one model and print its source, family, limits and how its weights are served."""
    from palaver.backends.sources import model_source
    from palaver.core.errors import PalaverError
    from palaver.engine.model_sources import plain_source

    settings = backend.slots[name].settings
    rows: dict[str, object] = {"backend": settings.backend, "cache directory": settings.cache_dir}
    if settings.backend == "local":
        rows["source"] = (model_source(settings) or plain_source(settings.model)).weights
    try:
        limits = backend.model_limits(settings.load_wait, name)
    except PalaverError as exc:
        raise click.ClickException(f"{exc.message}") from None
    loaded = backend.loaded(name)
    description = loaded.describe() if loaded is not None else {}
    rows.update(
        model=name if len(backend.names) > 1 else backend.model_name,
        family=limits.family,
        weights=description.get("weights", "-"),
        engine=description.get("engine", "-"),
        **gguf_rows(description.get("gguf")),
        upstream=getattr(loaded, "url", "-"),
        context_tokens=limits.context_tokens,
        max_input_tokens=limits.max_input_tokens,
        max_reply_tokens=limits.max_reply_tokens,
    )
    width = max(len(name) for name in rows)
    for name, value in rows.items():
        click.echo(f"{name.replace('_', ' '):<{width}}  {'-' if value is None else value}")


def gguf_rows(layout: dict | None) -> dict[str, object]:
    """Describe a GGUF file's serving: its architecture, tensor types, and how much of it is kept as stored."""
    if not layout:
        return {}
    types = ", ".join(f"{count} {name}" for name, count in sorted(layout["tensor_types"].items()))
    stored, widened = layout["bytes_as_stored"] / 1e6, layout["bytes_as_float32"] / 1e6
    rows: dict[str, object] = {
        "architecture": layout["architecture"],
        "path": layout["path"],
        "tensors": types,
        "served": f"{stored:.0f} MB as stored, {widened:.0f} MB as float32 ({layout['share_as_stored']:.0%} as stored)",
    }
    if layout.get("kernels"):
        rows["kernels"] = layout["kernels"]  # the instructions the block kernels use: avx2 or avx512
    if layout.get("why"):
        rows["not native because"] = layout["why"]
    return rows


@main.command()
@click.option("--url", help="Chat with the Palaver running at this URL instead of loading the model here.")
@click.option("--key", envvar="PALAVER_KEY", help="API key for --url (or PALAVER_KEY).")
@click.option("--preset", default=None, help="Preset for the conversation; default: PALAVER_PRESET.")
@MODEL_OPTION
def chat(url: str | None, key: str | None, preset: str | None, model: str | None) -> None:
    """Chat in the terminal, each reply streamed as it comes. Ctrl-C stops a reply; Ctrl-D ends the chat."""
    from palaver.cli.terminal import local_chat, remote_chat

    if url:
        send = remote_chat(url, key, preset, model)
    else:
        from palaver.core.errors import PalaverError

        settings, backend, presets, chosen = open_backend(model)
        try:
            send = local_chat(backend, settings.generation_defaults(), presets.get(preset, param="preset"), chosen)
        except PalaverError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(f"loading the model {chosen}…", err=True)
        backend.start(chosen)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C at the prompt, ends the chat
            click.echo()
            return
        if not text:
            continue
        click.echo("palaver> ", nl=False)
        try:
            for piece in send(text):
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo(" [stopped]", nl=False)
        except Exception as exc:  # an error ends the reply, not the chat
            click.echo(f"[error: {exc}]", nl=False, err=True)
        click.echo()


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--preset", default=None, help="Preset to run; default: PALAVER_PRESET.")
@click.option("--column", default="text", show_default=True, help="Column (CSV) or field (JSONL) holding the text.")
@click.option("--concurrency", type=int, default=None, help="Rows in flight at once; default: PALAVER_MAX_BATCH_SIZE.")
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A JSON schema every reply must follow; an object schema's properties become columns.",
)
@MODEL_OPTION
def batch(
    source: Path,
    output: Path,
    preset: str | None,
    column: str,
    concurrency: int | None,
    schema: Path | None,
    model: str | None,
) -> None:
    """Run a preset over every row of SOURCE (.csv or .jsonl); write each row with its reply to OUTPUT.

    A run that is interrupted resumes where it stopped when started again with the same OUTPUT.
    """
    from dataclasses import replace

    from tqdm import tqdm

    from palaver.cli.jobs import BatchInputError, BatchRun, schema_fields
    from palaver.core.errors import PalaverError
    from palaver.core.json_schemas import canonical_schema

    settings, backend, presets, chosen = open_backend(model)
    params, fields = settings.generation_defaults(), []
    try:
        if schema is not None:
            try:
                given = json.loads(schema.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"{schema.name} is not JSON: {exc}") from None
            try:
                params = replace(params, json_schema=canonical_schema(given))
            except PydanticCustomError as exc:
                raise click.ClickException(f"{schema.name} {exc.message()}") from None
            fields = schema_fields(given)
        run = BatchRun(
            backend,
            params,
            presets.get(preset, param="preset"),
            column,
            min(concurrency or settings.max_batch_size, settings.max_pending),
            fields=fields,
            model=chosen,
        )
    except PalaverError as exc:
        raise click.ClickException(exc.message) from None
    bar = tqdm(unit="row", dynamic_ncols=True)

    def start(done: int, total: int) -> None:
        bar.reset(total)
        bar.update(done)

    failed = 0
    try:
        click.echo(f"loading the model {chosen}…", err=True)
        backend.start(chosen)
        # Closed however the loop ends, so that Ctrl-C stops the run wherever it lands, even between two rows.
        with closing(run.run(source, output, start)) as results:
            for result in results:
                failed += result.error is not None
                bar.update()
    except BatchInputError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        bar.close()
        click.echo(f"interrupted after {bar.n} rows; run the same command again to resume", err=True)
        exit_now(130)
    bar.close()
    failures = f"; {failed} failed, with the reason in their 'error' field" if failed else ""
    click.echo(f"{bar.n} rows in {output}{failures}")


main.add_command(library.pull)
models.add_command(library.ls)
models.add_command(library.rm)
