"""Start Palaver as the Procfile says, on a port of its own: for tests, benchmarks and screenshots."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import requests

from palaver.cli.main import procfile_command

try:  # pytest puts tests/ on the path; the benchmarks import this module as tests.servers
    from timing import wait_until
    from warm_python import WarmProcess, WarmPython, can_fork
except ModuleNotFoundError:
    from tests.timing import wait_until
    from tests.warm_python import WarmProcess, WarmPython, can_fork

ROOT = Path(__file__).resolve().parent.parent


class Server(NamedTuple):
    url: str
    pid: int  # gunicorn's master process; the worker is its child
    log_path: str = ""  # everything the server printed, logs and tracebacks included

    def log(self) -> str:
        """Return what the server has printed so far."""
        return Path(self.log_path).read_text(errors="replace")


class FromAddress(requests.adapters.HTTPAdapter):
    """Send a session's requests from one local address (127.0.0.0/8 is all loopback): the server sees a client."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(pool_maxsize=64)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_at(address: str) -> requests.Session:
    """Return a session whose requests come from address, as another client's would."""
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


LISTENING = re.compile(r"Listening at: http://[^\s]+:(\d+)")  # gunicorn's line once it has bound its port


@contextmanager
def reserved_port() -> Iterator[int]:
    """Hold a free port bound but not listening, for a server started later to bind with SO_REUSEADDR; yield it."""
    # A port found free and let go could be taken by another process (or a client's socket) before the server
    # binds it. gunicorn and PostgreSQL set SO_REUSEADDR, which lets them bind beside a socket that is not listening.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))  # never listening: a client connecting before the server starts is refused
        yield holder.getsockname()[1]


STOPPING: list[subprocess.Popen | WarmProcess] = []  # servers told to stop, which nothing waited for
# Set by the test session: the Procfile's servers are forked from a Python that has imported their modules already.
# The benchmarks leave it unset, so what they measure starts as a PaaS would start it.
WARM: WarmPython | None = None


def reap_stopping() -> None:
    """Wait for the servers told to stop without waiting; kill any that outlive gunicorn's graceful timeout."""
    while STOPPING:
        process = STOPPING.pop()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def procfile_server(
    env: dict[str, str],
    wait_for: str = "/healthz",
    timeout: float = 60,
    command: str | None = None,
    port: int | None = None,
    wait_for_exit: bool = True,
    fresh: bool = False,
) -> Iterator[Server]:
    """Run the Procfile's web command (or command) with env added, and yield it once wait_for answers 200."""
    # Without wait_for_exit, the server is told to stop and the test goes on while it does (the session reaps it):
    # for a fixture's server, whose stop nothing after it waits for.
    # With fresh, or a command of its own, the server is exec'd by a shell as a PaaS runs it; otherwise, in the test
    # session, the Procfile's gunicorn line is forked from the warm Python (tests/warm_python.py).
    # Without a port, gunicorn binds port 0 and the test reads the port the system gave it from gunicorn's log:
    # a port found free, let go and passed on could be taken by another process in between.
    full_env = {
        **os.environ,
        **env,
        "PORT": str(port or 0),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    # Output goes to a file: a pipe nobody reads would fill up and block the server mid-test.
    with tempfile.NamedTemporaryFile(mode="w+", prefix="palaver-server-", suffix=".log") as output:
        process: subprocess.Popen | WarmProcess
        if command is None and not fresh and WARM is not None and can_fork(procfile_command()):
            process = WARM.spawn(procfile_command(), full_env, ROOT, output.name)
        else:
            process = subprocess.Popen(
                ["sh", "-c", "exec " + (command or procfile_command())],
                cwd=ROOT,
                env=full_env,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )
        found: list[str] = []  # the server's URL, once its log says where it listens

        def answers() -> bool:
            log = Path(output.name).read_text(errors="replace")
            if process.poll() is not None:
                raise RuntimeError("the server exited:\n" + log)
            if not found:
                listening = LISTENING.search(log)
                if listening is None:
                    return False
                found.append(f"http://127.0.0.1:{listening.group(1)}")
            try:
                return requests.get(found[0] + wait_for, timeout=2).status_code == 200
            except requests.RequestException:  # too busy loading to answer yet
                return False

        try:
            try:
                wait_until(answers, timeout, f"the server answering {wait_for}", every=0.1)
            except AssertionError as late:  # say why: a worker that failed to load, or a machine that was too busy
                log = Path(output.name).read_text(errors="replace")
                raise AssertionError(f"{late}; the end of its log:\n{log[-4000:]}") from None
            yield Server(found[0], process.pid, output.name)
        finally:
            process.terminate()
            STOPPING.append(process)
            if wait_for_exit:
                reap_stopping()


@contextmanager
def gunicorn_server(env: dict[str, str], wait_for: str = "/healthz", timeout: float = 60):
    """Run the Procfile's web command on a free port and yield its base URL."""
    with procfile_server(env, wait_for, timeout, wait_for_exit=False) as running:
        yield running.url


def capped_command(address_space: int) -> str:
    """Return the Procfile's command under an address-space cap: a server that runs away fails, the machine does not."""
    return f"prlimit --as={address_space} {procfile_command()}"


def server_env(model: Path | str, cache_dir: Path, **settings: str) -> dict[str, str]:
    """Return a test server's environment: greedy, preloaded, with PALAVER_* settings as keyword arguments."""
    return {
        "PALAVER_MODEL": str(model),
        "PALAVER_CACHE_DIR": str(cache_dir),
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_PRELOAD": "1",
        **{f"PALAVER_{name.upper()}": value for name, value in settings.items()},
    }


def start_server(model: Path | str, cache_dir: Path, **settings: str):
    """Start a Procfile server on a model with PALAVER_* settings given as keyword arguments; yield its URL."""
    return gunicorn_server(server_env(model, cache_dir, **settings), wait_for="/readyz", timeout=120)


def engine_counts(base_url: str) -> dict:
    """Read the engine's request and token counters from /readyz."""
    return requests.get(base_url + "/readyz", timeout=10).json()["requests"]


def wait_for_cancelled(base_url: str, before: dict, timeout: float = 15) -> dict:
    """Wait until the engine has finished one more cancelled request; return the new counters."""

    def cancelled() -> dict | None:
        counts = engine_counts(base_url)
        return counts if counts.get("cancelled", 0) > before.get("cancelled", 0) else None

    return wait_until(cancelled, timeout, "one more request cancelled")
