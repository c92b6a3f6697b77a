"""The command line's fixtures: a command's environment on the tiny chat model, and a machine kept busy."""

import os
import subprocess
import sys

import pytest


@pytest.fixture
def cli_env(chat_model, tmp_path):
    """The environment of a `palaver` command on the tiny chat model: greedy, three-token replies."""
    return {
        **os.environ,
        "PALAVER_MODEL": str(chat_model),
        "PALAVER_CACHE_DIR": str(tmp_path / "cache"),
        "PALAVER_TEMPERATURE": "0",
        "PALAVER_MAX_NEW_TOKENS": "3",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def busy_machine():
    """Keep every core busy, as a developer's build beside CI would."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    yield
    for hog in hogs:
        hog.kill()
        hog.wait()
