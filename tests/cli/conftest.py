"""The command line's fixtures: a command's environment on the tiny chat model, a busy machine, a stuck upstream."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def cli_env(gguf_chat_model, tmp_path):
    """The environment of a `palaver` command on the tiny chat model as GGUF (native, no torch): greedy, 3 tokens."""
    return {
        **os.environ,
        "PALAVER_MODEL": str(gguf_chat_model),
        "PALAVER_CACHE_DIR": str(tmp_path / "cache"),
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_MAX_NEW_TOKENS": "3",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def busy_machine():
    """Keep every core busy twice over (four busy loops at least), as builds and servers beside CI would."""
    count = max(4, 2 * (os.cpu_count() or 2))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()


class StuckUpstream(ThreadingHTTPServer):
    """An OpenAI-style server that lists one model and then never answers a completion."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), StuckHandler)
        self.asked = threading.Event()  # set once a completion has been asked for
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"


class StuckHandler(BaseHTTPRequestHandler):
    server: StuckUpstream

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "stuck", "object": "model", "created": 0}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.server.asked.set()
        self.server.released.wait(600)  # no headers, no reply: the client's read waits for its own timeout

    def log_message(self, *args):
        pass


@pytest.fixture
def stuck_upstream():
    """Serve an upstream that hangs on every completion, for the test's length."""
    server = StuckUpstream()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()
