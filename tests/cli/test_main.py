"""The `palaver` command: its usage, serve, and models; chat and batch have tests of their own."""

import re
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


@pytest.mark.parametrize("engine, path", [("auto", "native"), ("transformers", "transformers")])
def test_models_tells_the_truth_about_a_gguf_file(cli_env, k_quant_gguf_model, engine, path):
    env = {**cli_env, "PALAVER_MODEL": str(k_quant_gguf_model), "PALAVER_ENGINE": engine}
    result = palaver("models", env=env)
    assert result.returncode == 0, result.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert rows["path"] == path and rows["architecture"] == "llama"
    assert "2 Q4_K" in rows["tensors"] and "2 BF16" in rows["tensors"] and "(100% as stored)" in rows["served"]
    assert ("not native because" in result.stdout) == (engine == "transformers")
