"""Compile the native libraries: the native step, which needs no torch, and the GGUF block kernels for torch.

Usage: python csrc/build.py   (make run, make test, bin/post_compile and the package's build step call it)

Both go into the package, palaver/_native/, where the engine loads them from in a checkout and in an installed wheel.
The native step's library holds the process's one thread pool; the kernels' library links against it for that pool,
so the native step is built first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADERS = tuple(sorted(path.name for path in HERE.glob("*.h")))
WARNINGS = ["-Wall", "-Wextra", "-Wpedantic"]  # the sanitizer test builds the same sources with -Werror
CPU = ["-mavx2", "-mfma", "-mf16c"]
# In a checkout, the package beside csrc/; in a wheel, which ships this script in palaver/_native/csrc/, its parent.
OUTPUT = HERE.parent if HERE.parent.name == "_native" else HERE.parent / "palaver" / "_native"


@dataclass(frozen=True)
class Library:
    """One shared library: its source, where it goes, and whether it links against torch."""

    source: str
    name: str
    with_torch: bool
    links: tuple[str, ...] = ()  # libraries of ours it links against, found beside it when it loads

    @property
    def path(self) -> Path:
        return OUTPUT / self.name

    def compile_command(self, source: Path, target: Path) -> list[str]:
        """Return the compiler call: AVX2, FMA and F16C, warnings as errors, torch's headers where it needs them."""
        command = [os.environ.get("CXX", "c++"), "-O3", "-std=c++20", "-shared", "-fPIC", *CPU, *WARNINGS, f"-I{HERE}"]
        command.append(f"-Wl,-soname,{self.name}")
        ours = [f"-L{OUTPUT}", *(f"-l:{name}" for name in self.links), "-Wl,-rpath,$ORIGIN"] if self.links else []
        if not self.with_torch:
            return [*command, str(source), "-o", str(target), *ours, "-lpthread"]
        import torch
        from torch.utils import cpp_extension

        abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
        # torch's own headers are not ours to warn about.
        includes = [f"-isystem{path}" for path in cpp_extension.include_paths()]
        includes.append(f"-isystem{sysconfig.get_paths()['include']}")
        libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
        rpaths = [f"-Wl,-rpath,{path}" for path in cpp_extension.library_paths()]
        return [
            *command,
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *includes,
            str(source),
            "-o",
            str(target),
            *ours,
            *libraries,
            *rpaths,
            "-lc10",
            "-ltorch_cpu",
        ]

    def fingerprint(self) -> str:
        """Name what the library depends on: its sources, torch's version where it links it, the compiler call."""
        digest = hashlib.sha256((HERE / self.source).read_bytes())
        for header in HEADERS:
            digest.update((HERE / header).read_bytes())
        if self.with_torch:
            import torch

            digest.update(torch.__version__.encode())
        digest.update(" ".join(self.compile_command(Path("in"), Path("out"))).encode())
        return digest.hexdigest()

    def build(self) -> Path:
        """Build the library unless an up-to-date one is there; return its path."""
        stamp = self.path.with_suffix(".stamp")
        wanted = self.fingerprint()
        if self.path.is_file() and stamp.is_file() and stamp.read_text() == wanted:
            return self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.path.parent) as staging:
            target = Path(staging) / self.name
            subprocess.run(self.compile_command(HERE / self.source, target), check=True)
            shutil.move(target, self.path)  # a running server never sees half a library
        stamp.write_text(wanted)
        return self.path


NATIVE_STEP = Library("native_step.cpp", "palaver_native.so", with_torch=False)
KERNELS = Library("gguf_linear.cpp", "palaver_kernels.so", with_torch=True, links=(NATIVE_STEP.name,))
LIBRARY = KERNELS.path  # the block kernels, as quantized.py loads them


def build() -> Path:
    """Build both libraries, the native step's first (the kernels link against it); return the kernels' path."""
    NATIVE_STEP.build()
    return KERNELS.build()


def build_what_can_be() -> list[Path]:
    """Build each library this machine can build; say why of any other, which the server then serves without."""
    built = []
    for library, without in ((NATIVE_STEP, "GGUF models run through transformers"), (KERNELS, "float32")):
        try:
            built.append(library.build())
            print(f"built {library.path}")
        except (ImportError, OSError, subprocess.CalledProcessError) as exc:
            # No compiler (a slim runtime image), or no torch where the package is built in isolation: the server
            # says so once and serves another way.
            print(f"{library.name} was not built ({exc}); without it, {without}", file=sys.stderr)
    return built


if __name__ == "__main__":
    build_what_can_be()
