"""Hostile chat templates: generated ones against the bounded renderer, and triggered ones against a real server."""

import resource
import threading
import time
from pathlib import Path

import pytest
import requests
import tiny_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import client_at, procfile_server, server_env
from timing import budget

from palaver.engine.prompting import template_sandbox
from palaver.engine.prompting.template_sandbox import TemplateBroke, TemplateFailed

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BIG = st.sampled_from(["10**10", "10**9", "100000", "2**40", "-1", "0", "10**1000"])
# Expressions that grow, loops that spin, and their combinations: what a hostile model file could carry.
EXPRESSIONS = st.one_of(
    BIG.map(lambda n: f"'x' * {n}"),
    BIG.map(lambda n: f"[1, 2] * {n}"),
    BIG.map(lambda n: f"'x' | center({n})"),
    BIG.map(lambda n: f"'%0{n.replace('*', '')}d' % 1"),
    BIG.map(lambda n: f"'{{:>{n.replace('*', '')}}}'.format(1)"),
    BIG.map(lambda n: f"range({n}) | join(',')"),
    BIG.map(lambda n: f"'a\\tb'.expandtabs({n})"),
    BIG.map(lambda n: f"(10 ** 100) ** ({n})"),
    st.just("messages[0].content * 10**8"),
)
STATEMENTS = st.recursive(
    EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}"),
    lambda inner: st.one_of(
        st.tuples(BIG, inner).map(lambda t: f"{{% for i in range({t[0]}) %}}{t[1]}{{% endfor %}}"),
        st.tuples(inner, inner).map(lambda t: t[0] + t[1]),
        st.just("{% set ns = namespace(s='ab') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
        st.just("{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 2) }}{% endmacro %}{{ f(0) }}"),
    ),
    max_leaves=4,
)
CHATML_ASSISTANT = "<|im_start|>assistant\n"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(source=STATEMENTS)
def test_generated_hostile_templates_are_refused_cleanly_within_their_bounds(source):
    """Every render gives text within the output bound, or a refusal; the worker's own memory never grows."""
    template_sandbox.SECONDS = 0.5  # each spin costs half a second, not two (set back below)
    before, started = peak_rss_mb(), time.monotonic()
    try:
        text = template_sandbox.render(source, {}, [{"role": "user", "content": "hi"}])
        assert len(text) <= template_sandbox.OUTPUT_CHARS
    except (TemplateBroke, TemplateFailed) as refused:
        assert str(refused) and "Traceback" not in str(refused)
    finally:
        template_sandbox.SECONDS = 2.0
    assert time.monotonic() - started < budget(8)
    assert peak_rss_mb() - before < 64


# Fine on a sample conversation, so it loads; hostile when a message asks. No BOS of its own: the file says add it.
TRIGGERED = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% set last = messages[-1]['content'] %}"
    "{% if last == 'grow' %}{{ 'x' * 10**10 }}{% endif %}"
    "{% if last == 'double' %}{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s }}{% endif %}"
    "{% if last == 'spin' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def worker_peak_rss_mb(master: int) -> float:
    """Return the peak RSS of the gunicorn master's first worker, from /proc."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


@pytest.fixture(scope="module")
def template_server(chat_model, tmp_path_factory):
    """A server on a GGUF file that says add_bos_token and carries the triggered template."""
    root = tmp_path_factory.mktemp("templates")
    path = tiny_models.build_gguf_llama(chat_model, root / "triggered.gguf", template=TRIGGERED, add_bos=True)
    with procfile_server(
        server_env(path, root, max_new_tokens="4"), wait_for="/readyz", timeout=120, wait_for_exit=False
    ) as running:
        yield running
        assert "Traceback" not in running.log()


@pytest.mark.server
def test_the_chat_prompt_starts_with_the_bos_the_file_asks_for(template_server, chat_model):
    from transformers import AutoTokenizer

    bos = AutoTokenizer.from_pretrained(chat_model).bos_token_id
    body = {"model": "triggered", "messages": [{"role": "user", "content": "hello"}]}
    tokens = requests.post(template_server.url + "/tokenize", json=body, timeout=30).json()["tokens"]
    assert tokens[0] == bos and tokens.count(bos) == 1


@pytest.mark.server
@pytest.mark.parametrize("trigger", ["grow", "double", "spin"])
def test_a_template_that_breaks_a_bound_is_a_fast_400_and_stalls_nobody(template_server, trigger):
    baseline = worker_peak_rss_mb(template_server.pid)
    outcome: dict = {}

    def hostile() -> None:
        started = time.monotonic()
        body = {"model": "triggered", "messages": [{"role": "user", "content": trigger}]}
        outcome["response"] = client_at("127.0.0.2").post(
            template_server.url + "/v1/chat/completions", json=body, timeout=120
        )
        outcome["seconds"] = time.monotonic() - started

    attacker = threading.Thread(target=hostile)
    attacker.start()
    other, latencies = client_at("127.0.0.3"), []
    while attacker.is_alive():  # another user's short completions, for as long as the hostile render lasts
        started = time.monotonic()
        body = {"model": "triggered", "prompt": "hello", "max_tokens": 2}
        assert other.post(template_server.url + "/v1/completions", json=body, timeout=120).status_code == 200
        latencies.append(time.monotonic() - started)
    attacker.join()
    error = outcome["response"].json()["error"]
    assert outcome["response"].status_code == 400 and "chat template broke a bound" in error["message"]
    assert error["param"] == "messages" and outcome["seconds"] < template_sandbox.SECONDS + budget(10)
    assert max(latencies) < budget(template_sandbox.SECONDS), "no completion waited on the template"
    assert worker_peak_rss_mb(template_server.pid) - baseline < 200, "the worker's memory stays bounded"
