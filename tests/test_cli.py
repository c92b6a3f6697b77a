"""The `palaver` command: serve, models, chat (here and against a server) and resumable batch runs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
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
    assert result.returncode == 2 and "Usage: palaver" in result.stdout + result.stderr
    for command in ("serve", "chat", "batch", "models", "db"):
        assert command in result.stdout + result.stderr


def palaver(*args, env, stdin=None, timeout=120):
    return subprocess.run([str(PALAVER), *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


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


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_models_says_what_palaver_model_resolves_to(cli_env):
    result = palaver("models", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "chat-llama" in result.stdout and "context tokens" in result.stdout and "512" in result.stdout


def test_batch_writes_every_row_with_its_reply_in_order(cli_env, tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(12)] + [{"id": "12", "text": ""}])
    result = palaver("batch", str(source), "-o", str(target), env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = read_csv(target)
    assert [row["id"] for row in rows] == [str(n) for n in range(13)]
    assert all(row["reply"] and not row["error"] for row in rows[:12])
    assert rows[12]["error"] == "no text in 'text'" and "1 failed" in result.stdout
    assert "13/13" in result.stderr and "row/s" in result.stderr  # the progress bar, with its rate


def test_batch_resumes_without_redoing_finished_rows(cli_env, tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": n, "body": f"line {n}"}) + "\n" for n in range(8)))
    target.write_text("".join(json.dumps({"id": n, "body": f"line {n}", "reply": "kept"}) + "\n" for n in range(3)))
    result = palaver("batch", str(source), "-o", str(target), "--column", "body", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(8))
    assert [row["reply"] for row in rows[:3]] == ["kept"] * 3 and all(row["reply"] != "kept" for row in rows[3:])


def test_a_row_half_written_by_a_killed_run_is_written_again_whole(cli_env, tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": f"line {n}"}) + "\n" for n in range(4)))
    target.write_text(json.dumps({"id": 0, "text": "line 0", "reply": "kept"}) + '\n{"id": 1, "text": "li')
    result = palaver("batch", str(source), "-o", str(target), env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2, 3] and rows[0]["reply"] == "kept"


def test_an_interrupted_batch_keeps_its_rows_and_resumes(cli_env, tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(300)])
    env = {**cli_env, "PALAVER_MAX_NEW_TOKENS": "16"}
    process = subprocess.Popen(
        [str(PALAVER), "batch", str(source), "-o", str(target), "--concurrency", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not target.exists() or len(read_csv(target)) < 5):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130 and "resume" in errors
    kept = read_csv(target)
    assert 5 <= len(kept) < 300, "interrupted mid-run"
    result = palaver("batch", str(source), "-o", str(target), env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [row["id"] for row in read_csv(target)] == [str(n) for n in range(300)]
    assert read_csv(target)[: len(kept)] == kept


def test_batch_refuses_a_missing_column_clearly(cli_env, tmp_path):
    source = tmp_path / "in.csv"
    write_csv(source, [{"id": "1", "text": "hi"}])
    result = palaver("batch", str(source), "-o", str(tmp_path / "out.csv"), "--column", "body", env=cli_env)
    assert result.returncode == 1 and "no column 'body'" in result.stderr and "Traceback" not in result.stderr


def test_chat_answers_each_message_in_turn(cli_env):
    result = palaver("chat", env=cli_env, stdin="hello there\nand again\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("palaver> ") == 2 and "Traceback" not in result.stderr


def test_chat_with_a_running_server(server, cli_env):
    result = palaver("chat", "--url", server, env=cli_env, stdin="hello\n")
    assert result.returncode == 0, result.stderr
    reply = result.stdout.split("palaver> ", 1)[1].strip()
    assert reply and "error" not in reply
