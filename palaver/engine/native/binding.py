"""The native step: a Llama, Qwen2, Qwen3, Phi-3 or Gemma 3 GGUF model's forward pass in one native call."""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from palaver.engine.gguf.file import TYPE_NAMES, kernel_reads, row_weights
from palaver.engine.machine import KERNEL_FAMILY_NUMBERS, drop_mapped_pages, kernel_family_name

log = logging.getLogger("palaver.native")

# csrc/build.py writes it into the package: by make in a checkout, by the package's build step in a wheel.
LIBRARY = Path(str(resources.files("palaver"))) / "_native" / "palaver_native.so"
BLOCK = 32
# The architectures the native step runs, and whether GGUF stores their Q and K rows in rotary pairs (2i, 2i + 1):
# llama.cpp's converter permutes Llama's so; the others' stay in transformers' halves (i, i + d/2).
ARCHITECTURES = {"llama": True, "qwen2": False, "qwen3": False, "phi3": False, "gemma3": False}
# Each architecture's MLP activation, as transformers names it.
ACTIVATIONS = {"gemma3": "gelu_pytorch_tanh"}
CPU_FLAGS = ("avx2", "fma", "f16c")
# Raised whenever the step's arithmetic changes, so a system_fingerprint never names two ways of computing.
ARITHMETIC_VERSION = "native-step-2"
# The interface this binding speaks (csrc/native_step.h's kAbiVersion): a library built for another is refused.
ABI_VERSION = 6
# The KV cache's types (csrc/kv_cache.h's KvType), by PALAVER_KV_TYPE's names.
KV_TYPES = {"f16": 0, "q8_0": 1}
# The fast mode's integer dot products, by csrc/int8_dots.h's numbers (0: the exact mode has none).
DOT_FAMILY_NAMES = {1: "avx2", 2: "avx-vnni", 3: "avx512-vnni"}
FLOAT_TYPES = (0, 1, 30)  # F32, F16 and BF16: the fast mode multiplies them as the exact mode does

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
_state: dict[str, Any] = {}
_lock = threading.Lock()


def library() -> ctypes.CDLL | None:
    """Load the native step's library once; None (and why, logged once) where it cannot run."""
    with _lock:
        if "library" not in _state:
            _state["library"], why = _load()
            if _state["library"] is None:
                log.warning("the native step is unavailable (%s): Llama GGUF models run through transformers", why)
        return _state["library"]


def unavailable_reason() -> str | None:
    """Say why the native step cannot run here, or None when it can."""
    if "library" not in _state:
        library()
    return None if _state["library"] is not None else _state.get("why", "unavailable")


def _load() -> tuple[ctypes.CDLL | None, str]:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").is_file() else set()
    missing = [flag for flag in CPU_FLAGS if flag not in flags]
    if missing:
        _state["why"] = f"this CPU has no {', '.join(missing)}"
        return None, _state["why"]
    if not LIBRARY.is_file():
        _state["why"] = "not built: where a C++ compiler is installed, run `python csrc/build.py` or reinstall palaver"
        return None, _state["why"]
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError as exc:
        _state["why"] = f"could not load {LIBRARY.name}: {exc}"
        return None, _state["why"]
    why = _bind(lib)
    if why:
        _state["why"] = why
        return None, why
    return lib, ""


def _bind(lib: ctypes.CDLL) -> str | None:
    """Give the library's functions their signatures; say why if it was built for another interface."""
    version = getattr(lib, "pv_abi_version", None)
    if version is not None:
        version.argtypes, version.restype = [], _i64
    found = version() if version is not None else "none"
    if found != ABI_VERSION:
        return (
            f"{LIBRARY.name} speaks interface {found} and this palaver needs {ABI_VERSION}: "
            "run `python csrc/build.py` or reinstall palaver"
        )
    out = ctypes.POINTER(_ptr)
    signatures: dict[str, tuple[list, Any]] = {
        "pv_status_reason": ([_i64], ctypes.c_char_p),
        "pv_model_new": ([ctypes.POINTER(_i64), ctypes.c_double, ctypes.c_double, _i64, out], _i64),
        "pv_kernels_widest": ([], _i64),
        "pv_model_kernels": ([_ptr, _i64], _i64),
        "pv_model_arithmetic": ([_ptr, _i64], _i64),
        "pv_model_dots": ([_ptr], _i64),
        "pv_model_free": ([_ptr], None),
        "pv_model_set": ([_ptr, ctypes.c_char_p, _ptr, _i64, _i64, _i64], _i64),
        "pv_model_check": ([_ptr, ctypes.c_char_p, _i64], _i64),
        "pv_model_gemma3": ([_ptr, ctypes.c_double, ctypes.c_double, _i64, ctypes.c_double, _ptr], _i64),
        "pv_model_rope": ([_ptr, _i64, ctypes.c_double, _ptr, ctypes.c_double], _i64),
        "pv_cache_new": ([_ptr, _i64, _i64, _i64, out], _i64),
        "pv_cache_free": ([_ptr], None),
        "pv_cache_page_bytes": ([_ptr], _i64),
        "pv_cache_used_pages": ([_ptr], _i64),
        "pv_seq_new": ([_ptr], _i64),
        "pv_seq_free": ([_ptr, _i64], None),
        "pv_seq_len": ([_ptr, _i64], _i64),
        "pv_seq_reserve": ([_ptr, _i64, _i64], _i64),
        "pv_seq_truncate": ([_ptr, _i64, _i64], _i64),
        "pv_seq_rewind": ([_ptr, _i64, _i64], _i64),
        "pv_seq_copy": ([_ptr, _i64, _i64, _i64], _i64),
        "pv_seq_export_bytes": ([_ptr, _i64], _i64),
        "pv_seq_export": ([_ptr, _i64, _i64, _ptr, _i64], _i64),
        "pv_seq_import": ([_ptr, _i64, _i64, _ptr, _i64], _i64),
        "pv_step": ([_ptr, _ptr, _i64, _ptr, _ptr, _ptr, _ptr, _ptr], _i64),
        "pv_embed": ([_ptr, _ptr, _i64, _ptr, _ptr, _i64, _ptr], _i64),
        "pv_set_threads": ([_i64], None),
        "pv_threads": ([], _i64),
    }
    for name, (arguments, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, result
    return None


class Status(IntEnum):
    """The native step's refusals that the binding acts on (csrc/native_step.h names them all)."""

    OK = 0
    UNKNOWN_TENSOR = -3  # a tensor the step does not read: left out
    OUT_OF_PAGES = -8  # a reservation or copy the page budget cannot hold: the caller waits or evicts


class NativeStepError(ValueError):
    """A call the native step refused, with its status and the reason the library gives for it."""

    def __init__(self, lib: ctypes.CDLL, status: int, what: str):
        self.status, self.reason = status, lib.pv_status_reason(status).decode()
        super().__init__(f"{what}: {self.reason}")


def _checked(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != Status.OK:
        raise NativeStepError(lib, status, what)


@dataclass(frozen=True)
class Shape:
    """A Llama-family model's dimensions, as the native step needs them."""

    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_base: float

    @classmethod
    def of(cls, config: dict) -> Shape:
        heads = config["num_attention_heads"]
        rope = config.get("rope_parameters") or {}
        return cls(
            vocab=config["vocab_size"],
            hidden=config["hidden_size"],
            ffn=config["intermediate_size"],
            layers=config["num_hidden_layers"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            eps=config["rms_norm_eps"],
            rope_base=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
        )


def refusal(config: dict, entries: list) -> str | None:
    """Say why the native step cannot serve a GGUF model with this config and these tensors, or None if it can."""
    architecture = config.get("model_type")
    if architecture not in ARCHITECTURES:
        return f"its architecture is {architecture}, and the native step serves {', '.join(ARCHITECTURES)}"
    rope = config.get("rope_parameters") or {}
    shape = Shape.of(config)
    scaling = rope.get("rope_type", "default")
    factors = {"rope_factors_long.weight", "rope_factors_short.weight"}
    longrope = scaling == "longrope" and factors <= {entry.name for entry in entries}
    if scaling != "default" and not (architecture == "gemma3" and scaling == "linear") and not longrope:
        return f"its rotary scaling ({scaling}) is not served natively yet"
    rotary = config.get("rotary_dims", config.get("head_dim"))
    if rotary is not None and (rotary % 2 or not 2 <= rotary <= shape.head_dim):
        return f"it rotates {rotary} dimensions of each head, which the native step cannot"
    if architecture == "gemma3" and rotary != shape.head_dim:
        return "its Gemma 3 layers rotate part of each head, which the native step does not yet"
    biased = config.get("attention_bias") and architecture != "qwen2"  # Qwen2's Q/K/V biases are served
    if biased or config.get("mlp_bias") or config.get("hidden_act") != ACTIVATIONS.get(architecture, "silu"):
        return "its layers have biases or another activation"
    if config.get("final_logit_softcapping"):
        return "its logits are soft-capped, which the native step does not do yet"
    vectors = [e.qtype == 0 and len(e.shape) == 1 for e in entries]  # norms' weights and biases, float32
    others = sorted(
        {TYPE_NAMES.get(e.qtype, str(e.qtype)) for e, n in zip(entries, vectors) if not (n or kernel_reads(e))}
    )
    if others:
        return f"it holds tensors of types {', '.join(others)} that the native step does not read yet"
    if shape.hidden % BLOCK or shape.ffn % BLOCK or shape.head_dim % 16 or shape.heads % shape.kv_heads:
        return "its dimensions do not split into the kernel's blocks"
    return None


def kernels_in_use(lib: ctypes.CDLL, wanted: str) -> str:
    """Return the block kernels' family for PALAVER_KERNELS=wanted: auto's is the widest this CPU runs."""
    widest = int(lib.pv_kernels_widest())
    number = KERNEL_FAMILY_NUMBERS[wanted] or widest
    if number > widest:
        raise ValueError(
            f"PALAVER_KERNELS={wanted}: this CPU lacks the instructions of the {wanted} kernels; "
            f"the widest it runs are {kernel_family_name(widest)}"
        )
    return kernel_family_name(number)


class NativeModel:
    """A GGUF file's weights, read in place from a read-only mapping, with the native step over them."""

    def __init__(
        self,
        gguf_path: Path,
        config: dict,
        entries: list,
        threads: int,
        context: int | None = None,
        kernels: str = "auto",
        arithmetic: str = "exact",
    ):
        # context, the longest sequence served, picks LongRoPE's factors as llama.cpp does: long past the original
        lib = library()
        if lib is None:
            raise RuntimeError("the native step is unavailable")
        self.lib: ctypes.CDLL = lib
        self.kernels = kernels_in_use(lib, kernels)  # the block kernels' family, chosen once, here
        self.shape = Shape.of(config)
        self.data: np.memmap | None = np.memmap(gguf_path, dtype=np.uint8, mode="r")  # pages the kernel may drop
        shape = self.shape
        sizes = (shape.vocab, shape.hidden, shape.ffn, shape.layers, shape.heads, shape.kv_heads, shape.head_dim)
        dims = (_i64 * 7)(*sizes)
        adjacent_pairs = int(ARCHITECTURES[config["model_type"]])
        handle = _ptr()
        status = self.lib.pv_model_new(dims, shape.eps, shape.rope_base, adjacent_pairs, ctypes.byref(handle))
        _checked(self.lib, status, "the native step cannot run a model of these dimensions")
        self.handle: int | None = handle.value
        number = KERNEL_FAMILY_NUMBERS[self.kernels]
        _checked(self.lib, self.lib.pv_model_kernels(self.handle, number), f"the {self.kernels} kernels cannot run")
        base = self.data.ctypes.data
        tensors = {entry.name: entry for entry in entries}
        if config["model_type"] == "gemma3":
            self._make_gemma3(config)
        self._set_rotary(config, tensors, base, context)
        for entry in entries:  # by name: the step reads the tensors it knows, Phi-3's joined ones as views
            self._set(entry.name, base + entry.offset, entry)
        if "output.weight" not in tensors:  # a tied head reads the embedding's rows
            self._set("output.weight", base + tensors["token_embd.weight"].offset, tensors["token_embd.weight"])
        missing = ctypes.create_string_buffer(128)
        status = self.lib.pv_model_check(self.handle, missing, len(missing))
        _checked(self.lib, status, f"the GGUF file lacks {missing.value.decode()}, which the native step needs")
        self.lib.pv_set_threads(threads)  # the process's one pool, which the block kernels share
        # After the weights: the fast mode repacks them, on the pool. Its integer dot products are named with the
        # kernels wherever a reply says what computed it.
        _checked(self.lib, self.lib.pv_model_arithmetic(self.handle, int(arithmetic == "fast")), "bad arithmetic")
        self.dots: str | None = DOT_FAMILY_NAMES.get(int(self.lib.pv_model_dots(self.handle)))
        if self.dots is not None:  # the repacked copies are read now, not the file's blocks: its pages can go
            for entry in entries:
                if entry.qtype not in FLOAT_TYPES and len(entry.shape) == 2:
                    start = base + entry.offset
                    drop_mapped_pages(base, self.data.size, start, start + entry.shape[0] * entry.shape[1])

    def _make_gemma3(self, config: dict) -> None:
        """Give the step Gemma 3's activation, scales, rotary bases and sliding layers."""
        sliding = np.asarray([kind == "sliding_attention" for kind in config["layer_types"]], dtype=np.int8)
        rope = config["rope_parameters"]
        status = self.lib.pv_model_gemma3(
            self.handle,
            config["query_pre_attn_scalar"] ** -0.5,
            rope.get("factor", 1.0),
            config["sliding_window"] or 0,
            config["rope_local_base_freq"],
            sliding.ctypes.data,
        )
        _checked(self.lib, status, "the native step cannot run this Gemma 3 model's attention")

    def _set_rotary(self, config: dict, tensors: dict, base: int, context: int | None) -> None:
        """Rotate part of each head, or by LongRoPE's factors, where the file asks; leave the default otherwise."""
        rope = config.get("rope_parameters") or {}
        rotary = config.get("rotary_dims") or self.shape.head_dim
        if rope.get("rope_type") != "longrope" and rotary == self.shape.head_dim:
            return
        factors, attention_factor = None, 1.0
        if rope.get("rope_type") == "longrope":
            original = rope["original_max_position_embeddings"]
            kind = "long" if (context or original) > original else "short"
            entry = tensors[f"rope_factors_{kind}.weight"]
            if entry.qtype != 0 or entry.shape[0] != rotary // 2:
                raise ValueError(f"the native step cannot read {entry.name} ({entry.shape}, type {entry.qtype})")
            factors, attention_factor = base + entry.offset, rope["attention_factor"]
        status = self.lib.pv_model_rope(self.handle, rotary, self.shape.rope_base, factors, attention_factor)
        what = f"the native step cannot rotate {rotary} of each head's {self.shape.head_dim} dimensions"
        _checked(self.lib, status, what)

    def _set(self, name: str, address: int, entry) -> None:
        """Point the step at a tensor by its GGUF name; leave out a tensor it does not read."""
        rows, cols = (1, entry.shape[0]) if len(entry.shape) == 1 else (entry.shape[0], row_weights(entry))
        status = self.lib.pv_model_set(self.handle, name.encode(), address, entry.qtype, rows, cols)
        if status != Status.UNKNOWN_TENSOR:
            _checked(self.lib, status, f"the native step cannot read {name} ({rows} x {cols}, type {entry.qtype})")

    def kv_bytes_per_token(self, kv_type: str = "f16") -> int:
        """Return the bytes one position's keys and values take in every layer, as kv_type holds them."""
        head_dim = self.shape.head_dim
        # q8_0: a float16 scale for every 32 values, then the values as int8 (csrc/kv_cache.h's kv_vector_bytes).
        vector = (head_dim + 31) // 32 * 2 + head_dim if kv_type == "q8_0" else head_dim * 2
        return self.shape.layers * 2 * self.shape.kv_heads * vector

    def new_cache(self, page_tokens: int, max_pages: int, kv_type: str = "f16") -> NativeCache:
        return NativeCache(self, page_tokens, max_pages, kv_type)

    def close(self) -> None:
        if self.handle:
            self.lib.pv_model_free(self.handle)
            self.handle = None
        self.data = None  # unmapped once no view of it is left: the file's pages leave this process


class NativeCache:
    """Sequences' keys and values in pages that the native step owns, within a budget of pages.

    The pages come from one pool that reserves the budget's address space when the cache is made; a page takes
    memory when it is first written, and a page given back is the next one handed out.
    """

    def __init__(self, model: NativeModel, page_tokens: int, max_pages: int, kv_type: str = "f16"):
        self.model, self.page_tokens, self.kv_type = model, page_tokens, kv_type
        self.lib: ctypes.CDLL = model.lib
        handle = _ptr()
        status = self.lib.pv_cache_new(model.handle, page_tokens, max_pages, KV_TYPES[kv_type], ctypes.byref(handle))
        _checked(self.lib, status, f"the native step cannot make a KV cache of {max_pages} pages")
        self.handle: int | None = handle.value
        self.max_pages = max_pages
        self.page_bytes = self.lib.pv_cache_page_bytes(self.handle)
        self._logits = np.empty(0, dtype=np.float32)  # step_rows' logits, grown to the largest step's
        assert self.page_bytes == page_tokens * model.kv_bytes_per_token(kv_type)  # the budget's sums hold

    @property
    def used_pages(self) -> int:
        return int(self.lib.pv_cache_used_pages(self.handle))

    def new_sequence(self) -> int:
        sequence = int(self.lib.pv_seq_new(self.handle))
        if sequence <= 0:
            raise NativeStepError(self.lib, sequence, "the native step cannot start a sequence")
        return sequence

    def free(self, sequence: int) -> None:
        self.lib.pv_seq_free(self.handle, sequence)

    def length(self, sequence: int) -> int:
        length = int(self.lib.pv_seq_len(self.handle, sequence))
        if length < 0:
            raise NativeStepError(self.lib, length, f"the native step has no length for sequence {sequence}")
        return length

    def reserve(self, sequence: int, tokens: int) -> bool:
        """Make room for tokens more positions; False when the budget has no pages left for them."""
        return self._within_budget(self.lib.pv_seq_reserve(self.handle, sequence, tokens), "reserve")

    def truncate(self, sequence: int, length: int) -> None:
        _checked(self.lib, self.lib.pv_seq_truncate(self.handle, sequence, length), "the native step cannot truncate")

    def rewind(self, sequence: int, length: int) -> None:
        """Forget the sequence's positions past length, keeping their pages reserved for it."""
        _checked(self.lib, self.lib.pv_seq_rewind(self.handle, sequence, length), "the native step cannot rewind")

    def copy(self, target: int, source: int, tokens: int) -> bool:
        """Copy source's first tokens positions into the empty target; False when the budget cannot hold them."""
        return self._within_budget(self.lib.pv_seq_copy(self.handle, target, source, tokens), "copy")

    def export(self, sequence: int, tokens: int, data: np.ndarray | None = None) -> np.ndarray:
        """Return the sequence's first tokens positions' keys and values as bytes (into data where given, export_bytes
        of them), for import into a like cache."""
        data = np.empty(self.export_bytes(tokens), dtype=np.uint8) if data is None else data
        status = self.lib.pv_seq_export(self.handle, sequence, tokens, data.ctypes.data, data.size)
        _checked(self.lib, status, "the native step cannot export positions")
        return data

    def export_bytes(self, tokens: int) -> int:
        """Return the bytes export writes for tokens positions."""
        return int(self.lib.pv_seq_export_bytes(self.handle, tokens))

    def import_positions(self, sequence: int, tokens: int, data: np.ndarray | bytes | memoryview) -> bool:
        """Fill the empty sequence with exported positions; False when the budget cannot hold them."""
        view = np.frombuffer(data, dtype=np.uint8)
        status = self.lib.pv_seq_import(self.handle, sequence, tokens, view.ctypes.data, view.size)
        return self._within_budget(status, "import")

    def _within_budget(self, status: int, what: str) -> bool:
        if status == Status.OUT_OF_PAGES:
            return False
        _checked(self.lib, status, f"the native step cannot {what} positions")
        return True

    def step(self, sequences: list[int], chunks: list[list[int]], want: list[bool]) -> np.ndarray:
        """Append each chunk to its sequence; return [rows, vocab] logits, filled for the rows that want them."""
        packed = self._step(sequences, chunks, [int(bool(wanted)) for wanted in want])
        if all(want):
            return packed
        logits = np.zeros((len(sequences), self.model.shape.vocab), dtype=np.float32)
        logits[[index for index, wanted in enumerate(want) if wanted]] = packed
        return logits

    def step_rows(self, sequences: list[int], chunks: list[list[int]], want: list[int]) -> list[np.ndarray | None]:
        """Append each chunk to its sequence; return each row's logits: None (want 0), after its last token as
        [1, vocab] (want 1), or after each of its tokens as [len(chunk), vocab] (want 2).

        The logits are views of one buffer that the next step_rows overwrites: a batch reads them before its next
        step, and 16 rows of a 262,144-token vocabulary are 16 MB a step that is then not mapped afresh.
        """
        packed = self._step(sequences, chunks, want, reuse=True)
        rows: list[np.ndarray | None] = []
        start = 0
        for chunk, wanted in zip(chunks, want):
            taken = (0, 1, len(chunk))[wanted]
            rows.append(packed[start : start + taken] if taken else None)
            start += taken
        return rows

    def _step(self, sequences: list[int], chunks: list[list[int]], want: list[int], reuse: bool = False) -> np.ndarray:
        """Run pv_step; return its logits, packed in row order as each row's want asks (in the reused buffer)."""
        seqs = np.asarray(sequences, dtype=np.int64)
        counts = np.asarray([len(chunk) for chunk in chunks], dtype=np.int64)
        tokens = np.asarray([token for chunk in chunks for token in chunk], dtype=np.int32)
        wanted = np.asarray(want, dtype=np.int8)
        positions = sum((0, 1, len(chunk))[row_want] for chunk, row_want in zip(chunks, want))
        shape = (positions, self.model.shape.vocab)
        if not reuse:
            logits = np.empty(shape, dtype=np.float32)
        else:
            if self._logits.size < positions * shape[1]:
                self._logits = np.empty(positions * shape[1], dtype=np.float32)
            logits = self._logits[: positions * shape[1]].reshape(shape)
        status = self.lib.pv_step(
            self.model.handle,
            self.handle,
            len(sequences),
            seqs.ctypes.data,
            counts.ctypes.data,
            tokens.ctypes.data,
            wanted.ctypes.data,
            logits.ctypes.data,
        )
        _checked(self.lib, status, "the native step refused its input")
        return logits

    def embed(self, texts: list[list[int]], chunk: int) -> np.ndarray | None:
        """Return [texts, hidden]: each text's final-normed hidden states, mean-pooled; None while pages are short.

        Each text runs alone on pages reserved for the call and given back before it returns, fed in steps of at most
        chunk tokens, as a prefill is; a text's mean is the same bits alone and beside any others.
        """
        counts = np.asarray([len(text) for text in texts], dtype=np.int64)
        tokens = np.asarray([token for text in texts for token in text], dtype=np.int32)
        means = np.zeros((len(texts), self.model.shape.hidden), dtype=np.float32)
        status = self.lib.pv_embed(
            self.model.handle,
            self.handle,
            len(texts),
            counts.ctypes.data,
            tokens.ctypes.data,
            chunk,
            means.ctypes.data,
        )
        if status == Status.OUT_OF_PAGES:
            return None
        _checked(self.lib, status, "the native step refused the texts to embed")
        return means

    def close(self) -> None:
        if self.handle:
            self.lib.pv_cache_free(self.handle)
            self.handle = None
