"""The package's rooms and metadata: what each room may import, and every import declared as a dependency."""

import ast
import importlib.metadata
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import palaver.engine
import palaver.web

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "palaver"
# Each room may import itself and the rooms listed: the layers point one way, from the entry points down to core.
ALLOWED = {
    "core": set(),
    "storage": {"core"},
    "engine": {"core"},
    "backends": {"core", "engine"},
    "chat": {"core", "storage", "engine", "backends"},
    "web": {"core", "storage", "engine", "backends", "chat"},
    "cli": {"core", "storage", "engine", "backends", "chat"},
}
ENTRY_POINTS = ["app.py", "inference.py", "commons.py", "gunicorn.conf.py"]


def modules_of(package) -> list[str]:
    return [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def imports_leave_out(modules: list[str], forbidden: str) -> None:
    code = (
        f"import importlib, sys\nfor name in {modules!r}: importlib.import_module(name)\n"
        f"assert {forbidden!r} not in sys.modules, {forbidden!r}"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def imported_names(path: Path) -> set[str]:
    """Return every module a file imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_every_room_imports_only_the_rooms_below_it():
    assert sorted(ALLOWED) == sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    crossings = []
    for room, allowed in ALLOWED.items():
        for path in (PACKAGE / room).rglob("*.py"):
            for name in imported_names(path):
                parts = name.split(".")
                if parts[0] == "palaver" and len(parts) > 1 and parts[1] not in allowed | {room}:
                    crossings.append(f"{path.relative_to(ROOT)} imports {name}")
    assert crossings == []


def test_every_module_has_a_test_file_of_its_name():
    modules = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and "migrations" not in path.parts
    ]
    untested = [str(m) for m in modules if not (ROOT / "tests" / m.parent / f"test_{m.name}").is_file()]
    assert untested == [], "tests/<room>/test_<module>.py mirrors palaver/<room>/<module>.py"


def test_no_engine_module_imports_flask():
    imports_leave_out(modules_of(palaver.engine), "flask")


def test_no_web_module_imports_torch():
    imports_leave_out(modules_of(palaver.web), "torch")


def test_every_module_imported_comes_from_a_declared_dependency():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = declared["dependencies"] + declared["optional-dependencies"]["mlflow"]
    names = {requirement.split("==")[0].split("[")[0].lower().replace("_", "-") for requirement in wanted}
    distributions = importlib.metadata.packages_distributions()
    undeclared = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / name for name in ENTRY_POINTS)]:
        for name in imported_names(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in {"palaver", "app", "commons", "inference"}:
                continue
            providers = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
            if not providers & names:
                undeclared.append(f"{path.relative_to(ROOT)} imports {top} ({', '.join(sorted(providers))})")
    assert undeclared == [], "declare these in pyproject.toml and requirements.txt"


def test_the_projects_dependencies_are_the_pins_paas_buildpacks_install():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    pinned = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(declared) == sorted(pinned)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["mlflow"]
    assert set(extra) <= {
        line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
    }
