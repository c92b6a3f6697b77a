"""Render chat templates in child processes held to memory, time and output bounds.

A model file's template is code from the internet. Rendered here, a hostile one costs a child process: never the
worker's memory, its interpreter lock, its tokenizer lock or another request's time. Run as a module, this is the
child: it reads render jobs as JSON lines and answers each with one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

MEMORY_BYTES = 512 * 2**20  # a child's address space: a string of 10**10 characters fails at once
SECONDS = 2.0  # one render, wall clock; a chat template renders in milliseconds
OUTPUT_CHARS = 1_000_000  # the least text a render may write; four times its input's size where that is more
CHILDREN = 4  # at most this many renders at once in a process; more wait for a free child
KEPT_IDLE = 2  # children kept ready between renders
CACHED_TEMPLATES = 8  # compiled templates a child keeps
ERROR_CHARS = 300  # a template's own error message is cut to this length


class TemplateBroke(ValueError):
    """A chat template broke a bound (memory, time, output), so its render was stopped."""


class TemplateFailed(ValueError):
    """A chat template raised an error of its own, or could not be compiled (syntax is then True)."""

    def __init__(self, message: str, syntax: bool = False):
        super().__init__(message)
        self.syntax = syntax


def render(
    source: str,
    special_tokens: dict[str, Any],
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    variables: dict[str, Any] | None = None,
) -> str:
    """Render a chat template in a bounded child; raise TemplateBroke or TemplateFailed where it cannot.

    variables: what else the template reads, as chat_template_kwargs give it (enable_thinking).
    """
    job: dict[str, Any] = {
        "source": source,
        "special_tokens": special_tokens,
        "messages": messages,
        "tools": tools,
        "add_generation_prompt": add_generation_prompt,
        "variables": variables or {},
    }
    payload = json.dumps(job, default=str).encode() + b"\n"
    job["limit"] = max(OUTPUT_CHARS, 4 * len(payload))
    payload = json.dumps(job, default=str).encode() + b"\n"
    answer = POOL.run(payload)
    if "text" in answer:
        return answer["text"]
    if "bound" in answer:
        raise TemplateBroke(answer["bound"])
    raise TemplateFailed(answer["error"], syntax=answer.get("syntax", False))


class Child:
    """One render process, spoken to over its stdin and stdout."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "palaver.engine.prompting.template_sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.healthy = True

    def run(self, payload: bytes) -> dict[str, Any]:
        """Send one job and return its answer, stopping the child when it breaks a bound."""
        deadline = time.monotonic() + SECONDS
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(payload)
            self.process.stdin.flush()
        except OSError:
            return self.stop(f"its render process ended (over {MEMORY_BYTES // 2**20} MiB of memory)")
        reader, received = self.process.stdout.fileno(), bytearray()
        poller = select.poll()  # not select(): a worker's descriptors may number past 1024
        poller.register(reader, select.POLLIN)
        while not received.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return self.stop(f"it took longer than {SECONDS:g} s")
            if not poller.poll(max(1, int(left * 1000))):
                continue
            chunk = os.read(reader, 1 << 20)
            if not chunk:
                return self.stop(f"its render process ended (over {MEMORY_BYTES // 2**20} MiB of memory)")
            received += chunk
        answer = json.loads(received)
        self.healthy = "bound" not in answer  # a child that hit a bound may hold fragmented memory: retire it
        return answer

    def stop(self, why: str) -> dict[str, Any]:
        """Kill the child and answer that the template broke a bound."""
        self.close()
        return {"bound": why}

    def close(self) -> None:
        """End the child now and reap it."""
        self.healthy = False
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class Pool:
    """The render children of one process: at most CHILDREN at work, KEPT_IDLE kept ready."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(CHILDREN)
        self._idle: list[Child] = []
        self._pid = os.getpid()

    def run(self, payload: bytes) -> dict[str, Any]:
        """Run one job on an idle child, or a new one."""
        with self._slots:
            child = self._take()
            try:
                return child.run(payload)
            finally:
                self._give(child)

    def _take(self) -> Child:
        with self._lock:
            if self._pid != os.getpid():  # a forked process shares its parent's pipes: it needs its own children
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
        return Child()

    def _give(self, child: Child) -> None:
        with self._lock:
            if child.healthy and len(self._idle) < KEPT_IDLE and self._pid == os.getpid():
                self._idle.append(child)
                return
        child.close()


POOL = Pool()


def answer(job: dict[str, Any], compiled: dict[str, Any]) -> dict[str, Any]:
    """Compile (once) and render one job inside this child, saying which bound it broke if it broke one."""
    import jinja2

    from palaver.engine.prompting.chat_template import ChatTemplate, OutputTooLong

    try:
        key = json.dumps([job["source"], job["special_tokens"]])
        if key not in compiled:
            if len(compiled) >= CACHED_TEMPLATES:
                compiled.pop(next(iter(compiled)))
            compiled[key] = ChatTemplate(job["source"], job["special_tokens"])
        rendered = compiled[key]
        text = rendered.render(
            job["messages"], job["add_generation_prompt"], job["tools"], job["limit"], job.get("variables")
        )
        return {"text": text}
    except MemoryError:
        return {"bound": f"it needed more than {MEMORY_BYTES // 2**20} MiB of memory"}
    except OutputTooLong as error:
        return {"bound": str(error)}
    except RecursionError:
        return {"bound": "it recursed too deeply"}
    except jinja2.TemplateSyntaxError as error:
        return {"error": f"it does not compile: {error}"[:ERROR_CHARS], "syntax": True}
    except Exception as error:  # the template's own errors: raise_exception, a type error, a division by zero
        return {"error": f"{type(error).__name__}: {error}"[:ERROR_CHARS]}


def serve() -> None:
    """Answer render jobs from stdin until it closes, within the memory bound."""
    import resource

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our stdin
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]  # a parent's own cap, if lower, is kept
    limit = MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    compiled: dict[str, Any] = {}
    for line in sys.stdin.buffer:
        try:
            reply = answer(json.loads(line), compiled)
            out = json.dumps(reply).encode() + b"\n"
        except MemoryError:
            out = json.dumps({"bound": f"it needed more than {MEMORY_BYTES // 2**20} MiB of memory"}).encode() + b"\n"
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    serve()
