"""The package's rooms and metadata: what each room may import, and every import declared as a dependency."""

import ast
import importlib.metadata
import pkgutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests
from servers import procfile_server, server_env

import palaver.engine
import palaver.web

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "palaver"
# Each room may import itself and the rooms listed: the layers point one way, from the entry points down to core.
ALLOWED = {
    "core": set(),
    "storage": {"core"},
    "engine": {"core"},
    "models": {"core", "engine"},  # getting models: the Hub, the local library; it reads files as the engine does
    "backends": {"core", "engine", "models"},
    "chat": {"core", "storage", "engine", "backends"},
    "web": {"core", "storage", "engine", "models", "backends", "chat"},
    "cli": {"core", "storage", "engine", "models", "backends", "chat"},
}
ENTRY_POINTS = ["app.py", "inference.py", "commons.py", "gunicorn.conf.py"]
ENGINE = PACKAGE / "engine"
# The engine's own rooms, each with the engine rooms it may import: the two paths share what is below them and
# never import each other.
ENGINE_ROOMS = {
    "gguf": set(),
    "decoding": set(),
    "prompting": {"decoding"},
    "scheduling": {"decoding", "prompting"},
    "native": {"gguf", "prompting", "decoding"},
    "torch": {"gguf", "prompting", "decoding"},
}
# The modules beside the rooms: engine.py may import anything; the leaves, with the engine rooms each imports, may
# be imported by any room that may import those rooms itself.
ENGINE_TOP = "engine"
ENGINE_LEAVES = {"machine": set(), "model_sources": set(), "contracts": {"decoding"}}


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
            names.add(node.module)  # and each name as a module of it: `from palaver.engine import machine`
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
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


def engine_crossings(path: Path, allowed: set[str]) -> list[str]:
    """Return the imports in path of engine rooms outside allowed, of leaves needing more, and of engine.py."""
    crossings = []
    for name in imported_names(path):
        parts = name.split(".")
        if parts[:2] != ["palaver", "engine"] or len(parts) < 3:
            continue
        target = parts[2]
        if (target in ENGINE_ROOMS and target not in allowed) or target == ENGINE_TOP:
            crossings.append(f"{path.relative_to(ROOT)} imports {name}")
        elif target in ENGINE_LEAVES and not ENGINE_LEAVES[target] <= allowed:
            crossings.append(f"{path.relative_to(ROOT)} imports {name}, which imports {ENGINE_LEAVES[target]}")
    return crossings


def test_every_engine_room_imports_only_the_engine_rooms_below_it():
    rooms = sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file())
    assert rooms == sorted(ENGINE_ROOMS)
    crossings = []
    for room, allowed in ENGINE_ROOMS.items():
        for path in (ENGINE / room).rglob("*.py"):
            crossings += engine_crossings(path, allowed | {room})
    for leaf, allowed in ENGINE_LEAVES.items():
        crossings += engine_crossings(ENGINE / f"{leaf}.py", allowed)
    assert crossings == []


def test_only_the_entry_modules_sit_beside_the_engine_rooms():
    beside = sorted(p.name for p in ENGINE.iterdir() if p.is_file())
    assert beside == sorted(["__init__.py", f"{ENGINE_TOP}.py", *(f"{leaf}.py" for leaf in ENGINE_LEAVES)])


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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the package's wheel from the checkout, as `pip wheel` does, with the native libraries in it."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."]
    subprocess.run(pip, cwd=ROOT, check=True, timeout=240)
    return next(out.glob("palaver-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_the_package_its_files_and_native_sources_but_no_top_level_modules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"palaver"}
    assert not {"app.py", "commons.py", "inference.py"} & names
    assert {"palaver/web/templates/chat.html", "palaver/web/static/chat.js", "palaver/web/static/style.css"} <= names
    native = {"palaver/_native/csrc/native_step.cpp", "palaver/_native/csrc/blocks.h", "palaver/_native/csrc/build.py"}
    assert native | {"palaver/_native/palaver_native.so", "palaver/_native/palaver_kernels.so"} <= names
    assert "-py3-none-any" not in wheel.name, "compiled code: the wheel is tagged for this platform"


@pytest.mark.slow
@pytest.mark.server
def test_the_wheel_installed_outside_the_checkout_serves_the_page_and_the_native_step(wheel, gguf_chat_model, tmp_path):
    venv, cwd = tmp_path / "venv", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    )
    # The dependencies are borrowed from this environment (offline, and seconds instead of minutes); a path in a
    # .pth file comes after the venv's own site-packages, and its own .pth files (the checkout's editable finder)
    # are not run, so `palaver` can only be the installed wheel.
    borrowed = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "flask").is_dir())
    (Path(site.stdout.strip()) / "borrowed.pth").write_text(f"{borrowed}\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, timeout=120)
    where = (
        "import palaver, palaver.engine.native.binding as n; print(palaver.__file__); print(n.library() is not None)"
    )
    found = subprocess.run([python, "-c", where], cwd=cwd, capture_output=True, text=True, check=True).stdout.split()
    assert Path(found[0]).is_relative_to(venv) and found[1] == "True", found
    loose = subprocess.run([python, "-c", "import app"], cwd=cwd, capture_output=True, text=True)
    assert "No module named 'app'" in loose.stderr

    env = {**server_env(gguf_chat_model, tmp_path / "cache", max_new_tokens="4"), "PYTHONPATH": ""}
    command = f"sh -c 'cd {cwd} && exec {venv}/bin/palaver serve'"
    with procfile_server(env, wait_for="/readyz", timeout=120, command=command) as running:
        page = requests.get(running.url + "/", timeout=30)
        assert page.status_code == 200 and "<textarea" in page.text
        assert requests.get(running.url + "/static/chat.js", timeout=30).status_code == 200
        ready = requests.get(running.url + "/readyz", timeout=30).json()
        reply = requests.post(
            running.url + "/v1/completions",
            json={"model": "chat-llama", "prompt": "Hello", "max_tokens": 3},
            timeout=60,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 3
    assert ready["engine"] == "native" and ready["gguf"]["path"] == "native", ready
    assert reply.json()["system_fingerprint"] == ready["system_fingerprint"]
