"""Reading a GGUF file: the same tensor index as gguf-py's reader, every metadata value, and clear errors."""

import gguf
import pytest

from palaver.engine.gguf.file import GGUFError, load_tensor_index, read_gguf, save_tensor_index


def test_the_index_and_metadata_match_gguf_pys_reader(gguf_chat_model):
    ours = read_gguf(gguf_chat_model)
    reader = gguf.GGUFReader(gguf_chat_model)
    theirs = [(t.name, int(t.tensor_type), int(t.data_offset), tuple(t.data.shape)) for t in reader.tensors]
    assert [(t.name, t.qtype, t.offset, t.shape) for t in ours.tensors] == theirs
    assert ours.architecture == "llama" and ours.get("block_count") == 2
    field = reader.fields["tokenizer.ggml.tokens"]
    assert ours.metadata["tokenizer.ggml.tokens"] == [bytes(field.parts[i]).decode() for i in field.data]
    assert ours.metadata["tokenizer.chat_template"].startswith("{% for message in messages %}")


def test_an_index_saved_as_json_reads_back_the_same(gguf_chat_model, tmp_path):
    tensors = read_gguf(gguf_chat_model).tensors
    save_tensor_index(tensors, tmp_path / "tensors.json")
    assert load_tensor_index(tmp_path / "tensors.json") == tensors


def test_a_truncated_or_foreign_file_is_refused_with_a_reason(gguf_chat_model, tmp_path):
    data = gguf_chat_model.read_bytes()
    for name, content, reason in (
        ("empty.gguf", b"", "GGUF"),
        ("foreign.gguf", b"PK\x03\x04" + data[4:], "GGUF"),
        ("header.gguf", data[:200], "past the end"),
        ("weights.gguf", data[: len(data) - 100], "past the end"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(GGUFError, match=reason):
            read_gguf(tmp_path / name)


def test_a_layout_counts_types_and_the_bytes_kept_as_stored_and_widened_to_float32():
    from palaver.engine.gguf.file import TensorEntry, weight_layout

    entries = [
        TensorEntry("a", 12, 0, (4, 144), "|u1"),  # 4 rows of one Q4_K super-block: 576 bytes, 1,024 weights
        TensorEntry("b", 10, 0, (2, 84), "|u1"),  # Q2_K, not read as stored: 512 weights widened to float32
        TensorEntry("n", 0, 0, (256,), "<f4"),  # a norm's float32 vector
    ]
    layout = weight_layout(entries, {"a", "n"}, "llama", "transformers", "it holds Q2_K")
    assert layout["tensor_types"] == {"Q4_K": 1, "Q2_K": 1, "F32": 1}
    assert layout["bytes_as_stored"] == 576 + 1024 and layout["bytes_as_float32"] == 512 * 4
    assert layout["share_as_stored"] == round(1600 / 3648, 3) and layout["why"] == "it holds Q2_K"


def test_a_string_array_reads_every_item_and_refuses_one_running_past_the_end_naming_its_key(gguf_chat_model, tmp_path):
    import struct

    import gguf_surgery as surgery

    words = ["", "a", "é", "\ufffd" * 3, "x" * 300]
    path = surgery.read(gguf_chat_model).set("test.words", [surgery.ARRAY, surgery.STRING], words).write(tmp_path / "w")
    assert read_gguf(path).metadata["test.words"] == words
    raw = struct.pack("<IQ", surgery.STRING, 2) + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 2**40) + b"b"
    hostile = surgery.read(gguf_chat_model).set_raw("test.words", surgery.ARRAY, raw).write(tmp_path / "h")
    with pytest.raises(GGUFError, match=r"'test.words': a string of 1099511627776 bytes runs past the end"):
        read_gguf(hostile)
