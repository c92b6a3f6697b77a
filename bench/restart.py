"""A restart in the middle of a long conversation: the next turn's first token before it, and after it.

Usage: make bench-restart   (or: .venv/bin/python -m bench.restart --tokens 2000 --repeats 3)

A conversation's first turn pastes a text of about --tokens tokens and asks for a summary. Its second turn (a short
question) is timed to its first streamed token: on the server that served the first turn, two seconds later (its
prefix cache in memory), then on a server restarted on the same cache directory (the first turn read from
PALAVER_CACHE_DIR/kv), and on one restarted with PALAVER_STORED_TURNS_BYTES=0 (the whole conversation computed
again). Each timed turn after a restart is the new server's first request; every server is the Procfile's gunicorn
on the embedded model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests

from bench.engines import cpu_summary
from bench.kl_divergence import held_text
from bench.serve import palaver, seconds_until_ready
from palaver.core.config import EMBEDDED_MODEL_NAME as MODEL

# The defaults (2,048 tokens of context, 2,000 characters a message) are short of a pasted text and its replies.
LONG = {"max_context_tokens": "4096", "max_message_chars": "20000"}
THINKING_SECONDS = 2
QUESTIONS = ["And in one sentence?", "Who may use it?", "What does it ask of someone who shares it?"]


def pasted_text(tokens: int) -> str:
    """Return the start of the held licence texts, about tokens tokens of the embedded model (4.3 characters each)."""
    return held_text()[: int(tokens * 4.3)]


def first_token(url: str, messages: list[dict], max_tokens: int = 8) -> tuple[float, str, int]:
    """Stream one reply; return the seconds to its first text, the whole text, and the prompt's tokens."""
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    started, first, text, prompt_tokens = time.perf_counter(), None, "", 0
    with requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        if not response.ok:
            raise SystemExit(f"{response.status_code}: {response.text}")
        for line in response.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[len(b"data: ") :])
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content")
                if piece:
                    first = first if first is not None else time.perf_counter() - started
                    text += piece
            prompt_tokens = (chunk.get("usage") or {}).get("prompt_tokens", prompt_tokens)
    assert first is not None, "no text came"
    return first, text, prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000, help="tokens of the conversation before the question")
    parser.add_argument("--repeats", type=int, default=3, help="restarts a configuration (one question each)")
    args = parser.parse_args()
    print(f"CPU: {cpu_summary()}")
    opening = [{"role": "user", "content": pasted_text(args.tokens) + "\n\nSummarise this."}]
    rows: dict[str, list[float]] = {"first turn (computed whole)": [], "next turn, same server": []}
    rows |= {"next turn after a restart, stored turns": [], "next turn after a restart, none stored": []}
    conversation_tokens = 0
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            cache = str(Path(scratch) / f"cache-{repeat}")
            question = {"role": "user", "content": QUESTIONS[repeat % len(QUESTIONS)]}
            with palaver(cache, **LONG) as (url, _):
                seconds_until_ready(url, time.perf_counter())
                seconds, summary, _ = first_token(url, opening, max_tokens=64)
                rows["first turn (computed whole)"].append(seconds)
                follow_up = [*opening, {"role": "assistant", "content": summary}, question]
                time.sleep(THINKING_SECONDS)  # a person reads the reply; meanwhile its turn is written to disk
                seconds, same, conversation_tokens = first_token(url, follow_up)
                rows["next turn, same server"].append(seconds)
            for name, budget in (("stored turns", "1GB"), ("none stored", "0")):
                with palaver(cache, **LONG, stored_turns_bytes=budget) as (url, _):
                    seconds_until_ready(url, time.perf_counter())  # the model loaded: only the turn is timed
                    seconds, again, _ = first_token(url, follow_up)
                    assert again == same, "a restart changed the reply"
                    rows[f"next turn after a restart, {name}"].append(seconds)
    print(f"\nA conversation of {conversation_tokens} tokens; the median of {args.repeats} restarts:\n")
    print("| turn | seconds to the first token |")
    print("|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    main()
