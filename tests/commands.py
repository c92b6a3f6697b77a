"""Running the `palaver` command in tests: to completion, or watched while it runs; and the CSV files it reads."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


class Watched:
    """A running command whose stderr lines are read as they come, so a test can wait for one."""

    def __init__(self, *args, env):
        self.process = subprocess.Popen([str(PALAVER), *args], env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(text in line for line in self.lines), self.lines

    def interrupt(self) -> float:
        """Press Ctrl-C; return how long the command took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self.reader.join(10)
        return time.monotonic() - started
