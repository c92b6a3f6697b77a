"""A pull's progress: told by huggingface_hub's download bars, shown in the terminal, the log and on the page."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger("palaver.models")
FINISHED = ("done", "failed")
LOGGED_STEPS = 10  # the log says how far a file has come at each tenth
HEARTBEAT_SECONDS = 10.0  # a follower hears the state again after this long without a change


@dataclass(frozen=True)
class PullState:
    """Where a pull is: resolving, downloading a file (part of parts), verifying it, done, or failed (and why)."""

    source: str
    status: str = "resolving"
    file: str = ""
    part: int = 0
    parts: int = 0
    completed: int = 0
    total: int = 0
    sha256: str = ""
    name: str = ""  # the pulled model's name, once done
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Progress:
    """A pull's state, changed by the pull's thread and followed by any other: the page's stream, Ollama's lines."""

    def __init__(self, source: str, terminal: bool = False):
        self.terminal = terminal  # whether the download bars are drawn (where stderr is a terminal)
        self._state = PullState(source)
        self._changed = threading.Condition()
        self._version = 0
        self._logged_step = -1

    @property
    def state(self) -> PullState:
        return self._state

    def set(self, **changes: Any) -> None:
        """Change the state and wake its followers."""
        with self._changed:
            self._state = replace(self._state, **changes)
            self._version += 1
            self._changed.notify_all()
        if "file" in changes:
            self._logged_step = -1
        if changes.get("status") in ("downloading", "verifying", "done"):
            self._log_step(force=changes.get("status") != "downloading")

    def fail(self, message: str) -> None:
        log.error("pulling %s failed: %s", self._state.source, message)
        self.set(status="failed", error=message)

    def advance(self, count: int) -> None:
        """Count bytes received (or taken back, when a server ignored a resumed range and sent all again)."""
        self.set(completed=max(0, self._state.completed + count))
        self._log_step()

    def _log_step(self, force: bool = False) -> None:
        state = self._state
        if not state.total or not state.file:
            return
        step = min(LOGGED_STEPS, state.completed * LOGGED_STEPS // state.total)
        if step == self._logged_step and not force:
            return
        self._logged_step = step
        part = f" (part {state.part} of {state.parts})" if state.parts > 1 else ""
        log.info(
            "pulling %s%s: %s, %.1f of %.1f MB",
            state.file,
            part,
            state.status,
            state.completed / 1e6,
            state.total / 1e6,
        )

    def follow(self, heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[PullState]:
        """Yield the state now and after each change (or each heartbeat without one), until the pull has ended."""
        seen = -1
        while True:
            with self._changed:
                if self._version == seen:
                    self._changed.wait(timeout=heartbeat)  # woken by a change, or not: the state is heard again
                state, seen = self._state, self._version
            yield state
            if state.finished:
                return

    def bar_class(self) -> type:
        """Return a tqdm class for huggingface_hub's downloads that reports here, drawn only in a terminal."""
        from huggingface_hub.utils import tqdm as hub_tqdm

        progress = self

        class PullBar(hub_tqdm):
            def __init__(self, *args: Any, **kwargs: Any):
                if not progress.terminal:
                    kwargs["disable"] = True
                super().__init__(*args, **kwargs)
                progress.set(completed=kwargs.get("initial", 0) or 0)

            def update(self, n: float | None = 1) -> bool | None:
                progress.advance(int(n or 0))
                return super().update(n)

        return PullBar
