"""Stored turns' files: the temporary names writers use, and what a killed writer left behind."""

import os
import subprocess
import sys
import time

from palaver.engine.native.turn_files import partial_name, remove_abandoned_partials, writer_pid

TURN = "0123456789abcdef0123456789abcdef.kv"


def test_a_partial_name_names_its_writer():
    assert writer_pid(partial_name(TURN)) == os.getpid()
    assert writer_pid(TURN) is None and writer_pid(".notes") is None and writer_pid(f".{TURN}.x.1") is None


def test_partials_of_writers_that_are_gone_are_removed_in_every_models_directory(tmp_path):
    """A worker killed mid-write leaves a partial file that no budget counts: it goes, in every model's directory,
    once a minute old; a living writer's, a recent one's (perhaps another namespace's) and other files stay."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getpid()
    for model in ("fp_a", "fp_old"):
        (tmp_path / model).mkdir()
        (tmp_path / model / f".{TURN}.{dead}.140001").write_bytes(b"half a turn")
    (tmp_path / "fp_a" / f".{TURN}.{alive}.140002").write_bytes(b"being written")
    (tmp_path / "fp_a" / f".{TURN}.{10**30}.1").write_bytes(b"no process has this number")
    (tmp_path / "fp_a" / ".notes").write_bytes(b"not ours")
    (tmp_path / "a file beside the directories").write_bytes(b"")
    for path in tmp_path.rglob(".*"):
        os.utime(path, (time.time() - 120, time.time() - 120))  # untouched for two minutes
    (tmp_path / "fp_b").mkdir()
    (tmp_path / "fp_b" / f".{TURN}.{dead}.140003").write_bytes(b"written a moment ago, maybe in another namespace")
    remove_abandoned_partials(tmp_path)
    left = sorted(path.name for path in tmp_path.rglob(".*"))
    assert left == sorted([".notes", f".{TURN}.{alive}.140002", f".{TURN}.{dead}.140003"])


def test_a_directory_that_cannot_be_read_is_logged_not_raised(tmp_path, caplog):
    remove_abandoned_partials(tmp_path / "gone")
    assert "partial stored turns not cleaned" in caplog.text
