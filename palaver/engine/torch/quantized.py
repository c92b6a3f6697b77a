"""Linear and embedding layers that keep GGUF blocks as stored and compute with float32 activations."""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from palaver.engine.gguf.file import KERNEL_TYPES, SUPER_BLOCK_TYPES, TYPE_NAMES, stored_row_bytes
from palaver.engine.machine import KERNEL_FAMILY_NUMBERS, kernel_family_name

log = logging.getLogger("palaver.quantized")

# csrc/build.py writes it into the package: by make in a checkout, by the package's build step in a wheel.
KERNEL_LIBRARY = Path(str(resources.files("palaver"))) / "_native" / "palaver_kernels.so"
BLOCK = 32  # weights per block; the K-quants' super-blocks hold eight
Q8_0 = 8  # the type linear layers are quantised to at load

_kernel_lock = threading.Lock()
_kernel_state: dict[str, bool | str] = {}


def kernel_available() -> bool:
    """Load the block kernel once; on a CPU or an install that cannot run it, say why once."""
    with _kernel_lock:
        if "loaded" not in _kernel_state:
            _kernel_state["loaded"], _kernel_state["why"] = _load_kernel()
            if not _kernel_state["loaded"]:
                log.warning(
                    "GGUF block kernel unavailable (%s): GGUF weights are served as float32, "
                    "which reads about 5x more memory per token",
                    _kernel_state["why"],
                )
        return bool(_kernel_state["loaded"])


def _load_kernel() -> tuple[bool, str]:
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False, "this CPU has no AVX2"
    if not KERNEL_LIBRARY.is_file():
        return False, "not built: where a C++ compiler is installed, run `python csrc/build.py` or reinstall palaver"
    try:
        torch.ops.load_library(str(KERNEL_LIBRARY))
    except (OSError, RuntimeError) as exc:
        return False, f"could not load {KERNEL_LIBRARY.name}: {exc}"
    _register_fakes()
    return True, ""


def _register_fakes() -> None:
    """Describe the kernels' output shapes, so torch.compile and meta tensors can trace through them."""

    @torch.library.register_fake("palaver::gguf_linear")
    def _(x, blocks, qtype, in_features):
        return x.new_empty((*x.shape[:-1], blocks.shape[0]))

    @torch.library.register_fake("palaver::gguf_dequantise")
    def _(blocks, qtype, in_features):
        return blocks.new_empty((blocks.shape[0], in_features), dtype=torch.float32)


def use_kernel_threads(threads: int, kernels: str = "auto") -> str:
    """Give the process's one native pool (the step's and the kernel's) the cores, and torch's other ops one thread.

    torch's OpenMP pool waits at a barrier for every thread after each of the hundreds of small ops in a decode
    step; with a busy neighbour on the cores, each wait lasts a scheduler time slice. The kernel's pool never
    waits for a thread that has not started, and the small ops gain little from a second thread. The kernels are
    PALAVER_KERNELS's family (auto: the widest this CPU runs), whose name is returned.
    """
    torch.ops.palaver.set_threads(threads)
    torch.set_num_threads(1)
    try:
        return kernel_family_name(torch.ops.palaver.set_kernels(KERNEL_FAMILY_NUMBERS[kernels]))
    except RuntimeError:
        raise ValueError(f"PALAVER_KERNELS={kernels}: this CPU lacks the {kernels} kernels' instructions") from None


def quantise_q8_0(weight: torch.Tensor) -> torch.Tensor:
    """Quantise float weights [out, in] to Q8_0 blocks as ggml does: scale = max |w| / 127 per 32."""
    rows, columns = weight.shape
    groups = weight.detach().float().reshape(rows, columns // BLOCK, BLOCK)
    scale = groups.abs().amax(dim=-1, keepdim=True) / 127
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    values = torch.round(groups * inverse).clamp(-127, 127).to(torch.int8)
    scale_bytes = scale.to(torch.float16).view(torch.uint8)
    return torch.cat([scale_bytes, values.view(torch.uint8)], dim=-1).reshape(rows, -1).contiguous()


class GGUFLinear(nn.Module):
    """y = x W^T + b, with W kept as GGUF blocks and read by the kernel every call."""

    blocks: torch.Tensor  # buffers, declared for type checkers
    bias: torch.Tensor | None

    def __init__(self, blocks: torch.Tensor, qtype: int, in_features: int, bias: torch.Tensor | None = None):
        super().__init__()
        unit = 256 if qtype in SUPER_BLOCK_TYPES else BLOCK
        if qtype not in KERNEL_TYPES or in_features % unit or blocks.shape[1] != stored_row_bytes(qtype, in_features):
            raise ValueError(f"blocks of type {qtype} do not hold rows of {in_features} weights")
        self.register_buffer("blocks", blocks, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.qtype, self.in_features, self.out_features = qtype, in_features, blocks.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.palaver.gguf_linear(x.float(), self.blocks, self.qtype, self.in_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{TYPE_NAMES[self.qtype]}, in_features={self.in_features}, out_features={self.out_features}"


class GGUFEmbedding(nn.Module):
    """Look up token embeddings from GGUF blocks, dequantising only the rows asked for."""

    blocks: torch.Tensor

    def __init__(self, blocks: torch.Tensor, qtype: int, embedding_dim: int):
        super().__init__()
        self.register_buffer("blocks", blocks, persistent=False)
        self.qtype, self.embedding_dim, self.num_embeddings = qtype, embedding_dim, blocks.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = torch.ops.palaver.gguf_dequantise(self.blocks[ids.reshape(-1)], self.qtype, self.embedding_dim)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{TYPE_NAMES[self.qtype]}, {self.num_embeddings}, {self.embedding_dim}"


def join_layers(parts: list[Any]) -> GGUFLinear | None:
    """Make one block layer computing the parts' outputs side by side, or None when they cannot be joined.

    The parts then read views of the joined blocks, so the weights are held once. Parts already laid out one
    after another in memory are joined without a copy.
    """
    first = parts[0]
    if not all(
        isinstance(p, GGUFLinear) and p.bias is None and p.qtype == first.qtype and p.in_features == first.in_features
        for p in parts
    ):
        return None
    rows = sum(p.out_features for p in parts)
    if _laid_out_in_order([p.blocks for p in parts]):
        blocks = first.blocks.new_empty(0).set_(
            first.blocks.untyped_storage(), first.blocks.storage_offset(), (rows, first.blocks.shape[1])
        )
    else:
        blocks = torch.cat([p.blocks for p in parts])
        start = 0
        for part in parts:
            part.blocks, start = blocks[start : start + part.out_features], start + part.out_features
    return GGUFLinear(blocks, first.qtype, first.in_features)


def _laid_out_in_order(tensors: list[torch.Tensor]) -> bool:
    storage = tensors[0].untyped_storage().data_ptr()
    offset = tensors[0].storage_offset()
    for tensor in tensors:
        if (
            not tensor.is_contiguous()
            or tensor.untyped_storage().data_ptr() != storage
            or tensor.storage_offset() != offset
        ):
            return False
        offset += tensor.numel()
    return True


def quantise_linear_layers(model: nn.Module) -> int:
    """Replace every float Linear (and GPT-2 Conv1D) whose inputs split into blocks with a Q8_0 GGUFLinear."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            weight = _linear_weight(child)
            if weight is None or weight.shape[1] % BLOCK:
                continue
            child_bias = getattr(child, "bias", None)
            bias = child_bias.detach().float() if child_bias is not None else None
            setattr(parent, name, GGUFLinear(quantise_q8_0(weight), Q8_0, weight.shape[1], bias))
            replaced += 1
    return replaced


def _linear_weight(module: nn.Module) -> torch.Tensor | None:
    """Return a layer's weight as [out, in], or None when it is not a linear layer."""
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    if type(module).__name__ == "Conv1D":  # GPT-2 stores its weight as [in, out]
        return module.get_parameter("weight").detach().t()
    return None
