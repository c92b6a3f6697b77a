"""Pulls started from the web: each on its own thread, one per source at a time, a few at once, followed by streams."""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

from palaver.core.errors import ConfigurationError, ServerBusy
from palaver.core.hub_sources import HubSource
from palaver.models.progress import Progress, PullState
from palaver.models.pulling import pull

log = logging.getLogger("palaver.models")
MAX_PULLS = 2  # downloads at once: each takes a share of the link and a thread, for minutes
KEPT_FINISHED = 5  # finished pulls still shown, with how they ended


class Pulls:
    """The pulls this process runs for the web: a second asking for a source running already follows that one."""

    def __init__(self, cache_dir: str | Path, limit: int = MAX_PULLS):
        self.cache_dir = cache_dir
        self.limit = limit
        self._running: dict[str, Progress] = {}
        self._finished: deque[Progress] = deque(maxlen=KEPT_FINISHED)
        self._lock = threading.Lock()

    def start(self, spec: str) -> Progress:
        """Start pulling a source in the background, or return the pull of it running already."""
        source = HubSource.parse(spec)
        with self._lock:
            self._retire()
            running = self._running.get(str(source))
            if running is not None:
                return running
            if len(self._running) >= self.limit:
                raise ServerBusy(
                    f"{len(self._running)} models are being pulled; pull another once one has finished",
                    code="too_many_pulls",
                    retry_after=30,
                )
            progress = self._running[str(source)] = Progress(str(source))
        threading.Thread(target=self._pull, args=(source, progress), name="palaver-pull", daemon=True).start()
        return progress

    def _pull(self, source: HubSource, progress: Progress) -> None:
        try:
            pull(source, self.cache_dir, progress)
        except ConfigurationError as exc:
            progress.fail(str(exc))
        except Exception:
            log.exception("pulling %s failed", source)
            progress.fail("the pull failed; the error has been logged")

    def _retire(self) -> None:
        for key, progress in list(self._running.items()):
            if progress.state.finished:
                self._finished.append(self._running.pop(key))

    def states(self) -> list[PullState]:
        """Return the pulls running and those finished lately, the latest last."""
        with self._lock:
            self._retire()
            return [p.state for p in (*self._finished, *self._running.values())]
