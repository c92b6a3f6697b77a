"""The package's build step: compile the native libraries into the package, and ship them with their sources.

Everything else about the package is in pyproject.toml; this file only adds what a declaration cannot say.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

CSRC = Path(__file__).resolve().parent / "csrc"


def compile_native() -> list[Path]:
    """Run csrc/build.py's build into palaver/_native/; return the libraries built (none without a compiler)."""
    spec = importlib.util.spec_from_file_location("palaver_csrc_build", CSRC / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module.build_what_can_be()


class BuildWithNative(build_py):
    """Build the Python package, then add the native libraries and the sources they were compiled from."""

    def run(self) -> None:
        built = compile_native()  # an up-to-date library is kept as it is: make's and this step's are the same
        if self.editable_mode:  # the checkout's palaver/_native/ is the installed package's
            super().run()
            return
        target = Path(self.build_lib) / "palaver"
        shutil.rmtree(target, ignore_errors=True)  # a module moved or deleted since the last build must not ship
        super().run()
        (target / "_native" / "csrc").mkdir(parents=True, exist_ok=True)
        for library in built:
            self.copy_file(str(library), str(target / "_native" / library.name))
        for source in sorted([CSRC / "build.py", *CSRC.glob("*.cpp"), *CSRC.glob("*.h")]):
            self.copy_file(str(source), str(target / "_native" / "csrc" / source.name))


class WithNativeLibraries(Distribution):
    """Say the wheel holds compiled code, so it is tagged for this platform and Python, not as pure Python."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithNative}, distclass=WithNativeLibraries)
