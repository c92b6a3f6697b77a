"""A Hugging Face Hub on localhost for tests: repositories of files served as huggingface_hub asks for them.

It answers what huggingface_hub 2.4.0 requests: /api/models/{repo}/revision/{rev} (the commit), the tree listing
with each file's LFS size and SHA-256, and /{repo}/resolve/{rev}/{path} with the X-Repo-Commit, ETag,
X-Linked-Etag and X-Linked-Size headers and byte ranges. It can cut a download short once, send a file's bytes
altered, or hold every download until let go.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub(ThreadingHTTPServer):
    """The Hub's layout over HTTP: repositories, their commits and branches, and what was asked of them."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> path -> bytes
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch or tag -> commit
        self.downloads: Counter[str] = Counter()  # "repo/path" -> GETs of its bytes
        self.ranges: list[str] = []  # every Range header a download sent
        self.listings = 0  # tree listings asked for
        self.cut_once: dict[str, int] = {}  # "repo/path": the next download stops at this byte, the connection cut
        self.altered: set[str] = set()  # "repo/path": sent with one byte changed, its hash as listed
        self.open = threading.Event()  # downloads wait while this is clear
        self.open.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def publish(self, repo: str, files: dict[str, bytes], revision: str = "main", keep: bool = True) -> str:
        """Commit files to repo (beside those of the revision's last commit, if keep) and move revision to it."""
        earlier = self.commits.get(repo, {}).get(self.refs.get(repo, {}).get(revision, ""), {}) if keep else {}
        tree = {**earlier, **files}
        digest = hashlib.sha1(repo.encode())  # noqa: S324 -- a commit id, as git's
        for path in sorted(tree):
            digest.update(path.encode() + hashlib.sha256(tree[path]).digest())
        digest.update(str(sum(len(c) for c in self.commits.values())).encode())  # each commit its own id
        commit = digest.hexdigest()
        self.commits.setdefault(repo, {})[commit] = tree
        self.refs.setdefault(repo, {})[revision] = commit
        return commit

    def commit_of(self, repo: str, revision: str) -> str | None:
        if revision in self.commits.get(repo, {}):
            return revision
        return self.refs.get(repo, {}).get(revision)


class HubHandler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(head=True)

    def do_GET(self):
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo, revision = "/".join(parts[2:4]), parts[5]
            self.api(repo, revision, parts[4])
        elif len(parts) >= 5 and parts[2] == "resolve":
            self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        else:
            self.refuse(404, "RepoNotFound")

    def api(self, repo: str, revision: str, what: str) -> None:
        if repo not in self.server.commits:
            return self.refuse(404, "RepoNotFound")
        commit = self.server.commit_of(repo, revision)
        if commit is None:
            return self.refuse(404, "RevisionNotFound")
        tree = self.server.commits[repo][commit]
        if what == "revision":
            return self.send_json({"id": repo, "sha": commit, "siblings": [{"rfilename": p} for p in sorted(tree)]})
        self.server.listings += 1
        return self.send_json([entry(path, data) for path, data in sorted(tree.items())])

    def resolve(self, repo: str, revision: str, path: str, head: bool) -> None:
        if repo not in self.server.commits:
            return self.refuse(404, "RepoNotFound")
        commit = self.server.commit_of(repo, revision)
        if commit is None:
            return self.refuse(404, "RevisionNotFound")
        data = self.server.commits[repo][commit].get(path)
        if data is None:
            return self.refuse(404, "EntryNotFound", commit)
        key, sha256 = f"{repo}/{path}", hashlib.sha256(data).hexdigest()
        start = 0
        if not head:
            self.server.open.wait(60)
            self.server.downloads[key] += 1
            given = self.headers.get("Range")
            if given:
                self.server.ranges.append(given)
                start = int(given.removeprefix("bytes=").split("-")[0])
            if key in self.server.altered:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return None
        cut = self.server.cut_once.pop(key, None)
        if cut is not None:
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # cut mid-body: the client must resume from what it has
            self.close_connection = True
            return None
        self.wfile.write(data[start:])
        return None

    def send_json(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def refuse(self, status: int, code: str, commit: str | None = None) -> None:
        body = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def entry(path: str, data: bytes) -> dict:
    """Describe a file as the Hub's tree listing does: its git blob id, and its LFS size and SHA-256."""
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 -- git's blob id
    lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return {"type": "file", "oid": blob, "size": len(data), "path": path, "lfs": lfs}


@contextmanager
def fake_hub():
    """Serve a FakeHub for the block's length."""
    hub = FakeHub()
    threading.Thread(target=hub.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield hub
    finally:
        hub.open.set()
        hub.shutdown()
        hub.server_close()


def hub_env(hub: FakeHub, home: Path) -> dict[str, str]:
    """Return the environment that points huggingface_hub (and a `palaver` process) at hub, with its cache in home."""
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}


def use_hub(monkeypatch, hub: FakeHub, home: Path) -> None:
    """Point this process's huggingface_hub at hub: the environment, and the offline flag it read at import."""
    import huggingface_hub.constants

    for name, value in hub_env(hub, home).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # tests/conftest.py turns the suite offline before huggingface_hub is imported, which reads the flag once.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def variant(data: bytes, index: int) -> bytes:
    """Return a GGUF file's bytes made distinct (a hash of its own), still a GGUF file: padding after its data."""
    return data + bytes(32 * (index + 1))
