"""`palaver pull`, `palaver models ls` and `palaver models rm` against a local Hub; a pulled model described offline."""

import re

from click.testing import CliRunner
from fake_hub import variant

from palaver.cli.main import main


def run(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def table(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def test_pull_ls_and_rm_manage_the_library_and_a_pulled_model_serves_offline(hub, hub_home, gguf_chat_model):
    tiny = gguf_chat_model.read_bytes()
    hub.publish("test/cli-GGUF", {"tiny-Q4_0.gguf": tiny, "tiny-Q8_0.gguf": variant(tiny, 1)})
    cache = {"PALAVER_CACHE_DIR": str(hub_home)}
    empty = run("models", "ls", **cache)
    assert empty.exit_code == 0 and "no model pulled yet" in empty.output
    pulled = run("pull", "hf.co/test/cli-GGUF:Q4_0", **cache)  # as Ollama names it, too
    assert pulled.exit_code == 0, pulled.output
    assert "pulled test/cli-GGUF:Q4_0 (" in pulled.output and "PALAVER_MODEL=hf:test/cli-GGUF:Q4_0" in pulled.output
    wrong = run("pull", "hf:test/cli-GGUF:Q5_K_M", **cache)
    assert wrong.exit_code == 1 and "no file for the quantisation Q5_K_M; it has Q4_0, Q8_0" in wrong.output

    listed = table(run("models", "ls", **cache).output)
    assert listed[0] == ["NAME", "SOURCE", "SIZE", "QUANT", "ARCHITECTURE", "NATIVE", "LAST USED"]
    name, source, _, quantisation, architecture, native, _ = listed[1]
    assert (name, source) == ("test/cli-GGUF:Q4_0", "hf:test/cli-GGUF:Q4_0")
    assert (quantisation, architecture, native) == ("Q4_0", "llama", "yes")

    offline = {**cache, "PALAVER_MODELS": "tiny=hf:test/cli-GGUF:Q4_0,embedded", "HF_HUB_OFFLINE": "1"}
    described = run("models", "--model", "tiny", **offline)
    assert described.exit_code == 0, described.output
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in described.output.splitlines() if "  " in line)
    assert rows["model"] == "tiny" and rows["path"] == "native" and "snapshots" in rows["source"]

    refused = run("models", "rm", "test/cli-GGUF:Q4_0", **offline)
    assert refused.exit_code == 1 and "is configured" in refused.output
    removed = run("models", "rm", "test/cli-GGUF:Q4_0", **cache)
    assert removed.exit_code == 0 and "removed test/cli-GGUF:Q4_0" in removed.output
    assert "no model pulled yet" in run("models", "ls", **cache).output
    suggested = [row for row in table(run("models", "ls", "--suggested").output) if len(row) == 3]
    assert suggested[0] == ["MODEL", "PARAMETERS", "SOURCE"] and all(r[2].startswith("hf:") for r in suggested[1:])
