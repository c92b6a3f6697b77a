"""The C++ tests as one binary built with both sanitizers, compiled in the background from the session's start."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from timing import wait_until

CSRC = Path(__file__).resolve().parent.parent / "csrc"
# GCC's undefined leaves out float-cast-overflow (a NaN or an infinity converted to an integer): named, it is checked.
SANITIZERS = [
    "-fsanitize=address,undefined,float-cast-overflow",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
]
# The shipped build's warnings, as errors. -Og compiles the one unit in a quarter less CPU than -O1 for the same checks,
# and -g1 (line tables) names each frame's line in a report.
BUILD = [
    *("c++", "-std=c++20", "-Og", "-g1", *SANITIZERS, "-Wall", "-Wextra", "-Wpedantic", "-Werror"),
    *("-mavx2", "-mfma", "-mf16c", f"-I{CSRC}", str(CSRC / "tests" / "sanitized.cpp"), "-lpthread"),
]


def start(directory: Path) -> threading.Thread | None:
    """Build the binary into directory unless another test process has claimed it; return our build, if any."""
    try:
        directory.mkdir()  # atomic: of the processes that try, one builds and the others wait for its status
    except FileExistsError:
        return None

    def build() -> None:
        try:
            done = subprocess.run([*BUILD, "-o", str(directory / "sanitized")], capture_output=True, text=True)
            errors, status = done.stderr, done.returncode
        except OSError as exc:  # no compiler: say so now, not after the waiting test's timeout
            errors, status = f"{BUILD[0]}: {exc}", 127
        (directory / "errors.txt").write_text(errors)
        (directory / "status.partial").write_text(str(status))
        (directory / "status.partial").rename(directory / "status")  # whole when it appears

    thread = threading.Thread(target=build, name="sanitized build", daemon=True)
    thread.start()
    return thread


def binary(directory: Path) -> Path:
    """Wait for the build, in this process or another; return the binary, or fail with the compiler's errors."""
    status = directory / "status"
    wait_until(status.exists, 600, "the sanitized build", every=0.2)
    assert status.read_text().strip() == "0", (directory / "errors.txt").read_text()
    return directory / "sanitized"
