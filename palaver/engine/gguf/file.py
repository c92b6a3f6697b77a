"""Read a GGUF file's metadata and tensor index in pure Python: no torch, no transformers, and in milliseconds."""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from palaver.core.errors import ModelRefused

MAGIC = b"GGUF"
# Metadata value types: the fixed-size ones by their struct format; 8 is a string and 9 an array.
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
# Bounds on what a header may make this reader build, each far past any real file's: llama.cpp reads no arrays of
# arrays and at most 4 dims; the largest real arrays (vocabularies, merges) hold under a million items, and the
# largest strings (a tokenizer.json kept whole) a few MB.
MAX_NESTING, MAX_DIMS = 4, 4
MAX_ARRAY_ITEMS, MAX_METADATA_ITEMS = 1 << 22, 1 << 23
MAX_STRING_BYTES = 1 << 26
# The fewest bytes a string, an array, a key and its value, and a tensor's entry take in a header.
LEAST_BYTES = {STRING: 8, ARRAY: 12}
LENGTH = struct.Struct("<Q")  # a string's byte count, before its bytes
LEAST_KEY_BYTES, LEAST_TENSOR_BYTES = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8
# ggml's tensor types: weights per block and bytes per block (plain floats are blocks of one), and names.
TYPE_LAYOUT = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    30: (1, 2),  # BF16
}
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K", 11: "Q3_K"}
TYPE_NAMES |= {12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}
PLAIN_DTYPES = {0: "<f4", 1: "<f2"}
# The types csrc/blocks.h reads as stored: the native step and the block kernel serve these; K-quants in rows of
# whole 256-weight super-blocks, the others in rows of whole 32-weight blocks.
KERNEL_TYPES = frozenset({0, 1, 30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14})
SUPER_BLOCK_TYPES = frozenset({10, 11, 12, 13, 14})


def row_weights(entry: TensorEntry) -> int:
    """Return how many weights one stored row of a 2-D tensor holds."""
    per_block, block_bytes = TYPE_LAYOUT[entry.qtype]
    if entry.dtype != "|u1":  # a plain array, in numpy's order
        return entry.shape[-1]
    return entry.shape[1] // block_bytes * per_block


def stored_row_bytes(qtype: int, weights: int) -> int:
    """Return the bytes a row of weights takes stored as qtype."""
    per_block, block_bytes = TYPE_LAYOUT[qtype]
    return weights // per_block * block_bytes


def weight_layout(entries: list[TensorEntry], kept: set[str], architecture: str, path: str, why: str | None) -> dict:
    """Describe how a GGUF file's weights are served: each type's count, the bytes kept as stored and as float32."""
    stored = sum(_nbytes(e) for e in entries if e.name in kept)
    widened = sum(_weights(e) * 4 for e in entries if e.name not in kept)
    types: dict[str, int] = {}
    for entry in entries:
        types[TYPE_NAMES[entry.qtype]] = types.get(TYPE_NAMES[entry.qtype], 0) + 1
    return {
        "architecture": architecture,
        "path": path,
        **({"why": why} if why else {}),
        "tensor_types": types,
        "bytes_as_stored": stored,
        "bytes_as_float32": widened,
        "share_as_stored": round(stored / max(1, stored + widened), 3),
    }


def _nbytes(entry: TensorEntry) -> int:
    return stored_row_bytes(entry.qtype, _weights(entry))


def _weights(entry: TensorEntry) -> int:
    return entry.shape[0] if len(entry.shape) == 1 else entry.shape[0] * row_weights(entry)


def kernel_reads(entry: TensorEntry) -> bool:
    """Tell whether the kernel reads this tensor's rows as stored: a type it serves, rows of whole units."""
    unit = 256 if entry.qtype in SUPER_BLOCK_TYPES else 32
    return entry.qtype in KERNEL_TYPES and len(entry.shape) == 2 and row_weights(entry) % unit == 0


class GGUFError(ModelRefused):
    """A file that is not a GGUF file this reader understands."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a GGUF file: its byte offset from the file's start and its stored shape."""

    name: str
    qtype: int
    offset: int
    shape: tuple[int, ...]  # as stored: [rows, bytes] for blocks, numpy's order for plain arrays
    dtype: str


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF file's metadata (every key, arrays in full) and its tensors."""

    path: Path
    metadata: dict[str, Any]
    tensors: list[TensorEntry]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        """Return an architecture key such as 'block_count' (llama.block_count), or default."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Cursor:
    """Read values from a GGUF header, refusing any count that the bytes left cannot hold before acting on it."""

    def __init__(self, data: memoryview):
        self.data, self.at, self.items = data, 0, 0
        self.where = "the header's counts"  # what was read last, for a refusal when what follows cannot be right

    def left(self) -> int:
        return len(self.data) - self.at

    def scalar(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self, what: str) -> str:
        length = self.scalar("<Q")
        if length > self.left():
            raise GGUFError(f"{what}: a string of {length} bytes runs past the end of the file")
        if length > MAX_STRING_BYTES:
            raise GGUFError(f"{what}: a string of {length} bytes is longer than the {MAX_STRING_BYTES} read")
        text = bytes(self.data[self.at : self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def value(self, kind: int, key: str, depth: int = 0) -> Any:
        what = f"metadata key {key[:80]!r}"  # a key read past a count that lied may be any bytes
        if kind == STRING:
            return self.string(what)
        if kind != ARRAY:
            if kind not in SCALAR_FORMATS:
                raise GGUFError(f"{what} has unknown value type {kind}")
            return self.scalar(SCALAR_FORMATS[kind])
        if depth >= MAX_NESTING:  # checked before reading deeper: no recursion a file can drive
            raise GGUFError(f"{what} nests arrays more than {MAX_NESTING} deep")
        item_kind, count = self.scalar("<I"), self.scalar("<Q")
        least = LEAST_BYTES.get(item_kind) or (
            struct.calcsize(SCALAR_FORMATS[item_kind]) if item_kind in SCALAR_FORMATS else 0
        )
        if not least:
            raise GGUFError(f"{what} is an array of unknown value type {item_kind}")
        if count * least > self.left():
            raise GGUFError(f"{what} = an array of {count} items runs past the end of the file")
        self.items += count
        if count > MAX_ARRAY_ITEMS or self.items > MAX_METADATA_ITEMS:
            bound = f"at most {MAX_ARRAY_ITEMS} a key, {MAX_METADATA_ITEMS} in all, are read"
            raise GGUFError(f"{what} = an array of {count} items: {bound}")
        if item_kind in SCALAR_FORMATS:
            fmt = SCALAR_FORMATS[item_kind]
            items = list(struct.unpack_from(f"<{count}{fmt[1]}", self.data, self.at))
            self.at += least * count
            return items
        if item_kind == STRING:
            return self.strings(count, what)
        return [self.value(item_kind, key, depth + 1) for _ in range(count)]

    def strings(self, count: int, what: str) -> list[str]:
        """Read an array of count strings: a vocabulary's or its merges', 100k and more, in one tight loop."""
        # string() a string at a time was half a second of the embedded model's load.
        data, at, end, items = self.data, self.at, len(self.data), []
        length_at = LENGTH.unpack_from
        for _ in range(count):
            (length,) = length_at(data, at)
            at += 8
            if length > end - at:
                raise GGUFError(f"{what}: a string of {length} bytes runs past the end of the file")
            if length > MAX_STRING_BYTES:
                raise GGUFError(f"{what}: a string of {length} bytes is longer than the {MAX_STRING_BYTES} read")
            items.append(str(data[at : at + length], "utf-8", "replace"))
            at += length
        self.at = at
        return items


def read_gguf(path: Path) -> GGUFFile:
    """Read a GGUF file's header: its metadata and the index of its tensors (the weights are not read)."""
    if Path(path).stat().st_size < len(MAGIC):
        raise GGUFError(f"{path} is not a GGUF file")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        cursor = _Cursor(view)
        try:
            return _parse(Path(path), cursor, len(mapped))
        except struct.error as exc:
            raise GGUFError(f"{path} ends inside its header, in {cursor.where}") from exc
        finally:
            view.release()


def _parse(path: Path, cursor: _Cursor, size: int) -> GGUFFile:
    if bytes(cursor.data[:4]) != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file")
    cursor.at = 4
    version = cursor.scalar("<I")
    if version not in (2, 3):
        raise GGUFError(f"{path} is GGUF version {version}; versions 2 and 3 are read")
    tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    if tensor_count * LEAST_TENSOR_BYTES + kv_count * LEAST_KEY_BYTES > cursor.left():
        counts = f"tensor_count = {tensor_count} and kv_count = {kv_count}"
        raise GGUFError(f"{path}'s header gives {counts}, which run past the end of the file")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string(f"the name of the key after {cursor.where}")
        cursor.where = f"metadata key {key[:80]!r}"
        if key in metadata:
            raise GGUFError(f"metadata key {key!r} appears twice")
        metadata[key] = cursor.value(cursor.scalar("<I"), key)
    infos = []
    for _ in range(tensor_count):
        name = cursor.string(f"the name of the tensor after {cursor.where}")
        cursor.where = f"tensor {name[:80]!r}"
        n_dims = cursor.scalar("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dims; 1 to {MAX_DIMS} are read")
        dims = [cursor.scalar("<Q") for _ in range(n_dims)]
        infos.append((name, dims, cursor.scalar("<I"), cursor.scalar("<Q")))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"{path} gives an alignment of {alignment!r}, not a power of two")
    data_start = -(-cursor.at // alignment) * alignment
    tensors, names = [], set()
    for name, dims, qtype, offset in infos:
        if name in names:
            raise GGUFError(f"tensor {name!r} appears twice")
        names.add(name)
        tensors.append(_entry(path, name, dims, qtype, data_start, offset, alignment, size))
    return GGUFFile(path, metadata, tensors)


def _entry(
    path: Path, name: str, dims: list[int], qtype: int, data_start: int, offset: int, alignment: int, size: int
) -> TensorEntry:
    """Check one tensor's entry against its type and the file, as llama.cpp does, and say where it lies."""
    if qtype not in TYPE_LAYOUT:
        raise GGUFError(f"{name} has ggml type {qtype}, which this reader does not know")
    per_block, block_bytes = TYPE_LAYOUT[qtype]
    if min(dims) < 1:
        raise GGUFError(f"tensor {name!r} has dims {dims}: each must be at least 1")
    columns, rows = dims[0], math.prod(dims[1:])
    if columns % per_block:
        raise GGUFError(
            f"tensor {name!r} has rows of {columns} weights, not whole {TYPE_NAMES[qtype]} blocks of {per_block}"
        )
    if offset % alignment:
        raise GGUFError(f"tensor {name!r} starts at offset {offset}, not a multiple of the alignment {alignment}")
    if qtype in PLAIN_DTYPES:
        shape, dtype = tuple(reversed(dims)), PLAIN_DTYPES[qtype]
    else:
        shape, dtype = (rows, columns // per_block * block_bytes), "|u1"
    start = data_start + offset
    if start + rows * (columns // per_block * block_bytes) > size:
        raise GGUFError(f"{name} runs past the end of {path}")
    return TensorEntry(name, qtype, start, shape, dtype)


def file_digest(path: Path) -> str:
    """Return a short content hash, so a changed file is converted again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_dir_of(gguf_path: Path, cache_dir: str, kind: str) -> Path:
    """Return where what is made from a GGUF file once (its metadata, a float32 copy) is kept: kind/<file>-<digest>."""
    return Path(cache_dir) / kind / f"{gguf_path.stem}-{file_digest(gguf_path)}"


def save_tensor_index(entries: list[TensorEntry], path: Path) -> None:
    """Write a tensor index as JSON."""
    path.write_text(json.dumps([asdict(entry) for entry in entries]))


def load_tensor_index(path: Path) -> list[TensorEntry]:
    """Read a tensor index written by save_tensor_index."""
    return [TensorEntry(**{**entry, "shape": tuple(entry["shape"])}) for entry in json.loads(path.read_text())]
