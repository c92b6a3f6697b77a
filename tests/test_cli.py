"""The `palaver` command: `palaver serve` serves the page, as the Procfile does."""

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from servers import procfile_server, server_env

PALAVER = Path(sys.executable).parent / "palaver"  # the console script that `pip install -e .` made


@pytest.mark.server
def test_palaver_serve_serves_the_page_and_the_api(chat_model, tmp_path):
    env = server_env(chat_model, tmp_path, max_new_tokens="2")
    with procfile_server(env, wait_for="/readyz", timeout=120, command=f"{PALAVER} serve") as running:
        assert requests.get(running.url + "/", timeout=10).status_code == 200
        assert requests.post(running.url + "/api/chat", json={"message": "hi"}, timeout=60).status_code == 200


def test_palaver_without_a_command_prints_its_usage():
    result = subprocess.run([str(PALAVER)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "usage: palaver" in result.stderr
