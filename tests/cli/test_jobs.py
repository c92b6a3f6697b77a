"""palaver batch: a preset over every row of a file, in order, resumable, and stopped at once by Ctrl-C."""

import json
import signal

import pytest
from commands import Watched, palaver, read_csv, write_csv
from timing import wait_until


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


@pytest.mark.parametrize("moment", ["loading", "running"])
def test_ctrl_c_stops_a_batch_at_once_whatever_it_is_doing(cli_env, tmp_path, busy_machine, moment):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = 3000  # minutes of work on a busy machine: a run that went on after Ctrl-C would show
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(rows)])
    # Started as `make test &` in a script starts it: with SIGINT ignored, which a child would inherit.
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = Watched("batch", str(source), "-o", str(target), env={**cli_env, "PALAVER_MAX_NEW_TOKENS": "64"})
    finally:
        signal.signal(signal.SIGINT, ignored)
    run.wait_for("loading the model")
    if moment == "running":  # rows are generating and being written, 32 at a time
        wait_until(lambda: target.exists() and len(read_csv(target)) >= 5, 120, "five rows written")
    seconds = run.interrupt(limit=20)
    assert run.process.returncode == 130 and any("resume" in line for line in run.lines), "".join(run.lines)
    kept = read_csv(target) if target.exists() else []
    assert [row["id"] for row in kept] == [str(n) for n in range(len(kept))] and len(kept) < rows, "written in order"
    print(f"stopped {seconds:.1f}s after Ctrl-C, {len(kept)} rows kept")
    # test_batch_resumes_without_redoing_finished_rows shows that a run started again picks up from here.


def test_ctrl_c_stops_a_batch_whose_rows_are_stuck(cli_env, tmp_path, stuck_upstream):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": f"line {n}"}) + "\n" for n in range(40)))
    target.write_text(json.dumps({"id": 0, "text": "line 0", "reply": "kept"}) + "\n")
    env = {**cli_env, "PALAVER_BACKEND": "openai", "PALAVER_UPSTREAM_URL": stuck_upstream.url}
    run = Watched("batch", str(source), "-o", str(target), env=env)
    assert stuck_upstream.asked.wait(60), run.lines  # every row's thread now waits on a reply that never comes
    run.interrupt(limit=20)  # no thread is joined on the way out: the command exits, and the rows stop with it
    assert run.process.returncode == 130 and any("resume" in line for line in run.lines), run.lines
    assert [json.loads(line)["reply"] for line in target.read_text().splitlines()] == ["kept"]


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
