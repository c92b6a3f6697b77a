"""palaver batch and Ctrl-C: it stops at once, whatever it is doing, keeping only whole rows, in order."""

import json
import signal

import pytest
from commands import Watched, read_csv, write_csv
from timing import wait_until


@pytest.mark.parametrize("moment", ["loading", "running"])
def test_ctrl_c_stops_a_batch_at_once_whatever_it_is_doing(cli_env, gguf_chat_model, tmp_path, busy_machine, moment):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = 20000  # minutes of work on a busy machine: a run that went on after Ctrl-C would show
    write_csv(source, [{"id": str(n), "text": f"message number {n}"} for n in range(rows)])
    # Started as `make test &` in a script starts it: with SIGINT ignored, which a child would inherit.
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # The native step loads in a second: the busy loops run only as long as the test needs them.
        env = {**cli_env, "PALAVER_MODEL": str(gguf_chat_model), "PALAVER_MAX_NEW_TOKENS": "64"}
        run = Watched("batch", str(source), "-o", str(target), env=env)
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
    # test_jobs.py's test_batch_resumes_without_redoing_finished_rows shows that a run started again picks up here.


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
