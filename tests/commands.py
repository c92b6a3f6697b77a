"""Running the `palaver` command in tests: to completion, or watched while it runs; and the CSV files it reads."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from timing import budget, wait_until

PALAVER = Path(sys.executable).parent / "palaver"  # the console script that `pip install -e .` made


def palaver(*args, env, stdin=None, timeout=120):
    return subprocess.run([str(PALAVER), *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def default_ctrl_c() -> None:
    """Give the command Ctrl-C's default handling, however the test run was started."""
    # A test run started as a background job (`make test &` in a script) ignores SIGINT, a child inherits that,
    # and Python then never raises KeyboardInterrupt: the command would never see the Ctrl-C a test sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Watched:
    """A running command whose stderr lines are read as they come, so a test can wait for one."""

    def __init__(self, *args, env):
        self.process = subprocess.Popen(
            [str(PALAVER), *args], env=env, stderr=subprocess.PIPE, text=True, preexec_fn=default_ctrl_c
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        wait_until(lambda: any(text in line for line in self.lines), timeout, f"{text!r} on stderr: {self.lines}")

    def interrupt(self, limit: float = 20) -> float:
        """Press Ctrl-C and wait for the command to exit; return how long it took; fail past budget(limit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=budget(limit))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running {budget(limit):g}s after Ctrl-C: {self.lines[-5:]}") from None
        finally:
            self.reader.join(10)
        return time.monotonic() - started
