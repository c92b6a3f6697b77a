"""A Python that has imported gunicorn and the web app's modules once, and forks a Procfile server from there.

Each test server otherwise spends about 1.5 s of CPU importing Flask, SQLAlchemy, Alembic, pydantic and the package
before it answers, and the suite starts a hundred of them. The fork runs the Procfile's own gunicorn command line
in the server's environment: the config file and `app` are imported after the fork, so they read that environment,
and the forked process is the gunicorn master, with its worker as its child, as after an exec.

Run as a script, this is the forking process: it reads one JSON line a server from stdin, answers with the server's
pid, and reports each server's exit status; `WarmPython` is the tests' end of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

# What a worker imports before the app is created; the gunicorn config and `app` read the environment, so they wait.
WARM_MODULES = (
    "gunicorn.app.wsgiapp",
    "gunicorn.arbiter",
    "gunicorn.workers.gthread",
    "palaver.web.http_worker",
    "palaver.web.app",
)


def can_fork(command: str) -> bool:
    """Tell whether command is a plain gunicorn command line, which a fork runs as the shell would exec it."""
    argv = shlex.split(command)
    return bool(argv) and argv[0] == "gunicorn" and not any(set(word) & set("$`;&|<>*?~") for word in argv)


class WarmProcess:
    """A server forked by the warm Python, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, pid: int, exited: threading.Event, statuses: dict[int, int]):
        self.pid = pid
        self._exited = exited
        self._statuses = statuses

    @property
    def returncode(self) -> int | None:
        return self._statuses.get(self.pid) if self._exited.is_set() else None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"server {self.pid}", timeout or 0)
        return self._statuses[self.pid]

    def send_signal(self, number: int) -> None:
        if not self._exited.is_set():  # once reaped, the pid may be another process's
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmPython:
    """The tests' end of the forking process: started on first use, it forks servers until this process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._spawned: dict[int, int] = {}  # request number -> pid
        self._exits: dict[int, threading.Event] = {}
        self._statuses: dict[int, int] = {}
        self._answered = threading.Condition(self._lock)
        self._requests = 0

    def spawn(self, command: str, env: dict[str, str], cwd: Path, log_path: str) -> WarmProcess:
        """Fork a server running command (a gunicorn command line) in env and cwd, its output going to log_path."""
        argv = shlex.split(command)
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            self._requests += 1
            number = self._requests
            line = json.dumps({"number": number, "argv": argv, "env": env, "cwd": str(cwd), "log": log_path})
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
            if not self._answered.wait_for(lambda: number in self._spawned, timeout=60):
                raise RuntimeError("the warm Python did not fork a server within 60 s")
            pid = self._spawned.pop(number)
            return WarmProcess(pid, self._exits.setdefault(pid, threading.Event()), self._statuses)

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        threading.Thread(target=self._read, args=(self._process,), name="warm-python", daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            with self._lock:
                if "number" in message:
                    self._spawned[message["number"]] = message["pid"]
                    self._answered.notify_all()
                else:
                    self._statuses[message["pid"]] = message["status"]
                    self._exits.setdefault(message["pid"], threading.Event()).set()
        with self._lock:  # the forking process died: nobody will report its servers' ends, so none may be waited for
            for pid, exited in self._exits.items():
                if not exited.is_set():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    self._statuses[pid] = -signal.SIGKILL
                    exited.set()


# The forking process.


def serve_forks() -> None:
    """Import the warm modules, then fork a server for each request on stdin until it closes."""
    for name in WARM_MODULES:
        __import__(name)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # nothing written by mistake can garble the answers
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)
    children: set[int] = set()
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            reap(children, answers, block=False)
        if 0 in ready:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = fork_server(request, keep={answers.fileno(), wake_read, wake_write, null})
                children.add(pid)
                answers.write(json.dumps({"number": request["number"], "pid": pid}) + "\n")
    for pid in children:  # the tests' process has gone: so do its servers
        os.kill(pid, signal.SIGTERM)
    while children:
        reap(children, answers, block=True)


def reap(children: set[int], answers, block: bool) -> None:
    """Report each child that has exited, with its status as subprocess.Popen gives it."""
    while children:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        with contextlib.suppress(OSError):  # at the end, the tests' process may have gone already
            answers.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}) + "\n")
        if block:
            return


def fork_server(request: dict, keep: set[int]) -> int:
    """Fork a gunicorn master for request; return its pid in the parent (the child never returns)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        log, nothing = os.open(request["log"], os.O_WRONLY | os.O_APPEND), os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in keep | {log, nothing}:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        script = Path(sys.executable).parent / argv[0]
        sys.argv = [str(script), *argv[1:]]
        sys.path[0] = str(script.parent)  # as when the gunicorn script is run
        from gunicorn.app.wsgiapp import run

        run()
        code = 0
    except SystemExit as leaving:  # the master, and each worker it forks, leave through here
        code = leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        if isinstance(leaving.code, str):
            print(leaving.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve_forks()
