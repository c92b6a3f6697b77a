"""Finished turns' KV positions kept on disk, so a conversation's next turn skips its prefill after a restart."""

from __future__ import annotations

import atexit
import bisect
import contextlib
import hashlib
import json
import logging
import mmap
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from palaver.engine.decoding.prefix_cache import PrefixCache, shared_prefix
from palaver.engine.native.export_buffers import ExportBuffers
from palaver.engine.native.turn_files import (
    MAGIC,
    SUFFIX,
    partial_name,
    read_header,
    remove_abandoned_partials,
    touch,
)

log = logging.getLogger("palaver.engine")

# Exported turns waiting for the writer and spare buffers, by default: past this, a turn is not stored rather than the
# engine waiting.
MOST_PENDING_BYTES = 128 << 20
SPARES_IDLE_SECONDS = 60  # a writer idle this long gives its spare buffers' memory back
EXIT_FLUSH_SECONDS = 5
BUDGET_SCAN_SECONDS = 10
_open_stores: weakref.WeakSet[StoredTurns] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Write the turns still queued when the worker exits (a restart right after a reply keeps it)."""
    for store in list(_open_stores):
        store.flush(EXIT_FLUSH_SECONDS)


class StoredTurns:
    """Files of finished turns' keys and values, one directory per model fingerprint, within one disk budget.

    The fingerprint names the model file's bytes, the kernels, the arithmetic and the KV type: a changed model gets
    another directory and never reads these. Every worker of the machine reads and writes the same files; a file is
    written whole under another name and renamed, so a reader never sees half of one.
    """

    def __init__(self, root: Path, fingerprint: str, layout: str, budget: int, most_pending: int = MOST_PENDING_BYTES):
        self.root, self.budget = root, budget  # root holds every model's directory, under one budget
        self.directory = root / fingerprint
        self.fingerprint, self.layout = fingerprint, layout  # layout: the export's shape, checked on every read
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # conversations' tokens: the server's alone
        remove_abandoned_partials(root)
        self.turns: dict[str, tuple[int, ...]] = {}  # file name: the turn's tokens
        # The same turns in their tokens' order: the longest prefix a prompt shares with any of them is shared with
        # one of its two neighbours in this order, so a lookup costs two comparisons, not one per stored turn.
        self._ordered: list[tuple[tuple[int, ...], str]] = []
        self._listed_at = -1  # the directory's modification time when it was last listed
        self._scanned_bytes = self._unscanned_bytes = 0  # the files' bytes at the last scan; written since
        self._scan_due = 0.0  # the budget's first scan comes with the first write
        self._buffers = ExportBuffers(most_pending)
        self._pending: queue.SimpleQueue[tuple[tuple[int, ...], mmap.mmap, int] | None] = queue.SimpleQueue()
        self._pending_turns = 0
        self._lock = threading.Lock()  # the pending turns
        self._index = threading.RLock()  # the turns, which the engine reads while the writer adds and removes
        self._idle = threading.Event()
        self._idle.set()
        self._writer = threading.Thread(target=self._write_turns, name="stored turns", daemon=True)
        self._writer.start()
        _open_stores.add(self)

    def lookup(self, prompt_ids: list[int], longer_than: int) -> tuple[int, str, int] | None:
        """Return the length of the longest prefix a stored turn shares with prompt_ids (all but its last token), that
        turn's file name and its positions, where it is longer than longer_than and worth reading; else None."""
        best, best_name, best_tokens = max(longer_than, PrefixCache.MIN_REUSE - 1), None, 0
        with self._index:
            self._list()
            known = tuple(prompt_ids[:-1])  # the last token is always computed
            at = bisect.bisect_left(self._ordered, (known,))
            for tokens, name in self._ordered[max(0, at - 1) : at + 1]:
                shared = shared_prefix(tokens, known)
                if shared > best:
                    best, best_name, best_tokens = shared, name, len(tokens)
        return (best, best_name, best_tokens) if best_name is not None else None

    def read(self, name: str, tokens: int, whole_bytes: int, wanted_bytes: int) -> np.ndarray | None:
        """Return the first wanted_bytes of a stored turn's exported positions (tokens of them, whole_bytes in all),
        mapped from the file; None where the file is gone (another writer's budget or a later turn took it), damaged or
        another's."""
        path = self.directory / name
        try:
            with open(path, "rb") as handle:
                header = read_header(handle)
                if header is None or header != self._header(tokens, whole_bytes):
                    raise ValueError("a header of another model, layout or length")
                start = handle.tell() + 4 * tokens
                if os.fstat(handle.fileno()).st_size != start + whole_bytes:
                    raise ValueError(f"not {whole_bytes} bytes of positions")
                # Mapped, not read: the import copies from the page cache once (a 2,000-token turn of the embedded
                # model is 46 MB). Files are replaced by renaming and removed by unlinking, never cut short in place,
                # so the mapping stays whole.
                mapped = mmap.mmap(handle.fileno(), start + wanted_bytes, access=mmap.ACCESS_READ)
            data = np.frombuffer(mapped, dtype=np.uint8, count=wanted_bytes, offset=start)
            with contextlib.suppress(FileNotFoundError):  # what was read stays good if a budget takes it now
                touch(path)  # the budget gives up the least recently used first
            return data
        except FileNotFoundError:
            self._forget(name)  # another worker's budget took it
        except (OSError, ValueError) as exc:
            log.warning("stored turn %s not read: %s", path, exc)
            self._forget(name)
            path.unlink(missing_ok=True)
        return None

    def _remember(self, name: str, tokens: tuple[int, ...]) -> None:
        with self._index:
            if name not in self.turns:
                self.turns[name] = tokens
                bisect.insort(self._ordered, (tokens, name))

    def _forget(self, name: str) -> None:
        with self._index:
            tokens = self.turns.pop(name, None)
            if tokens is not None:
                self._ordered.pop(bisect.bisect_left(self._ordered, (tokens, name)))

    def save(self, tokens: list[int], size: int, export: Callable[[np.ndarray], object]) -> bool:
        """Have export fill size bytes with a finished turn's positions, and queue them to be written; False, without
        calling it, when the writer is too far behind."""
        buffer = self._buffers.take(size)
        if buffer is None:
            return False
        try:
            export(np.frombuffer(buffer, dtype=np.uint8, count=size))
        except BaseException:
            self._buffers.give_back(buffer)
            raise
        with self._lock:
            self._pending_turns += 1
            self._idle.clear()
        self._pending.put((tuple(tokens), buffer, size))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued turn is written; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 10) -> None:
        """Write what is queued, then stop the writer."""
        self._pending.put(None)
        self._writer.join(timeout)

    def _header(self, tokens: int, data_bytes: int) -> dict:
        return {"fingerprint": self.fingerprint, "layout": self.layout, "tokens": tokens, "bytes": data_bytes}

    def _list(self) -> None:
        """Read the headers of turns another worker wrote since the last look; forget those gone."""
        try:
            modified = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            modified = self.directory.stat().st_mtime_ns
        if modified == self._listed_at:
            return
        self._listed_at = modified
        names = {entry.name for entry in os.scandir(self.directory) if entry.name.endswith(SUFFIX)}
        for name in set(self.turns) - names:
            self._forget(name)
        for name in names - set(self.turns):
            tokens = self._tokens_of(self.directory / name)
            if tokens is not None:
                self._remember(name, tokens)

    def _tokens_of(self, path: Path) -> tuple[int, ...] | None:
        try:
            with open(path, "rb") as handle:
                header = read_header(handle)
                if header is None or header["fingerprint"] != self.fingerprint or header["layout"] != self.layout:
                    return None
                count, data_bytes = int(header["tokens"]), int(header["bytes"])
                # Counts the file cannot hold are refused before anything is read for them: it is damaged.
                size = os.fstat(handle.fileno()).st_size
                if count < 0 or data_bytes < 0 or handle.tell() + 4 * count + data_bytes != size:
                    path.unlink(missing_ok=True)
                    return None
                ids = handle.read(4 * count)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if len(ids) != 4 * count:
            return None
        return tuple(np.frombuffer(ids, dtype="<i4").tolist())

    def _write_turns(self) -> None:
        while True:
            try:
                item = self._pending.get(timeout=SPARES_IDLE_SECONDS)
            except queue.Empty:
                self._buffers.drop_spares()
                continue
            if item is None:
                break
            tokens, buffer, size = item
            try:
                self._write(tokens, memoryview(buffer)[:size])
            except OSError as exc:  # a full disk loses a stored turn, never a reply
                log.warning("a finished turn was not stored: %s", exc)
            except Exception:  # nor does anything else: the writer goes on with the next turn
                log.exception("a finished turn was not stored")
            finally:
                self._buffers.give_back(buffer)
                with self._lock:
                    self._pending_turns -= 1
                    if self._pending_turns == 0:
                        self._idle.set()
            self._buffers.prepare()
        self._idle.set()

    def _write(self, tokens: tuple[int, ...], data: memoryview) -> None:
        name = hashlib.sha256(np.asarray(tokens, dtype="<i4").tobytes()).hexdigest()[:32] + SUFFIX
        path = self.directory / name
        header = json.dumps(self._header(len(tokens), data.nbytes)).encode()
        partial = path.with_name(partial_name(name))  # partial_name's form
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(MAGIC + len(header).to_bytes(4, "little") + header)
            handle.write(np.asarray(tokens, dtype="<i4").tobytes())
            handle.write(data)
        touch(partial)
        os.replace(partial, path)
        with self._index:
            self._list()
            self._remember(name, tokens)  # known: its header need not be read back
            # An earlier turn of the same conversation is a prefix of this one: this file serves every prompt it did.
            # Each write removing its own, no stored turn begins another, so such a turn sits just before this one in
            # token order (any turn between them would begin with it): the engine's lookups, which wait on this
            # lock, never wait on a scan of every stored turn. (A shorter turn written after a longer one that
            # begins with it can stay until the budget takes it.)
            at = bisect.bisect_left(self._ordered, (tokens, name))
            while at > 0:
                other_tokens, other = self._ordered[at - 1]
                if len(other_tokens) >= len(tokens) or tokens[: len(other_tokens)] != other_tokens:
                    break
                (self.directory / other).unlink(missing_ok=True)
                self._forget(other)
                at -= 1
        self._unscanned_bytes += path.stat().st_size
        if self._scanned_bytes + self._unscanned_bytes > self.budget or time.monotonic() > self._scan_due:
            self._keep_to_budget()

    def _keep_to_budget(self) -> None:
        """Delete the least recently used turns, of every model's directory, until the files fit the budget."""
        # Every worker's writes count: a scan is due once this one's would fill what the last scan left, or at the
        # latest BUDGET_SCAN_SECONDS after it.
        self._scan_due = time.monotonic() + BUDGET_SCAN_SECONDS
        files = []
        for directory in self.root.iterdir():
            if directory.is_dir():
                for entry in os.scandir(directory):
                    if entry.name.endswith(SUFFIX):
                        try:
                            stat = entry.stat()
                        except FileNotFoundError:
                            continue
                        files.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget:
                break
            path.unlink(missing_ok=True)
            if path.parent == self.directory:
                self._forget(path.name)
            total -= size
        self._scanned_bytes, self._unscanned_bytes = total, 0
