"""One setting: how it is declared on the Settings dataclass, how its variable's text is read, how it is shown."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field
from pathlib import Path
from typing import Any

from palaver.core.parameters import parse_bool


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
) -> Any:
    """Declare a setting: its default, its help, and how its variable's text is read when not by its type."""
    metadata = {"help": help, "parse": parse, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def one_of(*options: str) -> Callable[[str], str]:
    """Return a parser that accepts one of options, in any case."""

    def parse(value: str) -> str:
        value = str(value).strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return value

    return parse


def parse_optional_int(value: str) -> int | None:
    """Parse an integer, or an empty string as None."""
    return None if str(value).strip() == "" else int(value)


BYTE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_bytes(value: str) -> int:
    """Parse a size such as 512MB, 1.5GiB or 536870912 into bytes."""
    text = str(value).strip().upper().replace(" ", "")
    number = text.rstrip("KMGIB")
    unit = text[len(number) :]
    try:
        size = float(number) * BYTE_UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"must be a size such as 512MB or 1GiB, not {value!r}") from None
    if not 0 <= size < 2**62:
        raise ValueError(f"must be a size from 0 up, not {value!r}")
    return int(size)


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: str, at_least: float = 0) -> float:
    """Parse a duration such as 300, 90s, 5m or 1h into seconds, of at least at_least; empty or 0 means never."""
    text = str(value).strip().lower()
    if not text and not at_least:
        return 0.0
    number = text.rstrip("smh")
    try:
        seconds = float(number) * DURATION_UNITS[text[len(number) :]]
    except (KeyError, ValueError):
        raise ValueError(f"must be a duration such as 300, 90s, 5m or 1h, not {value!r}") from None
    if not at_least <= seconds < 10**9:
        raise ValueError(f"must be a duration from {at_least:g} seconds up, not {value!r}")
    return seconds


def default_cache_dir() -> str:
    """Return the per-user cache directory, following XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return os.path.join(base, "palaver")


PARSERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": parse_bool,
    "int | None": parse_optional_int,
}


@dataclass(frozen=True)
class Setting:
    """One setting as its environment variable shows it."""

    name: str
    parse: Callable[[str], Any]
    help: str
    shown_default: str

    @property
    def env_var(self) -> str:
        return "PALAVER_" + self.name.upper()

    @classmethod
    def of(cls, declared: Field[Any]) -> Setting:
        """Describe a field of the Settings dataclass: its variable's parser, its help, its default as shown."""
        parse = declared.metadata["parse"] or PARSERS[str(declared.type)]
        return cls(declared.name, parse, declared.metadata["help"], describe_default(declared))


def describe_default(declared: Field[Any]) -> str:
    """Write a setting's default for the settings table."""
    shown: str | None = declared.metadata["shown"]
    if shown:
        return shown
    default = declared.default
    if default in ("", None):
        return "(empty)"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"
