"""Stored turns: a finished turn's KV positions on disk, read back after a restart, never by a changed model."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np

from commons import Settings
from palaver.engine.decoding.prefix_cache import PrefixCache, shared_prefix
from palaver.engine.native import stored_turns
from palaver.engine.native.loading import load_native
from palaver.engine.native.stored_turns import StoredTurns
from palaver.engine.native.turn_files import MAGIC
from palaver.engine.prompting.model_family import Prompt


def stored(root, fingerprint="fp_a", budget=1 << 20):
    return StoredTurns(root, fingerprint, "16x64", budget)


def save(turns, tokens, size=64):
    data = np.frombuffer(bytes(range(256)) * (size // 256 + 1), dtype=np.uint8)[:size].copy()
    assert turns.save(tokens, size, lambda out: np.copyto(out, data))
    assert turns.flush(10)
    return data


def test_a_turn_is_found_by_another_process_by_the_longest_shared_prefix(tmp_path):
    writer = stored(tmp_path)
    data = save(writer, list(range(100, 130)))
    reader = stored(tmp_path)  # as after a restart, or on another worker
    assert reader.lookup([*range(100, 130), 7, 8], 0) == (30, next(iter(reader.turns)), 30)
    assert reader.lookup([*range(100, 120), 5, 6], 0)[0] == 20, "an edited message still shares its start"
    assert reader.lookup([*range(100, 120), 5, 6], 20) is None, "no longer than what memory holds"
    assert reader.lookup([*range(100, 105), 5, 6], 0) is None, "too short a prefix to be worth a read"
    name = reader.lookup([*range(100, 130), 7], 0)[1]
    assert reader.read(name, 30, data.size, data.size).tobytes() == data.tobytes()
    assert reader.read(name, 30, data.size, 16).tobytes() == data.tobytes()[:16], "the pages a shorter prefix needs"
    assert reader.read(name, 30, data.size + 1, 16) is None, "another layout's length is refused"
    writer.close()


def test_a_lookup_finds_the_longest_shared_prefix_among_many_turns_with_one_opening(tmp_path):
    """Many conversations share a template's opening: the turn found shares the most with the prompt, as a scan of
    every stored turn would find."""
    turns = stored(tmp_path, budget=1 << 30)
    rng = np.random.default_rng(5)
    opening = list(range(500, 520))
    conversations = [opening + [int(t) for t in rng.integers(1, 4, size=int(rng.integers(5, 30)))] for _ in range(60)]
    for tokens in conversations:
        save(turns, tokens, 16)
    for _ in range(40):
        prompt = opening + [int(t) for t in rng.integers(1, 4, size=int(rng.integers(0, 30)))] + [9]
        expected = max(shared_prefix(tokens, prompt[:-1]) for tokens in turns.turns.values())
        found = turns.lookup(prompt, 0)
        assert found is not None and found[0] == expected
        assert shared_prefix(turns.turns[found[1]], prompt[:-1]) == expected


def test_a_later_turn_of_a_conversation_replaces_the_earlier_one(tmp_path):
    turns = stored(tmp_path)
    data = save(turns, list(range(50, 70)))
    reader = stored(tmp_path)  # another worker, which finds the earlier turn just before it is replaced
    found = reader.lookup([*range(50, 70), 1], 0)
    save(turns, list(range(50, 90)))
    assert found is not None and reader.read(found[1], found[2], data.size, data.size) is None, "gone: a miss"
    later = reader.lookup([*range(50, 90), 1], 0)
    assert later is not None and later[0] == 40 and reader.read(later[1], 40, data.size, data.size) is not None
    save(turns, [1, *range(50, 69)])  # another conversation
    assert sorted(len(tokens) for tokens in turns.turns.values()) == [20, 40]
    assert len(list((tmp_path / "fp_a").iterdir())) == 2


def test_each_conversation_keeps_its_latest_turn_among_many_that_share_an_opening(tmp_path):
    """Conversations that share a template's opening grow turn by turn, in any order: each keeps its latest turn
    alone, and no other conversation's turn goes (as a scan of every stored turn for prefixes would leave them)."""
    turns = stored(tmp_path, budget=1 << 30)
    rng = np.random.default_rng(11)
    opening = list(range(500, 520))
    conversations = [opening + [int(rng.integers(1, 4))] for _ in range(30)]
    conversations = [c + [n] for n, c in enumerate(conversations)]  # each its own, however alike their starts
    for _ in range(4):
        for n in rng.permutation(len(conversations)):
            conversations[n] = conversations[n] + [int(t) for t in rng.integers(1, 4, size=int(rng.integers(1, 6)))]
            save(turns, conversations[n], 16)
    assert sorted(turns.turns.values()) == sorted(tuple(c) for c in conversations)
    assert len(list((tmp_path / "fp_a").glob("*.kv"))) == len(conversations)


def test_the_budget_keeps_the_most_recently_used_turns_of_every_model(tmp_path):
    first, second = stored(tmp_path, "fp_a", budget=3000), stored(tmp_path, "fp_b", budget=3000)
    save(first, list(range(10, 30)), 1000)
    save(second, list(range(200, 220)), 1000)
    name = first.lookup([*range(10, 30), 1], 0)[1]
    assert first.read(name, 20, 1000, 1000) is not None  # used: now the most recent
    save(second, list(range(300, 320)), 1000)
    assert first.lookup([*range(10, 30), 1], 0) is not None
    assert second.lookup([*range(200, 220), 1], 0) is None, "the least recently used went"
    assert sum(path.stat().st_size for path in tmp_path.rglob("*.kv")) <= 3000


def test_damaged_files_and_another_models_files_are_never_read(tmp_path):
    turns = stored(tmp_path)
    data = save(turns, list(range(10, 40)))
    path = next((tmp_path / "fp_a").glob("*.kv"))
    (tmp_path / "fp_b").mkdir()
    shutil.copy(path, tmp_path / "fp_b" / path.name)  # a file of model a, where model b looks
    other = stored(tmp_path, "fp_b")
    assert other.lookup([*range(10, 40), 1], 0) is None
    reader = stored(tmp_path)
    found = reader.lookup([*range(10, 40), 1], 0)
    path.write_bytes(path.read_bytes()[:-1])  # cut short once listed
    assert found is not None and reader.read(found[1], found[2], data.size, data.size) is None
    assert not path.exists(), "a damaged turn is deleted"
    assert reader.lookup([*range(10, 40), 1], 0) is None
    save(turns, list(range(50, 80)))
    short = next(name for name in (tmp_path / "fp_a").iterdir() if name.suffix == ".kv")
    short.write_bytes(short.read_bytes()[:-1])  # cut short before any reader lists it
    (tmp_path / "fp_a" / "garbage.kv").write_bytes(b"not a stored turn")
    huge = json.dumps({"fingerprint": "fp_a", "layout": "16x64", "tokens": 10**15, "bytes": 0}).encode()
    (tmp_path / "fp_a" / "huge.kv").write_bytes(MAGIC + len(huge).to_bytes(4, "little") + huge + b"\0" * 64)
    late = stored(tmp_path)
    assert late.lookup([*range(50, 80), 1], 0) is None and late.turns == {}
    assert not short.exists() and not (tmp_path / "fp_a" / "huge.kv").exists(), "sizes a file cannot hold: deleted"


def test_a_store_that_opens_removes_what_a_killed_writer_left(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "fp_a").mkdir()
    left = tmp_path / "fp_a" / f".0123456789abcdef0123456789abcdef.kv.{int(gone.stdout)}.1"  # partial_name's form
    left.write_bytes(b"half a turn")
    os.utime(left, (time.time() - 120, time.time() - 120))
    stored(tmp_path).close()
    assert not left.exists()


def test_a_writer_too_far_behind_drops_a_turn_instead_of_holding_the_engine(tmp_path):
    turns = StoredTurns(tmp_path, "fp_a", "16x64", 1 << 30, most_pending=1 << 20)
    exported = []
    assert not turns.save(list(range(10, 30)), (1 << 20) + 1, exported.append), "more than the bound: not exported"
    with turns._index:  # the writer waits here with the first turn's buffer
        assert turns.save(list(range(10, 30)), 1 << 20, exported.append)
        assert not turns.save(list(range(40, 60)), 64, exported.append), "no room until the first is written"
        assert len(exported) == 1
    assert turns.flush(10)
    assert turns.save(list(range(40, 60)), 64, exported.append), "written: room again"
    assert turns.flush(10) and len(exported) == 2


def test_an_idle_writer_gives_its_spare_buffers_back(tmp_path, monkeypatch):
    monkeypatch.setattr(stored_turns, "SPARES_IDLE_SECONDS", 0.01)
    turns = stored(tmp_path)
    save(turns, list(range(10, 30)))
    deadline = time.monotonic() + 30
    while turns._buffers.held_bytes() and time.monotonic() < deadline:
        turns.flush(0.05)
    assert turns._buffers.held_bytes() == 0


def load(path, cache_dir):
    settings = Settings(model=str(path), cache_dir=str(cache_dir), engine="native")
    return load_native(settings, "tiny", str(path))


def reply(family, prompt_ids, counts):
    """Generate six greedy tokens for prompt_ids on a fresh batch; return them and what the prompt reused."""
    params = Settings(temperature=0.0, max_new_tokens=6).generation_defaults()
    row = family.new_row(Prompt(list(prompt_ids), 0), params, threading.Event())
    row.stream.stop_token_ids = set()  # six tokens whatever the tiny model says
    batch = family.start_batch(PrefixCache(4096, counts))
    batch.add(row)
    while batch.rows:
        batch.step()
        batch.remove_done()
    return row.generated


def test_after_a_restart_the_next_turn_reads_the_last_from_disk_and_decodes_the_same_tokens(gguf_chat_model, tmp_path):
    history = [(i * 13) % 250 + 1 for i in range(90)]
    loaded = load(gguf_chat_model, tmp_path / "cache")
    first = reply(loaded.family, history, Counter())
    loaded.release()  # writes what is queued: a restart
    follow_up = [*history, *first, 17, 18, 19]
    restarted = load(gguf_chat_model, tmp_path / "cache")
    counts = Counter()
    from_disk = reply(restarted.family, follow_up, counts)
    assert counts["stored_prompt_tokens"] == len(history) + len(first) - 1  # all but the reply's last token
    assert counts["prefilled_tokens"] == 4
    assert restarted.family.model.stored.flush(10)  # its own turn written, which replaces the one it read
    edited = [*history[:50], 3, 1, 4]  # shares 50 tokens: the first four pages are read, and two positions dropped
    counts = Counter()
    from_part = reply(restarted.family, edited, counts)
    assert counts["stored_prompt_tokens"] == 50 and counts["prefilled_tokens"] == 3
    restarted.release()
    fresh = load(gguf_chat_model, tmp_path / "elsewhere")
    assert reply(fresh.family, follow_up, Counter()) == from_disk, "the positions read are those it would compute"
    assert reply(fresh.family, edited, Counter()) == from_part
    fresh.release()


def test_a_changed_model_file_never_reads_the_old_files(gguf_chat_model, tmp_path):
    history = [(i * 11) % 250 + 1 for i in range(40)]
    loaded = load(gguf_chat_model, tmp_path)
    first = reply(loaded.family, history, Counter())
    loaded.release()
    changed = tmp_path / "changed.gguf"
    data = bytearray(gguf_chat_model.read_bytes())
    data[-1] ^= 0x01  # one weight's bits: the same header, shapes and size
    changed.write_bytes(bytes(data))
    counts = Counter()
    restarted = load(changed, tmp_path)
    reply(restarted.family, [*history, *first, 5], counts)
    assert counts["stored_prompt_tokens"] == 0 and counts["reused_prompt_tokens"] == 0
    restarted.release()
    assert len(list((tmp_path / "kv").iterdir())) == 2, "each model its own directory"


def test_no_budget_stores_nothing(gguf_chat_model, tmp_path):
    settings = Settings(model=str(gguf_chat_model), cache_dir=str(tmp_path), stored_turns_bytes=0)
    loaded = load_native(settings, "tiny", str(gguf_chat_model))
    reply(loaded.family, list(range(1, 40)), Counter())
    loaded.release()
    assert loaded.family.model.stored is None and not (tmp_path / "kv").exists()
