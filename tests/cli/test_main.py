"""The `palaver` command: its usage, serve, and models; chat and batch have tests of their own."""

import re
import subprocess

import pytest
import requests
from commands import PALAVER, palaver
from servers import procfile_server, server_env


@pytest.mark.server
def test_palaver_serve_serves_the_page_and_the_api(gguf_chat_model, tmp_path):
    env = server_env(gguf_chat_model, tmp_path, max_new_tokens="2")  # the native step starts in seconds
    with procfile_server(env, wait_for="/readyz", timeout=120, command=f"{PALAVER} serve") as running:
        assert requests.get(running.url + "/", timeout=10).status_code == 200
        assert requests.post(running.url + "/api/chat", json={"message": "hi"}, timeout=60).status_code == 200


def test_palaver_without_a_command_prints_its_usage():
    result = subprocess.run([str(PALAVER)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "Usage: palaver" in result.stdout + result.stderr
    for command in ("serve", "chat", "batch", "models", "db"):
        assert command in result.stdout + result.stderr


def test_models_says_what_palaver_model_resolves_to(cli_env, gguf_chat_model):
    # A GGUF file, described without loading transformers; a transformers model is described in the next tests.
    result = palaver("models", env={**cli_env, "PALAVER_MODEL": str(gguf_chat_model)})
    assert result.returncode == 0, result.stderr
    assert "chat-llama" in result.stdout and "context tokens" in result.stdout and "512" in result.stdout


@pytest.mark.parametrize("engine, path", [("auto", "native"), ("transformers", "transformers")])
def test_models_tells_the_truth_about_a_gguf_file(cli_env, k_quant_gguf_model, engine, path):
    env = {**cli_env, "PALAVER_MODEL": str(k_quant_gguf_model), "PALAVER_ENGINE": engine, "PALAVER_KERNELS": "avx2"}
    result = palaver("models", env=env)
    assert result.returncode == 0, result.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert rows["path"] == path and rows["architecture"] == "llama"
    assert "2 Q4_K" in rows["tensors"] and "2 BF16" in rows["tensors"] and "(100% as stored)" in rows["served"]
    assert ("not native because" in result.stdout) == (engine == "transformers")
    assert rows["kernels"] == "avx2", "the block kernels' family, as PALAVER_KERNELS asks, on either path"


def test_models_describes_each_configured_model_and_model_picks_one(cli_env, gguf_chat_model, k_quant_gguf_model):
    # Two GGUF files, described on the native step: no torch to import in each of the three commands.
    env = {**cli_env, "PALAVER_MODELS": f"chat={gguf_chat_model},wide={k_quant_gguf_model}"}
    every = palaver("models", env=env)
    assert every.returncode == 0, every.stderr
    blocks = every.stdout.strip().split("\n\n")
    assert len(blocks) == 2 and "Q4_0" in blocks[0] and "Q4_K" not in blocks[0] and "Q4_K" in blocks[1]
    assert all("chat-template" in block for block in blocks)
    one = palaver("models", "--model", "wide", env=env)
    assert one.returncode == 0 and "Q4_K" in one.stdout and "Q4_0" not in one.stdout
    wrong = palaver("models", "--model", "gpt-4", env=env)
    assert wrong.returncode == 1 and "serves 'chat', 'wide'" in wrong.stderr and "Traceback" not in wrong.stderr


def test_batch_runs_on_the_model_named(cli_env, chat_model, html_model, tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("id,text\n1,hello\n2,there\n")
    env = {**cli_env, "PALAVER_MODELS": f"chat={chat_model},html={html_model}", "PALAVER_MAX_NEW_TOKENS": "8"}
    result = palaver("batch", str(source), "-o", str(target), "--model", "html", env=env)
    assert result.returncode == 0, result.stderr
    assert target.read_text().count("alert(1)") == 2, "the html model wrote every reply"
