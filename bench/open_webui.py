"""Drive Palaver's Ollama API through a real Open WebUI, as its chat page does, and print what was checked.

Usage: make check-open-webui     (installs Open WebUI into .venv-openwebui first: about 3 minutes and 3 GB, once)
       .venv/bin/python -m bench.open_webui [--open-webui PATH] [--builtin-tools]

Palaver serves the embedded SmolLM2 from the Procfile, greedy, with an API key. Open WebUI runs offline on a
temporary DATA_DIR, with Palaver's /ollama as its one Ollama connection (the key in OLLAMA_API_CONFIGS), its
OpenAI connection off and no login. Every check but the last goes through Open WebUI's own HTTP API, so Palaver
sees only what Open WebUI sends. The page's chat runs with Function Calling "legacy": "native", Open WebUI's
default, sends its built-in tools (about 5,700 tokens) with every chat, which --builtin-tools checks instead, with
PALAVER_MAX_CONTEXT_TOKENS=8192 to hold them (2 to 3 minutes of prompt on 2 cores). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.servers import ROOT, procfile_server, reserved_port
from tests.timing import wait_until

OPEN_WEBUI = ROOT / ".venv-openwebui" / "bin" / "open-webui"
QUESTION = "Name a colour."


def palaver_env(cache_dir: str, key: str, builtin_tools: bool) -> dict[str, str]:
    """Return Palaver's settings: the embedded model, greedy, preloaded, behind key."""
    env = {
        "PALAVER_MODEL": "",  # the embedded SmolLM2, under its own name
        "PALAVER_MODELS": "",
        "PALAVER_CACHE_DIR": cache_dir,
        "PALAVER_API_KEYS": key,
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_PRELOAD": "1",
        "HF_HUB_OFFLINE": "1",
    }
    if builtin_tools:
        env["PALAVER_MAX_CONTEXT_TOKENS"] = "8192"
    return env


def open_webui_env(ollama_url: str, key: str, model: str, data_dir: str) -> dict[str, str]:
    """Return Open WebUI's settings: Palaver as its only connection, no login, nothing fetched from the network."""
    return {
        **os.environ,
        "OLLAMA_BASE_URL": ollama_url,
        "OLLAMA_API_CONFIGS": json.dumps({"0": {"key": key}}),  # connection 0's key, sent as a Bearer token
        "ENABLE_OPENAI_API": "False",
        "WEBUI_AUTH": "False",
        "WEBUI_SECRET_KEY": secrets.token_hex(16),  # else it writes .webui_secret_key into its working directory
        "DATA_DIR": data_dir,
        "OFFLINE_MODE": "true",  # no version check, no plugin installs, and HF_HUB_OFFLINE for what it loads
        "HF_HUB_OFFLINE": "1",
        # Without an engine it loads a sentence-transformers model at start-up; "ollama" embeds through Palaver.
        "RAG_EMBEDDING_ENGINE": "ollama",
        "RAG_EMBEDDING_MODEL": model,
    }


@contextmanager
def open_webui(command: Path, env: dict[str, str], workdir: str) -> Iterator[str]:
    """Run `open-webui serve` on a free port and yield its URL once /health answers."""
    with reserved_port() as port, open(Path(workdir) / "open-webui.log", "w+") as log:
        process = subprocess.Popen(
            [str(command), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError("Open WebUI exited:\n" + Path(log.name).read_text(errors="replace")[-4000:])
            try:
                return requests.get(url + "/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(healthy, 300, "Open WebUI answering /health", every=0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def signed_in(url: str) -> requests.Session:
    """Sign in as the page does with WEBUI_AUTH off (the admin, no password); return a session with its token."""
    answer = requests.post(url + "/api/v1/auths/signin", json={"email": "", "password": ""}, timeout=30)
    answer.raise_for_status()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {answer.json()['token']}"
    return session


class Checks:
    """Run named checks against one Open WebUI, each to a row of the table; a failure becomes a row too."""

    def __init__(self, session: requests.Session, url: str, model: str, palaver_url: str, key: str):
        self.session, self.url, self.model = session, url, model
        self.palaver_url, self.key = palaver_url, key
        self.rows: list[tuple[str, bool, str, float]] = []

    def run(self, name: str, check: Callable[[Checks], str]) -> None:
        """Run check and add its row: what it found, or why it failed."""
        started = time.monotonic()
        try:
            self.rows.append((name, True, check(self), time.monotonic() - started))
        except Exception as failure:  # a failure is its row; the next check runs
            self.rows.append((name, False, f"{type(failure).__name__}: {failure}", time.monotonic() - started))

    def get(self, path: str) -> dict:
        """GET path from Open WebUI as the signed-in user; return its JSON, which must come with a 200."""
        answer = self.session.get(self.url + path, timeout=60)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:300]}"
        return answer.json()

    def post(self, path: str, body: dict, stream: bool = False) -> requests.Response:
        """POST body to path as the signed-in user; return the answer, which must be a 200."""
        answer = self.session.post(self.url + path, json=body, stream=stream, timeout=300)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:300]}"
        return answer

    def print_table(self) -> None:
        """Print one line per check: its name, ok or FAIL, its seconds and what it found."""
        width = max(len(name) for name, *_ in self.rows)
        for name, passed, detail, seconds in self.rows:
            print(f"{name:<{width}}  {'ok  ' if passed else 'FAIL'}  {seconds:5.1f}s  {detail[:150]}")


def listed_models(checks: Checks) -> str:
    """Check that /api/models, the page's model picker, lists Palaver's model as an Ollama one."""
    models = {model["id"]: model for model in checks.get("/api/models")["data"]}
    assert checks.model in models, f"{checks.model} not in {sorted(models)}"
    assert models[checks.model]["owned_by"] == "ollama", models[checks.model]
    return f"{sorted(models)}, owned_by ollama"


def proxied_tags(checks: Checks) -> str:
    """Check that /ollama/api/tags through Open WebUI's proxy carries Palaver's tag with its details."""
    tags = {tag["name"]: tag for tag in checks.get("/ollama/api/tags")["models"]}
    details = tags[checks.model]["details"]
    assert details["format"] == "gguf", details
    return f"{checks.model}: {details['family']}, {details['parameter_size']}, {details['quantization_level']}"


def proxied_version(checks: Checks) -> str:
    """Check that /ollama/api/version through the proxy is Palaver's."""
    version = checks.get("/ollama/api/version")["version"]
    assert version == requests.get(checks.palaver_url + "/ollama/api/version", timeout=30).json()["version"], version
    return f"version {version}"


def verified_connection(checks: Checks) -> str:
    """Check that the admin page's "Verify connection" (POST /ollama/verify) reaches Palaver."""
    base_urls = checks.get("/ollama/config")["OLLAMA_BASE_URLS"]
    answer = checks.post("/ollama/verify", {"url": base_urls[0], "key": checks.key}).json()
    return f"{base_urls[0]} answers version {answer['version']}"


def chat_completion(checks: Checks) -> str:
    """Check /api/chat/completions, not streamed: Open WebUI calls /ollama/api/chat and answers in OpenAI's shape."""
    body = {"model": checks.model, "stream": False, "messages": [{"role": "user", "content": QUESTION}]}
    choice = checks.post("/api/chat/completions", {**body, "params": {"max_tokens": 8}}).json()["choices"][0]
    assert choice["message"]["content"].strip(), choice
    assert choice["finish_reason"] in ("stop", "length"), choice
    return f"{choice['finish_reason']}: {choice['message']['content']!r}"


def streamed_chat_completion(checks: Checks) -> str:
    """Check /api/chat/completions, streamed: server-sent chunks of text, a finish reason with usage, then [DONE]."""
    body = {"model": checks.model, "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    lines = checks.post("/api/chat/completions", {**body, "params": {"max_tokens": 8}}, stream=True).iter_lines()
    events = [line.decode().removeprefix("data: ") for line in lines if line.startswith(b"data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    last = chunks[-1]
    assert text.strip() and last["choices"][0]["finish_reason"] in ("stop", "length"), chunks[-2:]
    return f"{len(chunks)} chunks, {last['usage']['completion_tokens']} tokens: {text!r}"


def proxied_chat(checks: Checks) -> str:
    """Check /ollama/api/chat through the proxy, in Ollama's shape both ways, not streamed."""
    body = {"model": checks.model, "stream": False, "messages": [{"role": "user", "content": QUESTION}]}
    reply = checks.post("/ollama/api/chat", {**body, "options": {"num_predict": 8}}).json()
    assert reply["done"] and reply["message"]["content"].strip(), reply
    return f"{reply['done_reason']}, eval_count {reply['eval_count']}: {reply['message']['content']!r}"


def proxied_chat_stream(checks: Checks) -> str:
    """Check /ollama/api/chat through the proxy, streamed: newline-delimited JSON ending in done."""
    body = {"model": checks.model, "messages": [{"role": "user", "content": QUESTION}], "options": {"num_predict": 8}}
    parts = [json.loads(line) for line in checks.post("/ollama/api/chat", body, stream=True).iter_lines() if line]
    text = "".join(part["message"]["content"] for part in parts)
    assert parts[-1]["done"] and text.strip(), parts[-2:]
    return f"{len(parts)} lines, {parts[-1]['done_reason']}: {text!r}"


def proxied_show_and_ps(checks: Checks) -> str:
    """Check /ollama/api/show (the model editor's details) and /ollama/api/ps through the proxy."""
    shown = checks.post("/ollama/api/show", {"model": checks.model}).json()
    assert "completion" in shown["capabilities"], shown["capabilities"]
    running = [model["name"] for model in checks.get("/ollama/api/ps")["models"]]
    assert checks.model in running, running
    return f"capabilities {shown['capabilities']}, loaded {running}"


def proxied_embed(checks: Checks) -> str:
    """Check /ollama/api/embed through the proxy, which Open WebUI's documents use with RAG_EMBEDDING_ENGINE=ollama."""
    vectors = checks.post("/ollama/api/embed", {"model": checks.model, "input": [QUESTION]}).json()["embeddings"]
    assert len(vectors) == 1 and len(vectors[0]) > 1, vectors
    return f"1 vector of {len(vectors[0])}"


def page_chat(checks: Checks, function_calling: str) -> str:
    """Check the page's chat: a saved chat, its reply made by a background task and stored, and a title made."""
    user_id, reply_id = str(uuid.uuid4()), str(uuid.uuid4())
    user = {"id": user_id, "parentId": None, "childrenIds": [reply_id], "role": "user", "content": QUESTION}
    reply = {"id": reply_id, "parentId": user_id, "childrenIds": [], "role": "assistant", "content": ""}
    history = {"messages": {user_id: user, reply_id: {**reply, "model": checks.model}}, "currentId": reply_id}
    chat = {"title": "New Chat", "models": [checks.model], "history": history, "messages": [user, reply]}
    chat_id = checks.post("/api/v1/chats/new", {"chat": chat}).json()["id"]
    started = checks.post("/api/chat/completions", page_request(checks.model, chat_id, reply_id, function_calling))
    assert started.json()["task_ids"], started.text

    def finished() -> dict | None:
        stored = checks.get(f"/api/v1/chats/{chat_id}")
        message = stored["chat"]["history"]["messages"][reply_id]
        return stored if message.get("done") and stored["title"] != "New Chat" else None

    stored = wait_until(finished, 600, "the reply stored and the chat titled", every=0.5)
    message = stored["chat"]["history"]["messages"][reply_id]
    assert not message.get("error") and message["content"].strip(), message
    return f"reply {message['content'][:60]!r}, title {stored['title'][:40]!r}"


def page_request(model: str, chat_id: str, reply_id: str, function_calling: str) -> dict:
    """Return the body the page posts to /api/chat/completions for a saved chat's next reply."""
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": QUESTION}],
        "params": {"function_calling": function_calling},
        "chat_id": chat_id,
        "id": reply_id,
        "session_id": uuid.uuid4().hex,  # the page's socket; none is connected, and the reply is stored anyway
        "features": {},
        "variables": {},
        "model_item": {"id": model},
        "background_tasks": {"title_generation": True, "tags_generation": False, "follow_up_generation": False},
    }


def key_required(checks: Checks) -> str:
    """Check that Palaver, asked directly, refuses /ollama/api/tags without the key: the answers above carried it."""
    answer = requests.get(checks.palaver_url + "/ollama/api/tags", timeout=30)
    assert answer.status_code == 401, f"{answer.status_code} {answer.text[:200]}"
    return "401 without the key, so Open WebUI sent OLLAMA_API_CONFIGS' key"


CHECKS: list[tuple[str, Callable[[Checks], str]]] = [
    ("models listed", listed_models),
    ("tags (proxy)", proxied_tags),
    ("version (proxy)", proxied_version),
    ("verify connection", verified_connection),
    ("chat", chat_completion),
    ("chat, streamed", streamed_chat_completion),
    ("chat (proxy)", proxied_chat),
    ("chat (proxy), streamed", proxied_chat_stream),
    ("show and ps (proxy)", proxied_show_and_ps),
    ("embed (proxy)", proxied_embed),
]


def main() -> int:
    """Start Palaver, then Open WebUI on it, run every check and print the table; return 1 if one failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open-webui", type=Path, default=OPEN_WEBUI, help="the open-webui command to run")
    parser.add_argument("--builtin-tools", action="store_true", help="page chat with native function calling")
    args = parser.parse_args()
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="palaver-open-webui-") as workdir:
        started = time.monotonic()
        with procfile_server(palaver_env(workdir, key, args.builtin_tools), wait_for="/readyz", timeout=120) as server:
            tags = requests.get(server.url + "/ollama/api/tags", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            model = tags.json()["models"][0]["name"]
            env = open_webui_env(server.url + "/ollama", key, model, workdir)
            with open_webui(args.open_webui, env, workdir) as url:
                version = requests.get(url + "/api/config", timeout=30).json()["version"]
                print(f"Palaver and Open WebUI {version} up in {time.monotonic() - started:.0f}s; serving {model}")
                checks = Checks(signed_in(url), url, model, server.url, key)
                for name, check in CHECKS:
                    checks.run(name, check)
                calling = "native" if args.builtin_tools else "legacy"
                checks.run(f"page chat ({calling} tools)", lambda checks: page_chat(checks, calling))
                checks.run("key required", key_required)
    checks.print_table()
    return 0 if all(passed for _, passed, *_ in checks.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
