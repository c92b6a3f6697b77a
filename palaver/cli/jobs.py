"""Batch runs: a preset over every row of a CSV or JSONL file, through the engine's batching, resumable."""

from __future__ import annotations

import csv
import json
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from palaver.chat.presets import Preset
from palaver.core.errors import PalaverError
from palaver.core.parameters import GenerationParams
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message

if TYPE_CHECKING:
    from palaver.backends import ModelRouter

log = logging.getLogger("palaver.cli.jobs")
REPLY, ERROR = "reply", "error"


class BatchInputError(Exception):
    """The input file cannot be run as it is: a missing column, an unknown format."""


def file_format(path: Path) -> str:
    """Return csv or jsonl, from the file's extension."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise BatchInputError(f"{path.name}: use a .csv or .jsonl file")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the rows of a CSV or JSONL file, and the CSV's columns (empty for JSONL)."""
    with path.open(newline="", encoding="utf-8") as handle:
        if file_format(path) == "csv":
            reader = csv.DictReader(handle)
            return list(reader), list(reader.fieldnames or [])
        rows = []
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BatchInputError(f"{path.name}, line {number}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise BatchInputError(f"{path.name}, line {number}: each line must be a JSON object")
                rows.append(row)
        return rows, []


def drop_partial_row(path: Path) -> None:
    """Cut a last row that a killed run left half-written, so that resuming writes it again whole."""
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def rows_done(path: Path) -> int:
    """Return how many rows an earlier run of the same batch has already written to path."""
    if not path.exists():
        return 0
    drop_partial_row(path)
    with path.open(newline="", encoding="utf-8") as handle:
        if file_format(path) == "csv":
            return sum(1 for _ in csv.DictReader(handle))
        return sum(1 for line in handle if line.strip())


@dataclass(frozen=True)
class RowResult:
    row: dict[str, Any]
    reply: str
    error: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # a schema's top-level fields, from the reply's JSON


def schema_fields(schema: dict[str, Any]) -> list[str]:
    """Return the top-level properties of an object schema: the columns its replies fill."""
    properties = schema.get("properties") if schema.get("type", "object") == "object" else None
    return list(properties) if isinstance(properties, dict) else []


def filled_fields(reply: str, names: list[str]) -> dict[str, Any]:
    """Return the named fields of a reply's JSON object; nested values stay JSON text, as a cell holds them."""
    value = json.loads(reply)
    if not isinstance(value, dict):
        return {}
    return {
        name: json.dumps(value[name], ensure_ascii=False) if isinstance(value.get(name), (dict, list)) else value[name]
        for name in names
        if name in value
    }


class OrderedWriter:
    """Write results in input order as they finish, flushing each, so an interrupted run resumes after them."""

    def __init__(
        self, handle: TextIO, fmt: str, columns: list[str], start: int, write_header: bool, fields: Sequence[str] = ()
    ):
        self.handle, self.format, self.next = handle, fmt, start
        self.pending: dict[int, RowResult] = {}
        self.lock = threading.Lock()
        header = [*columns, *[name for name in fields if name not in columns], REPLY, ERROR]
        self.csv = csv.DictWriter(handle, header, extrasaction="ignore") if fmt == "csv" else None
        if self.csv is not None and write_header:
            self.csv.writeheader()

    def add(self, index: int, result: RowResult) -> None:
        with self.lock:
            self.pending[index] = result
            while self.next in self.pending:
                self._write(self.pending.pop(self.next))
                self.next += 1
            self.handle.flush()

    def _write(self, result: RowResult) -> None:
        if self.csv is not None:
            self.csv.writerow({**result.row, **result.fields, REPLY: result.reply, ERROR: result.error or ""})
            return
        extra = {ERROR: result.error} if result.error else {}
        line = {**result.row, **result.fields, REPLY: result.reply, **extra}
        self.handle.write(json.dumps(line, ensure_ascii=False) + "\n")


@dataclass
class BatchRun:
    """Run one preset over a file's rows through a backend, writing each row with its reply."""

    backend: ModelRouter
    params: GenerationParams
    preset: Preset
    column: str = "text"
    concurrency: int = 32
    fields: list[str] = field(default_factory=list)  # with a schema (params.json_schema): columns its replies fill
    load_wait: float = 600
    model: str | None = None  # the configured model's name; None: the default
    in_flight: set[GenerationRequest] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    def run(
        self, source: Path, target: Path, on_start: Callable[[int, int], Any] | None = None
    ) -> Generator[RowResult, None, None]:
        """Run the rows target does not hold yet, yielding each as it is written; on_start gets (done, total).

        Closing the iterator (as an interrupt does, wherever it lands) stops the run at once: rows not started
        never start, and rows generating are cancelled. Only the rows already written stay.
        """
        rows, columns = read_rows(source)
        if file_format(target) != file_format(source):
            raise BatchInputError("the output must have the input's format (.csv or .jsonl)")
        if columns and self.column not in columns:
            raise BatchInputError(f"{source.name} has no column '{self.column}'; its columns are {', '.join(columns)}")
        done = rows_done(target)
        if done > len(rows):
            raise BatchInputError(f"{target.name} holds {done} rows but {source.name} only {len(rows)}")
        if on_start is not None:
            on_start(done, len(rows))
        # Wait for the model here, where Ctrl-C lands, rather than in a pool thread that exit would have to join.
        self.backend.wait_ready(self.load_wait, self.model)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="palaver-batch")
        finished = False
        try:
            with target.open("a", newline="", encoding="utf-8") as handle:
                writer = OrderedWriter(
                    handle, file_format(source), columns, done, write_header=done == 0, fields=self.fields
                )
                futures: list[Future] = [pool.submit(self._answer, row) for row in rows[done:]]
                for index, future in enumerate(futures, done):
                    result = future.result()
                    writer.add(index, result)
                    yield result
            finished = True
        finally:
            if not finished:  # interrupted, or closed by the caller: nothing more starts, nothing runs on
                self.stop()
            pool.shutdown(wait=finished, cancel_futures=True)

    def stop(self) -> None:
        """Cancel the generations running for this run's rows, and any a pool thread starts from now on."""
        with self._lock:
            self._stopped = True
            running = list(self.in_flight)
        for request in running:
            request.cancel()

    def _answer(self, row: dict[str, Any]) -> RowResult:
        text = row.get(self.column)
        if not isinstance(text, str) or not text.strip():
            return RowResult(row, "", f"no text in '{self.column}'")
        request = GenerationRequest(self.params, messages=self.preset.apply([Message("user", text)]), model=self.model)
        with self._lock:
            self.in_flight.add(request)
            if self._stopped:  # the row was taken just as the run stopped: it must not generate for nobody
                request.cancel()
        try:
            reply = self.backend.generate(request)
            if self.params.json_schema is None:
                return RowResult(row, reply.text, None)
            if reply.finish_reason != "stop":
                return RowResult(
                    row, reply.text, f"the reply ended ({reply.finish_reason}) before the schema was filled"
                )
            return RowResult(row, reply.text, None, filled_fields(reply.text, self.fields))
        except PalaverError as exc:
            return RowResult(row, "", exc.message)
        except Exception:  # one row's failure must not end the run
            log.exception("a batch row failed")
            return RowResult(row, "", "generation failed; the error has been logged")
        finally:
            with self._lock:
                self.in_flight.discard(request)
