"""Compile the GGUF block kernels into a library that torch.ops.load_library can load.

Usage: python csrc/build.py   (make run, make test and bin/post_compile call it)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch
from torch.utils import cpp_extension

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "gguf_linear.cpp"
LIBRARY = HERE / "build" / "palaver_kernels.so"
STAMP = LIBRARY.with_suffix(".stamp")  # the source and torch it was built from


def fingerprint() -> str:
    """Name what the library depends on: the source, torch's version and the compiler flags."""
    digest = hashlib.sha256(SOURCE.read_bytes() + (HERE / "chunk_pool.h").read_bytes() + (HERE / "blocks.h").read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(" ".join(compile_command(Path("in"), Path("out"))).encode())
    return digest.hexdigest()


def compile_command(source: Path, target: Path) -> list[str]:
    """Return the compiler call: AVX2 and FMA, torch's headers and libraries, its C++ ABI."""
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    includes += [f"-I{sysconfig.get_paths()['include']}", f"-I{HERE}"]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
    rpaths = [f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()]
    return [
        os.environ.get("CXX", "c++"),
        "-O3",
        "-std=c++20",
        "-shared",
        "-fPIC",
        "-mavx2",
        "-mfma",
        "-mf16c",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        *includes,
        str(source),
        "-o",
        str(target),
        *libraries,
        *rpaths,
        "-lc10",
        "-ltorch_cpu",
    ]


def build() -> Path:
    """Build the library unless an up-to-date one is there; return its path."""
    wanted = fingerprint()
    if LIBRARY.is_file() and STAMP.is_file() and STAMP.read_text() == wanted:
        return LIBRARY
    LIBRARY.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=LIBRARY.parent) as staging:
        target = Path(staging) / LIBRARY.name
        subprocess.run(compile_command(SOURCE, target), check=True)
        shutil.move(target, LIBRARY)  # a running server never sees half a library
    STAMP.write_text(wanted)
    return LIBRARY


if __name__ == "__main__":
    try:
        print(f"built {build()}")
    except (OSError, subprocess.CalledProcessError) as exc:
        # No compiler (a slim runtime image): the server says so once and serves float32 weights.
        print(f"the GGUF kernels were not built ({exc}); Palaver will serve float32 weights", file=sys.stderr)
