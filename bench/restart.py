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


def transfer_milliseconds(tokens: int, tries: int = 5) -> dict[str, list[float]]:
    """Time, in this process on the embedded model, what a stored turn of tokens positions costs: the engine's export
    when it ends, the file's read (mapped) and the import into a new sequence on the next turn; each try in turn."""
    import numpy as np

    from palaver.engine.gguf.file import read_gguf
    from palaver.engine.machine import available_cores
    from palaver.engine.model_sources import embedded_gguf_path
    from palaver.engine.native.binding import NativeModel
    from palaver.engine.native.loading import llama_config
    from palaver.engine.native.stored_turns import StoredTurns

    gguf = read_gguf(embedded_gguf_path())
    model = NativeModel(gguf.path, llama_config(gguf), gguf.tensors, available_cores())
    cache = model.new_cache(16, 2 * (tokens // 16 + 1))
    sequence = cache.new_sequence()
    assert cache.reserve(sequence, tokens)
    cache.step_rows([sequence], [[int(t) for t in np.arange(tokens) % 40_000 + 5]], [0])
    times: dict[str, list[float]] = {"export": [], "read": [], "import": []}
    with tempfile.TemporaryDirectory() as scratch:
        store = StoredTurns(Path(scratch), "fp_bench", "bench", 1 << 31)
        for attempt in range(tries):
            ids = [attempt, *range(tokens - 1)]  # a turn of its own each try: a new file, as a new turn writes
            size = cache.export_bytes(tokens)
            started = time.perf_counter()  # the engine thread's part: the export into the store's buffer
            assert store.save(ids, size, lambda data: cache.export(sequence, tokens, data))
            times["export"].append(time.perf_counter() - started)
            assert store.flush(60)
            found = store.lookup([*ids, 0], 0)
            assert found is not None
            started = time.perf_counter()
            mapped = store.read(found[1], tokens, size, size)
            times["read"].append(time.perf_counter() - started)
            target = cache.new_sequence()
            started = time.perf_counter()
            assert mapped is not None and cache.import_positions(target, tokens, mapped)
            times["import"].append(time.perf_counter() - started)
            cache.free(target)
        store.close()
    cache.close()
    model.close()
    return {name: [1000 * value for value in values] for name, values in times.items()}


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
    transfer = transfer_milliseconds(conversation_tokens)
    print(f"\nA stored turn of {conversation_tokens} positions, ms, {len(transfer['export'])} tries in turn:\n")
    print("| step | each try |\n|---|---|")
    for name, values in transfer.items():
        print(f"| {name} | {', '.join(f'{value:.1f}' for value in values)} |")


if __name__ == "__main__":
    main()
