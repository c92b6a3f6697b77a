"""The docs: generated tables are current, links, anchors and code paths resolve, and named architectures run."""

import ast
import re

import pytest
from servers import ROOT

from docs.tables import TABLES, region

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """Return the anchors GitHub makes from a page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("name", TABLES)
def test_generated_tables_are_current(name):
    path, render = TABLES[name]
    found = region(name).search(path.read_text())
    assert found and render() in found[0], f"run python -m docs.tables to update {path.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_and_anchors_resolve(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name} links to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{page.name} links to missing anchor {target}"


# A backticked span is a repository path when it is one word of path characters with a `/` in it (so no URLs or
# `models:/` URIs, no `<id>` or `…` placeholders, no `$VARIABLES`), not a path on a user's machine (`/models/…`,
# `~/.cache/…`) or a hidden build output (`.venv/…`), and either ends in a source extension or starts with a
# top-level entry of the checkout (`bin/post_compile`, `tests/cli/`). It must exist from the checkout's root or,
# shortened by its room as the docs write them (`web/app.py`, `engine/test_native.py`), from palaver/ or tests/.
SPAN = re.compile(r"`([^`\n]+)`")
PATH_LIKE = re.compile(r"[\w.-]+(?:/[\w.-]+)*/?")
EXTENSIONS = {".py", ".md", ".cpp", ".h", ".c", ".sh", ".toml", ".txt", ".cfg", ".json", ".yml", ".yaml", ".html"}
EXTENSIONS |= {".css", ".js", ".ini", ".jinja", ".sql"}
TOP_LEVEL = {entry.name for entry in ROOT.iterdir() if not entry.name.startswith(".")}
SHORTENED_FROM = [ROOT, ROOT / "palaver", ROOT / "tests"]
BUILT = ("csrc/build/",)  # written by python csrc/build.py (make does it), never in a clean clone


def code_paths(text: str) -> list[str]:
    """Return the backticked spans of a page, outside code blocks, that name a file or folder of the checkout."""
    paths = []
    for span in SPAN.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        if "/" not in span or span.startswith((".", "/")) or not PATH_LIKE.fullmatch(span) or span in BUILT:
            continue
        if span.partition("/")[0] in TOP_LEVEL or any(span.endswith(extension) for extension in EXTENSIONS):
            paths.append(span)
    return paths


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_code_paths_exist(page):
    paths = code_paths(page.read_text())
    missing = [path for path in paths if not any((base / path).exists() for base in SHORTENED_FROM)]
    assert not missing, f"{page.name} names paths that are not in the checkout: {missing}"


def test_code_paths_are_found():
    found = {path for page in PAGES for path in code_paths(page.read_text())}
    assert {"palaver/core/validation.py", "tests/test_fuzz.py", "csrc/blocks.h", "bench/engines.py"} <= found
    assert {"web/api/schemas.py", "engine/native/test_binding.py", "bin/post_compile", "docs/screenshots/"} <= found
    assert not {"/models/a.gguf", "models:/NAME/VERSION", "palaver/<room>/<module>.py", "csrc/build/"} & found


# The architectures the native step serves, as the docs write them: a code name missing here fails the test below.
NATIVE_NAMES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "phi3": "Phi-3", "gemma3": "Gemma 3"}
FAMILIES = "Llama|Qwen|Phi|Gemma|Mistral|Mixtral|Falcon|DeepSeek|OLMo|Granite|StarCoder|Baichuan"
MODEL = rf"\b(?:{FAMILIES})(?:-?\d+(?:\.\d+)?)?(?: \d+(?:\.\d+)?\b)?"  # Llama, Qwen2, Phi-3, Gemma 3
NAMED = rf"{MODEL}(?: \([^()]*\))?"  # a name may carry a remark in parentheses: "Phi-3 (with LongRoPE)"
LISTING = re.compile(rf"{NAMED}(?:, {NAMED})*,? (?:and|or) {NAMED}")


def assigned(node: ast.Assign | ast.AnnAssign) -> str:
    """Return the name a module-level assignment sets (empty for a tuple or several targets)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return targets[0].id if len(targets) == 1 and isinstance(targets[0], ast.Name) else ""


def native_architectures() -> set[str]:
    """Return the architectures the code's native step serves: the keys of its one ARCHITECTURES table."""
    tables = [
        ast.literal_eval(node.value)
        for path in (ROOT / "palaver" / "engine").rglob("*.py")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and assigned(node) == "ARCHITECTURES"
    ]
    assert len(tables) == 1, "expected one ARCHITECTURES table (the native step's) under palaver/engine"
    unnamed = set(tables[0]) - set(NATIVE_NAMES)
    assert not unnamed, f"the native step serves {unnamed}: add how the docs write them to NATIVE_NAMES"
    return set(tables[0])


def native_listings(text: str) -> list[str]:
    """Return each list of model architectures in a sentence of the page that speaks of the native step."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    sentences = re.split(r"(?<=[.!?:;])\s+|\n|\|", prose)
    talk = re.compile(r"native step|natively", re.I)
    return [listing[0] for sentence in sentences if talk.search(sentence) for listing in LISTING.finditer(sentence)]


def named_architectures(listing: str) -> set[str]:
    """Return the architecture names of one listing, without their remarks."""
    return {re.sub(r" \(.*", "", name[0]) for name in re.finditer(NAMED, listing)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_native_architectures_named_match_the_code(page):
    expected = {NATIVE_NAMES[architecture] for architecture in native_architectures()}
    wrong = [listing for listing in native_listings(page.read_text()) if named_architectures(listing) != expected]
    assert not wrong, f"{page.name} says the native step serves {wrong}; it serves {sorted(expected)}"


def test_native_architectures_are_named_where_users_look():
    for page in (ROOT / "README.md", ROOT / "docs" / "engine.md", ROOT / "docs" / "configuration.md"):
        assert native_listings(page.read_text()), f"{page.name} no longer lists the native step's architectures"


def test_the_architecture_picture_names_every_room_and_module():
    picture = re.search(r"```\n(.*?)```", (ROOT / "docs" / "architecture.md").read_text(), re.S)
    assert picture, "docs/architecture.md has lost its picture"
    rooms = [path for path in sorted((ROOT / "palaver").iterdir()) if (path / "__init__.py").is_file()]
    names = [f"{room.name}/" for room in rooms]
    for room in rooms:  # a room's own modules, and its folders of modules (their insides may go unnamed)
        names += [path.name for path in sorted(room.glob("*.py")) if path.name != "__init__.py"]
        names += [f"{path.name}/" for path in sorted(room.iterdir()) if path.is_dir() and any(path.rglob("*.py"))]
    missing = [name for name in names if not re.search(rf"(?<![\w/]){re.escape(name)}", picture[1])]
    assert not missing, f"docs/architecture.md's picture does not name {missing}: redraw it from the code"
