"""Rewrite a GGUF file's header, key by key and tensor by tensor, to make hostile files from a valid one."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

# GGUF's value types: the fixed-size ones by struct format; 8 is a string and 9 an array.
FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
UINT32, INT32, FLOAT32, UINT64, INT64, STRING, ARRAY = 4, 5, 6, 10, 11, 8, 9


@dataclass
class Tensor:
    """One entry of the tensor index: its name, dims (ggml's order), ggml type and offset in the data section."""

    name: str
    dims: list[int]
    qtype: int
    offset: int


@dataclass
class Header:
    """A GGUF file taken apart: keys with their raw encoded values, the tensor index, and the tensor data."""

    version: int
    values: dict[str, tuple[int, bytes]]  # key: (value type, the value's bytes as stored)
    tensors: list[Tensor]
    data: bytes
    extra_counts: tuple[int | None, int | None] = field(default=(None, None))  # forced tensor and key counts

    def set(self, key: str, kind: int, value) -> Header:
        """Give key a value of kind (an item kind list for arrays: [ARRAY, item kind])."""
        self.values[key] = (kind if isinstance(kind, int) else ARRAY, encode(kind, value))
        return self

    def set_raw(self, key: str, kind: int, raw: bytes) -> Header:
        self.values[key] = (kind, raw)
        return self

    def tensor(self, name: str) -> Tensor:
        return next(t for t in self.tensors if t.name == name)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.to_bytes())
        return path

    def to_bytes(self) -> bytes:
        tensor_count, kv_count = self.extra_counts
        out = bytearray(b"GGUF" + struct.pack("<I", self.version))
        out += struct.pack("<QQ", len(self.tensors) if tensor_count is None else tensor_count, kv_count or 0)
        if kv_count is None:
            out[16:24] = struct.pack("<Q", len(self.values))
        for key, (kind, raw) in self.values.items():
            out += _string(key) + struct.pack("<I", kind) + raw
        for tensor in self.tensors:
            out += _string(tensor.name) + struct.pack("<I", len(tensor.dims))
            out += b"".join(struct.pack("<Q", dim % 2**64) for dim in tensor.dims)
            out += struct.pack("<IQ", tensor.qtype, tensor.offset % 2**64)
        alignment = 32
        if "general.alignment" in self.values and self.values["general.alignment"][0] == UINT32:
            alignment = struct.unpack("<I", self.values["general.alignment"][1])[0] or 32
        out += b"\0" * (-len(out) % alignment)
        return bytes(out + self.data)


def encode(kind, value) -> bytes:
    """Encode a value of kind; kind [ARRAY, item] makes an array of items of that kind."""
    if isinstance(kind, list):
        item = kind[1] if len(kind) == 2 else kind[1:]
        head = struct.pack("<IQ", item if isinstance(item, int) else ARRAY, len(value))
        return head + b"".join(encode(item, v) for v in value)
    if kind == STRING:
        return _string(value)
    return struct.pack(FORMATS[kind], value)


def nested_arrays(depth: int) -> bytes:
    """Return the bytes of an array holding an array holding ... depth deep, the innermost empty."""
    return struct.pack("<IQ", ARRAY, 1) * (depth - 1) + struct.pack("<IQ", UINT32, 0)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def read(path: Path) -> Header:
    """Take a valid GGUF file apart."""
    data = Path(path).read_bytes()
    at = 8
    version = struct.unpack_from("<I", data, 4)[0]
    tensor_count, kv_count = struct.unpack_from("<QQ", data, at)
    at += 16

    def string() -> str:
        nonlocal at
        length = struct.unpack_from("<Q", data, at)[0]
        at += 8 + length
        return data[at - length : at].decode()

    def skip(kind: int) -> None:
        nonlocal at
        if kind == STRING:
            string()
        elif kind == ARRAY:
            item, count = struct.unpack_from("<IQ", data, at)
            at += 12
            for _ in range(count):
                skip(item)
        else:
            at += struct.calcsize(FORMATS[kind])

    values = {}
    for _ in range(kv_count):
        key = string()
        kind = struct.unpack_from("<I", data, at)[0]
        at += 4
        start = at
        skip(kind)
        values[key] = (kind, data[start:at])
    tensors = []
    for _ in range(tensor_count):
        name = string()
        n_dims = struct.unpack_from("<I", data, at)[0]
        dims = list(struct.unpack_from(f"<{n_dims}Q", data, at + 4))
        at += 4 + 8 * n_dims
        qtype, offset = struct.unpack_from("<IQ", data, at)
        at += 12
        tensors.append(Tensor(name, dims, qtype, offset))
    at += -at % 32
    return Header(version, values, tensors, data[at:])


# A child that loads GGUF files one by one with the real loader, its address space capped, and answers each with
# one JSON line: loaded (after one step), declined (the native step would not serve it), or refused (and why).
LOADER = """
import json, logging, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]),) * 2)
logging.disable(logging.CRITICAL)
from commons import Settings
from palaver.engine.engine import Engine
from palaver.engine.native.loading import load_native
for line in sys.stdin:
    path, mode, cache = json.loads(line)
    settings = Settings(model=path, cache_dir=cache, max_batch_size=2, max_context_tokens=256)
    try:
        if mode == "engine":
            engine = Engine(settings)
            engine.start()
            engine.wait_ready(120)
            described = engine.describe()
            out = {"outcome": described["state"], "message": engine.load_error or ""}
            engine.close()
        else:
            loaded = load_native(settings, "hostile", path)
            out = {"outcome": "declined" if loaded is None else "loaded"}
            if loaded is not None:
                model = loaded.family.model
                sequence = model.cache.new_sequence()
                assert model.cache.reserve(sequence, 2)
                model.cache.step([sequence], [[1, 2]], [True])
                out["kv_cache_bytes"] = loaded.kv_cache_bytes
                model.close()
    except Exception as exc:
        out = {"outcome": "refused", "type": type(exc).__name__, "message": str(exc)}
    print(json.dumps(out), flush=True)
"""


class Loader:
    """The real loader in a child process under a memory cap: a hostile file cannot take the machine, or the tests."""

    def __init__(self, cache_dir: Path, memory_limit: int = 2 << 30):
        import subprocess
        import sys

        root = Path(__file__).resolve().parents[1]
        self.cache_dir, self.limit = str(cache_dir), memory_limit
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOADER, str(memory_limit)],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def load(self, path: Path, mode: str = "native") -> dict:
        """Load one file; a child that dies (a crash, a signal) is reported as such with its last words."""
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps([str(path), mode, self.cache_dir]) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            stderr = self.process.stderr.read() if self.process.stderr else ""
            return {"outcome": "crashed", "returncode": code, "message": stderr[-2000:]}
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(30)
