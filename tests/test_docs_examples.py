"""The docs' curl examples, run as written against a real server: none is refused for how it sends its body."""

import re
import shlex
import subprocess

import pytest
from servers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)
DOCS_ADDRESS = "http://127.0.0.1:8000"


def curl_commands(text: str) -> list[str]:
    """Return each curl command of a page's shell blocks, whole: continued lines and multi-line quotes joined."""
    commands, current = [], ""
    for block in SHELL_BLOCK.findall(text):
        for line in block.splitlines():
            if not current and not line.startswith("curl "):
                continue
            current += line + "\n"
            try:
                shlex.split(current.replace("\\\n", " "), comments=True)
            except ValueError:  # a quote still open: the body goes on over the next line
                continue
            if not line.endswith("\\"):
                commands.append(current.replace("\\\n", " "))
                current = ""
    return commands


EXAMPLES = [
    pytest.param(command, id=f"{page.stem}-{index}")
    for page in PAGES
    for index, command in enumerate(curl_commands(page.read_text()))
    if re.search(r"(^|\s)(-d|--data\S*)\s", command)
]


def test_every_example_with_a_body_is_found():
    texts = "".join(command for param in EXAMPLES for command in param.values)
    for path in ("/v1/chat/completions", "/v1/messages", "/tokenize", "/detokenize", "/invocations", "/api/chat"):
        assert path in texts, f"no curl example posts to {path}: the extraction missed it"


@pytest.mark.parametrize("command", EXAMPLES)
def test_a_curl_example_is_not_refused_for_its_content_type(server, tmp_path, command):
    args = [arg.replace(DOCS_ADDRESS, server) for arg in shlex.split(command, comments=True)]
    # Run from an empty folder (cookie jars, -O files land there); print the status after whatever the body is.
    ran = subprocess.run(
        [*args, "-s", "--max-time", "60", "-w", "\n%{http_code}"], cwd=tmp_path, capture_output=True, text=True
    )
    status = int(ran.stdout.rsplit("\n", 1)[-1])
    # 404 or 400 are fine here (the docs name a model and ids this server does not have); 415 and 5xx never are.
    assert status != 415 and status < 500, f"{status} for: {command}\n{ran.stdout[-400:]}"
