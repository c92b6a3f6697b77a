"""What a model's weights will take, and memory handed back to the system."""

import json

from palaver.engine.machine import give_back, resident_bytes, weight_bytes


def test_weights_are_counted_as_they_will_be_held(tmp_path, gguf_chat_model):
    assert weight_bytes(str(gguf_chat_model)) == gguf_chat_model.stat().st_size, "a GGUF file is served in place"
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"\0" * 1000)
    (directory / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert weight_bytes(str(directory)) == 2000, "16-bit weights are loaded as float32"
    (directory / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert weight_bytes(str(directory)) == 1000
    assert weight_bytes("org/model") == 0, "a hub id: not known until loaded"


def test_freed_memory_goes_back_to_the_system():
    give_back()  # free pages an earlier test left in the heap would hide the growth
    before = resident_bytes()
    blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MB in blocks glibc keeps in its heap
    for block in blocks:
        block[::4096] = b"\1" * len(block[::4096])
    grown = resident_bytes()
    del blocks
    give_back()
    assert grown - before > 90 * 2**20, "the blocks were not resident"
    assert resident_bytes() - before < 30 * 2**20
