"""A GGUF file's counts and sizes are checked before anything is sized from them; refusals name the key and value."""

import gguf_surgery as surgery
import pytest
from gguf_surgery import ARRAY, FLOAT32, INT32, STRING, UINT32, UINT64

from commons import Settings
from palaver.engine.gguf.checks import read_checked
from palaver.engine.gguf.file import GGUFError
from palaver.engine.model_sources import embedded_gguf_path
from palaver.engine.native.loading import why_not_native

# The findings of issue 30, each a file that the loader once took (or tried to allocate 20.7 GB for, or crashed on).
FINDINGS = {
    "rope": (
        lambda h: h.set("llama.rope.dimension_count", UINT32, 1_000_000),
        "llama.rope.dimension_count = 1000000 must be even and at most the head size 16",
    ),
    "no heads": (lambda h: h.set("llama.attention.head_count", UINT32, 0), "llama.attention.head_count = 0"),
    "deep arrays": (
        lambda h: h.set_raw("general.deep", ARRAY, surgery.nested_arrays(200_000)),
        "'general.deep' nests arrays more than 4 deep",
    ),
    "huge context": (lambda h: h.set("llama.context_length", UINT32, 2**31 - 1), "llama.context_length = 2147483647"),
    "huge vocabulary": (lambda h: h.set("llama.vocab_size", UINT32, 2**31 - 1), "llama.vocab_size = 2147483647"),
}


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    child = surgery.Loader(tmp_path_factory.mktemp("cache"))
    yield child
    child.close()


def hostile(source, tmp_path, mutate, name="hostile.gguf"):
    return mutate(surgery.read(source)).write(tmp_path / name)


def test_each_finding_fails_to_load_with_a_reason_naming_the_key_within_a_2_gb_cap(gguf_chat_model, loader, tmp_path):
    for name, (mutate, reason) in FINDINGS.items():
        outcome = loader.load(hostile(gguf_chat_model, tmp_path, mutate, f"{name}.gguf"), mode="engine")
        assert outcome == {"outcome": "failed", "message": outcome["message"]}, (name, outcome)
        assert reason in outcome["message"], (name, outcome)
    assert loader.load(gguf_chat_model, mode="engine") == {"outcome": "ready", "message": ""}


def test_the_transformers_path_checks_the_file_too(gguf_chat_model, tmp_path):
    path = hostile(gguf_chat_model, tmp_path, FINDINGS["huge vocabulary"][0])
    settings = Settings(model=str(path), engine="transformers")
    with pytest.raises(GGUFError, match="llama.vocab_size = 2147483647"):
        why_not_native(settings, str(path))


def test_a_real_files_long_context_loads_and_the_kv_cache_is_sized_by_the_servers_bound(
    gguf_chat_model, loader, tmp_path
):
    path = hostile(gguf_chat_model, tmp_path, lambda h: h.set("llama.context_length", UINT32, 10_485_760))
    outcome = loader.load(path)  # Llama 4 Scout's 10M positions; the loader serves 256 (max_context_tokens)
    assert outcome["outcome"] == "loaded", outcome
    kv_bytes_per_token = 2 * 2 * 1 * 16 * 2  # layers x (K, V) x KV heads x head size x float16
    assert outcome["kv_cache_bytes"] <= 2 * 256 * kv_bytes_per_token  # two rows of 256 positions, at most


@pytest.mark.parametrize(
    ("key", "kind", "value", "reason"),
    [
        ("llama.attention.head_count_kv", UINT32, 0, "llama.attention.head_count_kv = 0 must be a whole number"),
        ("llama.attention.head_count_kv", UINT32, 3, "head_count_kv = 3 must divide the head count 2"),
        ("llama.attention.head_count", UINT32, 64, "head_count = 64 must be at most the width 32"),
        ("llama.attention.head_count", STRING, "four", "llama.attention.head_count = 'four' must be a whole number"),
        ("llama.attention.head_count", [ARRAY, UINT32], [4, 8], "head_count = [4, 8] varies by layer"),
        ("llama.attention.head_count", [ARRAY, UINT32], [4], "must give one count for each of the 2 layers"),
        ("llama.block_count", UINT64, 2**63, "llama.block_count = 9223372036854775808 must be a whole number"),
        ("llama.block_count", UINT32, 3, "llama.block_count = 3 but the file holds the tensors of 2 layers"),
        ("llama.block_count", UINT32, 1, "llama.block_count = 1 but the file holds layer 1's tensors"),
        ("llama.embedding_length", UINT32, 64, "'token_embd.weight' is 377 x 32, but"),
        (
            "llama.feed_forward_length",
            UINT32,
            96,
            "feed_forward_length = 96, llama.embedding_length = 32 make it 96 x 32",
        ),
        ("llama.attention.key_length", UINT32, 32, "'blk.0.attn_q.weight' is 32 x 32, but"),
        ("llama.attention.layer_norm_rms_epsilon", FLOAT32, float("nan"), "layer_norm_rms_epsilon = nan must be"),
        ("llama.rope.freq_base", FLOAT32, -1.0, "llama.rope.freq_base = -1.0 must be a finite number above 0"),
        ("llama.rope.scaling.original_context_length", UINT32, 1, "original_context_length = 1 must be at least 2"),
        ("llama.expert_used_count", UINT32, 2, "expert_used_count = 2 must be at most the expert count 0"),
        ("llama.attention.sliding_window", INT32, -1, "llama.attention.sliding_window = -1 must be a whole number"),
        ("llama.vocab_size", UINT32, 376, "llama.vocab_size = 376 but tokenizer.ggml.tokens holds 377"),
        ("tokenizer.ggml.token_type", [ARRAY, INT32], [1, 1], "tokenizer.ggml.token_type = [1, 1] must hold one"),
        ("tokenizer.ggml.tokens", [ARRAY, UINT32], [1, 2], "tokenizer.ggml.tokens = [1, 2] must be a list of strings"),
    ],
)
def test_a_count_out_of_bounds_or_at_odds_with_the_tensors_is_refused_naming_it(
    gguf_chat_model, tmp_path, key, kind, value, reason
):
    path = hostile(gguf_chat_model, tmp_path, lambda h: h.set(key, kind, value))
    with pytest.raises(GGUFError) as refused:
        read_checked(path)
    assert reason in str(refused.value)


def tensor(which, **changes):
    def mutate(header):
        entry = header.tensor(which)
        for field, value in changes.items():
            setattr(entry, field, value)
        return header

    return mutate


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (tensor("blk.0.attn_q.weight", dims=[32, 32, 1, 1, 1]), "'blk.0.attn_q.weight' has 5 dims; 1 to 4 are read"),
        (tensor("blk.0.attn_q.weight", dims=[32, 0]), "'blk.0.attn_q.weight' has dims [32, 0]"),
        (tensor("blk.0.attn_q.weight", dims=[33, 32]), "rows of 33 weights, not whole Q4_0 blocks of 32"),
        (tensor("blk.0.attn_q.weight", dims=[32, 2**40]), "blk.0.attn_q.weight runs past the end"),
        (tensor("blk.0.attn_q.weight", offset=2**64 - 32), "blk.0.attn_q.weight runs past the end"),
        (tensor("blk.0.attn_q.weight", offset=8), "starts at offset 8, not a multiple of the alignment 32"),
        (tensor("blk.0.attn_q.weight", name="blk.0.attn_k.weight"), "tensor 'blk.0.attn_k.weight' appears twice"),
        (tensor("blk.0.attn_q.weight", name="blk.x.attn_q.weight"), "'blk.x.attn_q.weight' does not name its layer"),
        (tensor("blk.0.attn_q.weight", dims=[32, 64]), "'blk.0.attn_q.weight' is 64 x 32, but"),
        (tensor("output_norm.weight", dims=[16]), "tensor 'output_norm.weight' is 16, but llama.embedding_length"),
        (lambda h: h.set_raw("general.long", ARRAY, surgery.encode([ARRAY, UINT32], [])[:4] + b"\xff" * 8), "past"),
        (lambda h: h.set_raw("general.wide", ARRAY, b"\x08\0\0\0" + (2**22 + 1).to_bytes(8, "little")), "past"),
        (lambda h: h.set_raw("general.odd", 99, b""), "'general.odd' has unknown value type 99"),
        (lambda h: h.set_raw("general.text", STRING, (2**40).to_bytes(8, "little")), "string of 1099511627776 bytes"),
        (lambda h: setattr(h, "extra_counts", (2**62, None)) or h, "tensor_count = 4611686018427387904 and kv_count"),
        (lambda h: setattr(h, "extra_counts", (None, 2**40)) or h, "kv_count = 1099511627776, which run past the end"),
    ],
)
def test_a_header_that_cannot_be_right_is_refused_before_it_is_acted_on(gguf_chat_model, tmp_path, mutate, reason):
    with pytest.raises(GGUFError) as refused:
        read_checked(hostile(gguf_chat_model, tmp_path, mutate))
    assert reason in str(refused.value)


def test_an_array_longer_than_any_real_vocabulary_is_refused_naming_its_key(gguf_chat_model, tmp_path):
    items = (0).to_bytes(4, "little") + (2**22 + 1).to_bytes(8, "little") + bytes(2**22 + 1)  # 4M + 1 uint8s
    with pytest.raises(GGUFError, match="'general.many' = an array of 4194305 items: at most 4194304 a key"):
        read_checked(hostile(gguf_chat_model, tmp_path, lambda h: h.set_raw("general.many", ARRAY, items)))


def test_real_files_of_every_served_layout_pass(
    gguf_chat_model, qwen2_gguf_model, phi3_gguf_model, gemma3_gguf_model, sentencepiece_gguf_model
):
    for path in (gguf_chat_model, qwen2_gguf_model, phi3_gguf_model, gemma3_gguf_model, sentencepiece_gguf_model):
        read_checked(path)
    assert read_checked(embedded_gguf_path()).get("context_length") == 8192
