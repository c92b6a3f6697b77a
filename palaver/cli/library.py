"""`palaver pull`, `palaver models ls` and `palaver models rm`: the library of GGUF files pulled from the Hub."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import click

from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError
from palaver.core.hub_sources import HubSource, from_ollama_name, is_hub_source


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("source")
def pull(source: str) -> None:
    """Pull a GGUF model from the Hugging Face Hub, checked: hf:OWNER/REPO:QUANT or hf:OWNER/REPO/FILE.gguf.

    Add @REV after REPO to pin a revision. Once pulled, PALAVER_MODEL=SOURCE serves it, offline too.
    """
    from palaver.models.progress import Progress
    from palaver.models.pulling import pull as pull_source

    settings = settings_or_exit()
    try:
        hub_source = HubSource.parse(from_ollama_name(source))
        click.echo(f"pulling {hub_source}…", err=True)
        model = pull_source(hub_source, settings.cache_dir, Progress(str(hub_source), terminal=True))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    size = sum(file.size for file in model.files)
    click.echo(f"pulled {model.name} ({megabytes(size)}, {model.quantisation or 'quantisation not named'})")
    if model.split:
        click.echo(f"{model.name} is split into {len(model.files)} files, which Palaver cannot serve yet", err=True)
    else:
        click.echo(f"serve it with PALAVER_MODEL={model.source}")


@click.command("ls")
@click.option("--suggested", is_flag=True, help="List small chat models that run well on a CPU, to pull.")
def ls(suggested: bool) -> None:
    """List the pulled models: name, source, size on disk, quantisation, architecture, native or not, last used."""
    from palaver.models.listing import SUGGESTED, library_rows

    if suggested:
        rows = [(s.title, s.parameters, s.source) for s in SUGGESTED]
        print_table(["MODEL", "PARAMETERS", "SOURCE"], rows)
        click.echo("\npull one with `palaver pull SOURCE`; docs/models.md says more")
        return
    settings = settings_or_exit()
    found = library_rows(settings)
    if not found:
        click.echo("no model pulled yet: `palaver models ls --suggested` lists some to pull", err=True)
        return
    print_table(
        ["NAME", "SOURCE", "SIZE", "QUANT", "ARCHITECTURE", "NATIVE", "LAST USED"],
        [
            (r.name, r.source, megabytes(r.disk_bytes), r.quantisation, r.architecture, r.native, when(r.last_used))
            for r in found
        ],
    )


@click.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it even if PALAVER_MODEL or PALAVER_MODELS names it.")
def rm(name: str, force: bool) -> None:
    """Remove a pulled model (by name or source): its record, and its files unless another pulled model has them."""
    from palaver.models.library import named, remove

    settings = settings_or_exit()
    try:
        model = named(settings.cache_dir, name)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if model.source in configured_sources(settings) and not force:
        raise click.ClickException(
            f"{model.name} is configured (PALAVER_MODEL or PALAVER_MODELS names {model.source}): a server would pull "
            "it again at its next start; change the setting first, or pass --force"
        )
    remove(settings.cache_dir, model)
    click.echo(f"removed {model.name} ({model.source})")


def configured_sources(settings: Settings) -> set[str]:
    """Return the Hub sources the settings configure, as the library writes them."""
    from palaver.backends.model_list import configured_models

    try:
        entries = configured_models(settings)
    except ConfigurationError:
        return set()
    return {str(HubSource.parse(e.source)) for e in entries if is_hub_source(e.source)}


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def megabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size} B"


def when(moment: float) -> str:
    """Say when, as a date and time here, or "today HH:MM"."""
    stamp = datetime.fromtimestamp(moment)
    same_day = time.localtime(moment)[:3] == time.localtime()[:3]
    return stamp.strftime("today %H:%M") if same_day else stamp.strftime("%Y-%m-%d %H:%M")
