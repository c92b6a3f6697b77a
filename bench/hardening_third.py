"""Replay issue 30's probes (the third hostile round) on real servers and print what each one costs.

Usage: make bench-hardening-third                       (every probe, against this checkout)
       make bench-hardening-third BENCH_ARGS="--only rows,switches"

Run the same file from another checkout (copy it, with tests/, into a worktree of an older commit) to compare
before and after on one machine. Each probe starts its own server, under a 6 GB address-space cap so a probe that
succeeds in exhausting memory fails there instead of taking the machine. The attacker connects from 127.0.0.1 and
"another user" from 127.0.0.2.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import requests

from bench.hardening import ATTACKER, VICTIM, client, run_probes, timed
from tests import gguf_surgery, tiny_models
from tests.servers import Server, capped_command, procfile_server

ROOT = Path(__file__).resolve().parent.parent
ADDRESS_SPACE = 6 * 2**30
CHAT = "/v1/chat/completions"


@contextmanager
def server(cache: str, wait_for: str = "/readyz", **settings: str) -> Iterator[Server]:
    """Start the Procfile's server from this checkout, its address space capped."""
    env = {"PALAVER_CACHE_DIR": cache, "PALAVER_PRELOAD": "1", "PALAVER_TEMPERATURE": "0", "HF_HUB_OFFLINE": "1"}
    env.update({f"PALAVER_{name.upper()}": value for name, value in settings.items()})
    with procfile_server(env, wait_for=wait_for, timeout=300, command=capped_command(ADDRESS_SPACE)) as running:
        yield running


@functools.cache
def default_model(base: str) -> str:
    """Return the name of the server's default model, which /v1 requests must name."""
    return requests.get(base + "/v1/models", timeout=120).json()["data"][0]["id"]


def named(base: str, body: dict) -> dict:
    """Return body naming the server's default model unless it names one."""
    return {"model": default_model(base), **body}


def worker_peak_mb(running: Server) -> float:
    """Return the peak resident memory of the server's worker (the master's first child), in MB."""
    try:
        child = Path(f"/proc/{running.pid}/task/{running.pid}/children").read_text().split()[0]
        status = Path(f"/proc/{child}/status").read_text()
    except (OSError, IndexError):
        return float("nan")  # the worker is gone
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))


def settled_state(base: str, seconds: float = 120) -> str:
    """Return the default model's state once its load has succeeded or failed (or seconds have passed)."""
    deadline, state = time.monotonic() + seconds, "loading"
    while state in ("idle", "loading") and time.monotonic() < deadline:
        try:
            state = requests.get(base + "/readyz", timeout=60).json().get("state", "?")
        except requests.RequestException:
            state = "no answer"
        time.sleep(0.2)
    return state


def statuses(answers: list[int]) -> str:
    return ", ".join(f"{count}×{code}" for code, count in sorted(Counter(answers).items()))


def victim_completion(base: str, model: str | None = None) -> tuple[float, int, int]:
    """Time another user's 8-token completion."""
    body = {"model": model or default_model(base), "prompt": "Say hello.", "max_tokens": 8}
    return timed(lambda: client(VICTIM).post(base + "/v1/completions", json=body, timeout=120))


def quiet_and_loaded(base: str, attack, model: str | None = None) -> tuple[float, list[tuple[float, int, int]]]:
    """Return another user's quiet latency, and its replies while attack (a callable) runs."""
    quiet = min(victim_completion(base, model)[0] for _ in range(3))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (attack(), done.set()))
    thread.start()
    replies = []
    while not done.is_set():
        replies.append(victim_completion(base, model))
    thread.join()
    return quiet, replies


def loaded_summary(quiet: float, replies: list[tuple[float, int, int]]) -> str:
    worst = max(reply[0] for reply in replies)
    return f"{statuses([reply[1] for reply in replies])}; worst {worst:.2f} s against {quiet:.2f} s quiet"


def flood(base: str, path: str, body: dict, count: int) -> list[int]:
    """Send count copies of body at once from the attacker; return their statuses."""
    codes: list[int] = []
    body = named(base, body)
    send = partial(client(ATTACKER).post, base + path, json=body, timeout=300)
    threads = [threading.Thread(target=lambda: codes.append(timed(send)[1])) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def probe_rows(cache: str) -> list[tuple[str, str]]:
    """Finding 1: n and lists of prompts multiplying one client's share."""
    rows = []
    with server(cache) as running:
        chat = {"messages": [{"role": "user", "content": "Tell me a long story."}], "n": 8, "max_tokens": 300}
        codes: list[int] = []
        quiet, replies = quiet_and_loaded(running.url, lambda: codes.extend(flood(running.url, CHAT, chat, 8)))
        rows.append(("8 × chat `n: 8`, 300 tokens: attacker", statuses(codes)))
        rows.append(("8 × chat `n: 8`: another user's 8-token completions", loaded_summary(quiet, replies)))
        prompts = {"prompt": ["Once upon a time"] * 16, "max_tokens": 300}
        codes = []
        quiet, replies = quiet_and_loaded(
            running.url, lambda: codes.extend(flood(running.url, "/v1/completions", prompts, 4))
        )
        rows.append(("4 × completions of 16 prompts: attacker", statuses(codes)))
        rows.append(("4 × completions of 16 prompts: another user", loaded_summary(quiet, replies)))
    return rows


def big_gguf(root: Path) -> Path:
    """Write a float32 Llama GGUF of about 340 MB, fits 600 MB alone, and not beside the embedded model."""
    llama = tiny_models.build_chat_llama(root / "big", width=2048)
    types = {name: "F32" for name in tiny_models.GGUF_TYPES}
    return tiny_models.build_gguf_llama(llama, root / "big.gguf", types)


def probe_switches(cache: str) -> list[tuple[str, str]]:
    """Finding 2: one client alternating two models' names under PALAVER_MEMORY_LIMIT=600MB."""
    models = f"smol=,big={big_gguf(Path(cache))}"
    with server(cache, models=models, memory_limit="600MB", max_batch_size="4") as running:
        attacker: list[int] = []

        def alternate() -> None:
            session, deadline, index = client(ATTACKER), time.monotonic() + 45, 0
            while time.monotonic() < deadline:
                body = {"model": ("big", "smol")[index % 2], "prompt": "hi", "max_tokens": 1}
                attacker.append(timed(lambda body=body: session.post(running.url + "/v1/completions", json=body))[1])
                index += 1

        quiet, replies = quiet_and_loaded(running.url, alternate, "smol")
        states = {
            card["id"]: card["state"] for card in requests.get(running.url + "/v1/models", timeout=30).json()["data"]
        }
        ready = requests.get(running.url + "/readyz", timeout=10)
        return [
            ("alternating names for 45 s: attacker", statuses(attacker)),
            ("alternating names: another user on the default model", loaded_summary(quiet, replies)),
            ("alternating names: worker peak RSS (limit 600 MB)", f"{worker_peak_mb(running):.0f} MB"),
            ("alternating names: models after, `/readyz`", f"{states}, {ready.status_code} {ready.json()['state']}"),
        ]


HOSTILE_SCHEMAS = {
    "self-referencing `$ref`": {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    "pattern `^(x{1,100}){1,100}y$`": {
        "type": "object",
        "properties": {"v": {"type": "string", "pattern": "^(x{1,100}){1,100}y$"}},
        "required": ["v"],
    },
    "600 optional integer properties": {
        "type": "object",
        "properties": {f"p{index}": {"type": "integer"} for index in range(600)},
    },
}


def schema_answer(base: str, schema: dict) -> str:
    """Ask for a reply under schema; describe the status, the finish reason and whether the content parses."""
    body = {
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "max_tokens": 48,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    answer = requests.post(base + CHAT, json=named(base, body), timeout=120)
    if answer.status_code != 200:
        return f"{answer.status_code} `{answer.json()['error'].get('code')}`"
    choice = answer.json()["choices"][0]
    try:
        json.loads(choice["message"]["content"])
        parses = "parses"
    except ValueError:
        parses = "does not parse"
    return f"200 `{choice['finish_reason']}`, content {parses}"


def probe_grammars(cache: str) -> list[tuple[str, str]]:
    """Findings 3 to 5: schemas that cannot be held, one that is wide, and the keys' order."""
    rows = []
    with server(cache) as running:
        for label, schema in HOSTILE_SCHEMAS.items():
            rows.append((label, schema_answer(running.url, schema)))
        ordered = {
            "type": "object",
            "properties": {"reasoning": {"type": "string", "maxLength": 40}, "answer": {"type": "integer"}},
            "required": ["reasoning", "answer"],
        }
        body = {
            "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            "max_tokens": 60,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": ordered}},
        }
        answer = requests.post(running.url + CHAT, json=named(running.url, body), timeout=120).json()
        content = answer["choices"][0]["message"]["content"]
        first = "reasoning" if content.find('"reasoning"') < content.find('"answer"') else "answer"
        rows.append(("keys of `{reasoning, answer}`", f"`{first}` written first"))
    return rows


TEMPLATES = {
    "`'x' * 10**10`": "{% if messages[0].content == 'boom' %}{{ 'x' * 10**10 }}{% endif %}",
    "string doubling through `namespace`": (
        "{% set ns = namespace(s='x') %}{% if messages[0].content == 'boom' %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}{% endif %}"
    ),
    "nested `range(100000)` loops": (
        "{% if messages[0].content == 'boom' %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{% endif %}"
    ),
}
PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


def trigger(base: str, seen: list[tuple[float, int, int]]) -> None:
    """Send the message that sets a hostile template off; note its time and status."""
    boom = {"messages": [{"role": "user", "content": "boom"}], "max_tokens": 4}
    seen.append(timed(lambda: requests.post(base + CHAT, json=named(base, boom), timeout=90)))


def probe_templates(cache: str) -> list[tuple[str, str]]:
    """Finding 6: a chat template that takes all memory or CPU, with another user's completions beside it."""
    llama = tiny_models.build_chat_llama(Path(cache) / "llama", width=256)
    rows = []
    for label, attack in TEMPLATES.items():
        gguf = tiny_models.build_gguf_llama(llama, Path(cache) / "t.gguf", template=PLAIN + attack)
        try:
            with server(cache, model=str(gguf), wait_for="/healthz", request_timeout="60") as running:
                state = settled_state(running.url)
                if state != "ready":
                    rows.append(
                        (label, f"refused at load: `/readyz` {state}, worker peak {worker_peak_mb(running):.0f} MB")
                    )
                    continue
                seen: list[tuple[float, int, int]] = []
                quiet, replies = quiet_and_loaded(running.url, partial(trigger, running.url, seen))
                rows.append(
                    (
                        label,
                        f"{seen[0][1]} after {seen[0][0]:.1f} s; worker peak {worker_peak_mb(running):.0f} MB; "
                        f"another user: {loaded_summary(quiet, replies)}",
                    )
                )
        except RuntimeError as error:
            rows.append((label, f"server did not start: {str(error).splitlines()[0][:80]}"))
    return rows


def probe_metadata(cache: str) -> list[tuple[str, str]]:
    """Finding 7: metadata values that drive allocations, each the served model of a fresh server."""
    llama = tiny_models.build_chat_llama(Path(cache) / "llama", width=256)
    valid = tiny_models.build_gguf_llama(llama, Path(cache) / "valid.gguf")
    cases = {
        "`llama.rope.dimension_count = 1000000`": ("llama.rope.dimension_count", gguf_surgery.UINT32, 1_000_000),
        "`llama.attention.head_count = 0`": ("llama.attention.head_count", gguf_surgery.UINT32, 0),
        "`llama.context_length = 2**31-1`": ("llama.context_length", gguf_surgery.UINT32, 2**31 - 1),
        "`llama.vocab_size = 2**31-1`": ("llama.vocab_size", gguf_surgery.UINT32, 2**31 - 1),
        "200,000 nested arrays": ("x.nested", None, 200_000),
    }
    rows = []
    for label, (key, kind, value) in cases.items():
        header = gguf_surgery.read(valid)
        if kind is None:
            header.set_raw(key, gguf_surgery.ARRAY, gguf_surgery.nested_arrays(value))
        else:
            header.set(key, kind, value)
        path = header.write(Path(cache) / "hostile.gguf")
        try:
            with server(cache, model=str(path), wait_for="/healthz") as running:
                state = settled_state(running.url)
                log = running.log()
                said = ("Error", "failed:")  # a traceback's last line before, the refusal's line after
                why = next((line for line in reversed(log.splitlines()) if any(word in line for word in said)), "")
                why = why.split("failed: ", 1)[-1].strip()[:100]
                rows.append((label, f"{state}, worker peak {worker_peak_mb(running):.0f} MB; log: `{why}`"))
        except RuntimeError as error:
            rows.append((label, f"server did not start: {str(error).splitlines()[0][:80]}"))
    return rows


def probe_protocol(cache: str) -> list[tuple[str, str]]:
    """Findings 8 and 9: BOS in a chat prompt without a template, and transcripts as OpenAI writes them."""
    llama = tiny_models.build_chat_llama(Path(cache) / "llama", width=256)
    bare = tiny_models.build_gguf_llama(llama, Path(cache) / "bare.gguf", template=False, add_bos=True)
    rows = []
    with server(cache, model=str(bare)) as running:
        chat = requests.post(
            running.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30
        ).json()
        kind, raw = gguf_surgery.read(bare).values["tokenizer.ggml.bos_token_id"]
        bos = struct.unpack(gguf_surgery.FORMATS[kind], raw)[0]
        family = requests.get(running.url + "/readyz", timeout=30).json().get("family")
        rows.append(
            (
                "chat prompt of a file with `add_bos_token` and no template",
                f"`{family}` format, starts with BOS: {chat['tokens'][0] == bos}",
            )
        )
    with server(cache) as running:
        replay = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!", "annotations": [], "refusal": None},
            {"role": "user", "content": "again"},
        ]
        answer = requests.post(
            running.url + CHAT, json=named(running.url, {"messages": replay, "max_tokens": 4}), timeout=120
        )
        rows.append(("an assistant message with `annotations: []`", str(answer.status_code)))
        body = {"messages": [{"role": "user", "content": "hi"}], "tools": [], "max_tokens": 4}
        answer = requests.post(running.url + CHAT, json=named(running.url, body), timeout=120)
        rows.append(("`tools: []`", str(answer.status_code)))
    return rows


def probe_ctrl_c(cache: str) -> list[tuple[str, str]]:
    """Finding 10: palaver batch stopped with Ctrl-C while four busy loops share the cores."""
    texts = Path(cache) / "texts.csv"
    texts.write_text("text\n" + "".join(f"Tell me about number {index}.\n" for index in range(200)))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        env = {**os.environ, "PALAVER_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1", "PALAVER_MAX_NEW_TOKENS": "64"}
        command = [sys.executable, "-m", "palaver", "batch", str(texts), "-o", str(Path(cache) / "out.csv")]
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(8)  # into the run: the model loaded and rows generating (a probe, not a test)
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        try:
            child.wait(120)
            result = f"exited {child.returncode} after {time.monotonic() - started:.1f} s"
        except subprocess.TimeoutExpired:
            child.kill()
            result = "still running 120 s after SIGINT"
    finally:
        for hog in hogs:
            hog.kill()
    return [("`palaver batch`, Ctrl-C beside 4 busy loops", result)]


PROBES = {
    "rows": probe_rows,
    "switches": probe_switches,
    "grammars": probe_grammars,
    "templates": probe_templates,
    "metadata": probe_metadata,
    "protocol": probe_protocol,
    "ctrl-c": probe_ctrl_c,
}


def main() -> None:
    run_probes(PROBES, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
