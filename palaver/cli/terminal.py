"""Terminal chat: each message answered token by token, by the engine here or by a running Palaver."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import TYPE_CHECKING

import requests

from palaver.chat.presets import Preset
from palaver.core.parameters import GenerationParams
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message, Reply

if TYPE_CHECKING:
    from palaver.backends import Backend

Turn = Callable[[str], Iterator[str]]  # a message in, the reply's text out as it comes


def local_chat(backend: Backend, params: GenerationParams, preset: Preset, model: str | None = None) -> Turn:
    """Return a chat that remembers its turns and runs them on backend; a stopped reply keeps what was shown."""
    history: list[Message] = []

    def send(text: str) -> Iterator[str]:
        request = GenerationRequest(params, messages=preset.apply([*history, Message("user", text)]), model=model)
        shown = ""
        try:
            with closing(backend.stream(request)) as events:
                for event in events:
                    if isinstance(event, str):
                        shown += event
                        yield event
                    elif isinstance(event, Reply):
                        shown = event.text
        finally:  # Ctrl-C closes the stream, which stops the generation; the turn keeps what was shown
            if shown:
                history.extend([Message("user", text), Message("assistant", shown)])

    return send


def remote_chat(url: str, key: str | None, preset: str | None, model: str | None = None) -> Turn:
    """Return a chat with the Palaver at url, through its form endpoint: its cookie keeps the conversation."""
    session = requests.Session()
    if key:
        session.headers["Authorization"] = f"Bearer {key}"
    base = url.rstrip("/")
    if preset:
        session.post(f"{base}/new", data={"preset": preset}, timeout=30).raise_for_status()

    def send(text: str) -> Iterator[str]:
        response = session.post(
            f"{base}/",
            data={"textbox": text, **({"model": model} if model else {})},
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=300,
        )
        with closing(response):
            if response.headers.get("Content-Type", "").startswith("application/json"):
                raise RuntimeError(response.json()["error"]["message"])
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[len(b"data:") :])
                if "delta" in event:
                    yield event["delta"]
                elif "error" in event:
                    raise RuntimeError(event["error"]["message"])

    return send
