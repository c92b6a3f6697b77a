"""The package's layers and metadata: the web layer never imports torch, the engine never imports Flask."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import palaver.engine
import palaver.web

ROOT = Path(__file__).resolve().parent.parent


def modules_of(package) -> list[str]:
    return [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def imports_leave_out(modules: list[str], forbidden: str) -> None:
    code = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
        f"assert {forbidden!r} not in sys.modules, {forbidden!r}"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def test_no_engine_module_imports_flask():
    imports_leave_out(modules_of(palaver.engine), "flask")


def test_no_web_module_imports_torch():
    imports_leave_out(modules_of(palaver.web), "torch")


def test_the_projects_dependencies_are_the_pins_paas_buildpacks_install():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pinned = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(declared) == sorted(pinned)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mlflow"]
    assert set(extra) <= {
        line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
    }
