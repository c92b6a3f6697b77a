"""palaver batch: a preset over every row of a file, in order, and resumable (Ctrl-C: test_jobs_interrupted.py)."""

import json

from commands import palaver, read_csv, write_csv


def test_batch_writes_every_row_with_its_reply_in_order(cli_env, tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(12)] + [{"id": "12", "text": ""}])
    # Sampled: greedy, the tiny GGUF model answers blank lines, which a reply strips.
    sampled = {**cli_env, "PALAVER_TEMPERATURE": "1", "PALAVER_SEED": "7", "PALAVER_MAX_NEW_TOKENS": "8"}
    result = palaver("batch", str(source), "-o", str(target), env=sampled)
    assert result.returncode == 0, result.stderr
    rows = read_csv(target)
    assert [row["id"] for row in rows] == [str(n) for n in range(13)]
    assert all(row["reply"] and not row["error"] for row in rows[:12])
    assert rows[12]["error"] == "no text in 'text'" and "1 failed" in result.stdout
    assert "13/13" in result.stderr and "row/s" in result.stderr  # the progress bar, with its rate


def test_batch_resumes_without_redoing_finished_rows(cli_env, gguf_chat_model, tmp_path):
    cli_env = {**cli_env, "PALAVER_MODEL": str(gguf_chat_model)}  # the native step: no transformers to import
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": n, "body": f"line {n}"}) + "\n" for n in range(8)))
    target.write_text("".join(json.dumps({"id": n, "body": f"line {n}", "reply": "kept"}) + "\n" for n in range(3)))
    result = palaver("batch", str(source), "-o", str(target), "--column", "body", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(8))
    assert [row["reply"] for row in rows[:3]] == ["kept"] * 3 and all(row["reply"] != "kept" for row in rows[3:])


def test_a_row_half_written_by_a_killed_run_is_written_again_whole(cli_env, gguf_chat_model, tmp_path):
    cli_env = {**cli_env, "PALAVER_MODEL": str(gguf_chat_model)}  # the native step: no transformers to import
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": f"line {n}"}) + "\n" for n in range(4)))
    target.write_text(json.dumps({"id": 0, "text": "line 0", "reply": "kept"}) + '\n{"id": 1, "text": "li')
    result = palaver("batch", str(source), "-o", str(target), env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2, 3] and rows[0]["reply"] == "kept"


def test_batch_refuses_a_missing_column_clearly(cli_env, tmp_path):
    source = tmp_path / "in.csv"
    write_csv(source, [{"id": "1", "text": "hi"}])
    result = palaver("batch", str(source), "-o", str(tmp_path / "out.csv"), "--column", "body", env=cli_env)
    assert result.returncode == 1 and "no column 'body'" in result.stderr and "Traceback" not in result.stderr


def test_batch_with_a_schema_fills_its_fields_as_columns(cli_env, tmp_path):
    schema = {
        "type": "object",
        "properties": {
            "label": {"enum": ["spam", "ham"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 9},
            "tags": {"type": "array", "items": {"enum": ["urgent"]}, "maxItems": 2},
        },
        "required": ["label", "score", "tags"],
        "additionalProperties": False,
    }
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(6)])
    env = {**cli_env, "PALAVER_MAX_NEW_TOKENS": "64"}
    result = palaver("batch", str(source), "-o", str(target), "--schema", str(tmp_path / "schema.json"), env=env)
    assert result.returncode == 0, result.stderr
    rows = read_csv(target)
    assert list(rows[0]) == ["id", "text", "label", "score", "tags", "reply", "error"]
    for row in rows:
        assert not row["error"] and row["label"] in ("spam", "ham") and 0 <= int(row["score"]) <= 9
        assert json.loads(row["reply"])["label"] == row["label"] and isinstance(json.loads(row["tags"]), list)
    (tmp_path / "bad.json").write_text(json.dumps({"type": "array", "uniqueItems": True}))
    refused = palaver(
        "batch", str(source), "-o", str(tmp_path / "x.csv"), "--schema", str(tmp_path / "bad.json"), env=env
    )
    assert refused.returncode != 0 and "'uniqueItems' at #" in refused.stderr
