"""Fuzzing the model loader: hostile GGUF metadata never crashes it, and every refusal names the key at fault.

A generator mutates a valid tiny GGUF file (counts and dims to extremes, array lengths, value types, nesting,
tensor shapes, offsets and types, the header's own counts) and the real loader reads each in a child process whose
address space is capped at 2 GB: a regression cannot take the machine, and a crash shows as a dead child.
"""

import re
import struct

import gguf_surgery as surgery
import pytest
from gguf_surgery import ARRAY, FLOAT32, INT32, INT64, STRING, UINT32, UINT64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GGUF_FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Refusals a loader owes a hostile file: a GGUFError naming the key, or the native step's own ValueError.
CLEAN = {"GGUFError", "ValueError"}
# Past a count that lies, a reader can only name the keys and tensors the file goes on to claim.
CLAIMED = re.compile(r"(metadata key|key after|tensor after|tensor) '[^']*'")
EXTREMES = [0, 1, 2, 3, -1, 7, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
HOSTILE_INTS = st.sampled_from(EXTREMES) | st.integers(-(2**64), 2**64) | st.integers(0, 600)
COUNT_KEYS = [
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.dimension_count",
    "llama.vocab_size",
    "llama.attention.sliding_window",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.rope.scaling.original_context_length",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base",
    "general.alignment",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
]
ARRAY_KEYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"]
INT_KINDS = {0: 8, 1: 8, 2: 16, 3: 16, UINT32: 32, INT32: 32, UINT64: 64, INT64: 64}
SIGNED = {1, 3, INT32, INT64}


def wrapped(kind: int, value: int) -> int:
    """Fit value into an integer kind's range, as a file would store its bits."""
    bits = INT_KINDS[kind]
    value %= 2**bits
    return value - 2**bits if kind in SIGNED and value >= 2 ** (bits - 1) else value


def set_count(key, kind, value):
    def mutate(header):
        if kind in INT_KINDS:
            return header.set(key, kind, wrapped(kind, value))
        if kind == FLOAT32:
            return header.set(key, kind, float(value) if abs(value) < 2**100 else float("inf"))
        if kind == STRING:
            return header.set(key, kind, str(value))
        return header.set(key, [ARRAY, UINT32], [wrapped(UINT32, value)] * (value % 5))

    return mutate


def array_length(key, count):
    def mutate(header):
        kind, raw = header.values[key]
        return header.set_raw(key, kind, raw[:4] + struct.pack("<Q", count % 2**64) + raw[12:])

    return mutate


def nesting(depth):
    return lambda header: header.set_raw("general.nested", ARRAY, surgery.nested_arrays(depth))


def tensor_field(index, field, value, which):
    def mutate(header):
        entry = header.tensors[index % len(header.tensors)]
        if field == "dims":
            entry.dims[which % len(entry.dims)] = value % 2**64
        elif field == "n_dims":
            entry.dims = (entry.dims + [1, 1, 1, 1, 1])[: max(0, value % 7)]
        elif field == "qtype":
            entry.qtype = value % 2**32
        else:
            entry.offset = value % 2**64
        return header

    return mutate


def header_counts(tensors, keys):
    def mutate(header):
        header.extra_counts = (tensors, keys)
        return header

    return mutate


MUTATIONS = st.one_of(
    st.builds(
        set_count,
        st.sampled_from(COUNT_KEYS),
        st.sampled_from([*INT_KINDS, FLOAT32, STRING, ARRAY]),
        HOSTILE_INTS,
    ),
    st.builds(array_length, st.sampled_from(ARRAY_KEYS), HOSTILE_INTS),
    st.builds(nesting, st.sampled_from([1, 2, 4, 5, 6, 100, 200_000])),
    st.builds(
        tensor_field,
        st.integers(0, 50),
        st.sampled_from(["dims", "n_dims", "qtype", "offset"]),
        HOSTILE_INTS,
        st.integers(0, 3),
    ),
    st.builds(header_counts, st.sampled_from([None, 0, 1, 2**31, 2**63]), st.sampled_from([None, 0, 2**40])),
)


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    child = surgery.Loader(tmp_path_factory.mktemp("fuzz-cache"))
    yield child
    child.close()


@GGUF_FUZZ
@given(mutations=st.lists(MUTATIONS, min_size=1, max_size=3))
def test_hostile_gguf_metadata_never_crashes_the_loader_and_every_refusal_names_a_key(
    gguf_chat_model, loader, tmp_path, mutations
):
    header = surgery.read(gguf_chat_model)
    names = {*header.values, *(t.name for t in header.tensors), "tensor_count", "kv_count", "header's counts"}
    for mutate in mutations:
        mutate(header)
    names |= {*header.values, *(t.name for t in header.tensors)}
    outcome = loader.load(header.write(tmp_path / "hostile.gguf"))
    assert outcome["outcome"] in ("loaded", "declined", "refused"), outcome
    if outcome["outcome"] == "refused":
        assert outcome["type"] in CLEAN, outcome
        assert any(name in outcome["message"] for name in names) or CLAIMED.search(outcome["message"]), outcome
