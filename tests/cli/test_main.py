"""The `palaver` command: its usage, serve, and models; chat and batch have tests of their own."""

import subprocess

import pytest
import requests
from commands import PALAVER, palaver
from servers import procfile_server, server_env


@pytest.mark.server
def test_palaver_serve_serves_the_page_and_the_api(chat_model, tmp_path):
    env = server_env(chat_model, tmp_path, max_new_tokens="2")
    with procfile_server(env, wait_for="/readyz", timeout=120, command=f"{PALAVER} serve") as running:
        assert requests.get(running.url + "/", timeout=10).status_code == 200
        assert requests.post(running.url + "/api/chat", json={"message": "hi"}, timeout=60).status_code == 200


def test_palaver_without_a_command_prints_its_usage():
    result = subprocess.run([str(PALAVER)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Usage: palaver" in result.stdout + result.stderr
    for command in ("serve", "chat", "batch", "models", "db"):
        assert command in result.stdout + result.stderr


def test_models_says_what_palaver_model_resolves_to(cli_env):
    result = palaver("models", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "chat-llama" in result.stdout and "context tokens" in result.stdout and "512" in result.stdout
