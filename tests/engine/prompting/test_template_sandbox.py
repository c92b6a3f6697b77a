"""Chat templates rendered in bounded children: what breaks a bound is stopped fast, and costs the worker nothing."""

import resource
import threading
import time

import pytest
from timing import budget

from palaver.engine.prompting import template_sandbox
from palaver.engine.prompting.chat_template import ChatTemplate
from palaver.engine.prompting.template_sandbox import TemplateBroke, TemplateFailed, render

MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The attacks, and their cousins: each must be stopped within the time bound, in a child.
HOSTILE = {
    "string multiplied": "{{ 'x' * 10**10 }}",
    "namespace doubling": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "centred": "{{ 'x' | center(10**10) }}",
    "list multiplied": "{{ ([1] * 10**9) | length }}",
    "joined": "{{ 'x' * 10**6 ~ 'y' }}{% for i in range(10**6) %}{{ 'x' * 1000 }}{% endfor %}",
    "formatted": "{{ '%0999999999d' % 1 }}",
    "huge power": "{{ (10 ** 1000) ** (10 ** 1000) }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_render_in_the_child_is_the_in_process_render():
    for prompt in (True, False):
        assert render(CHATML, {}, MESSAGES, prompt) == ChatTemplate(CHATML, {}).render(MESSAGES, prompt)
    assert render("{{ bos_token }}{{ tools[0].name }}", {"bos_token": "<s>"}, MESSAGES, True, [{"name": "f"}]) == "<s>f"


@pytest.mark.parametrize("name", HOSTILE)
def test_a_template_that_breaks_a_bound_is_stopped_fast_in_its_child(name):
    before, started = peak_rss_mb(), time.monotonic()
    with pytest.raises(TemplateBroke) as refused:
        render(HOSTILE[name], {}, MESSAGES)
    assert time.monotonic() - started < template_sandbox.SECONDS + budget(5)
    assert any(word in str(refused.value) for word in ("memory", "longer than", "characters", "recursed"))
    assert peak_rss_mb() - before < 64, "the worker's own memory does not grow"
    assert render(CHATML, {}, MESSAGES).endswith("<|im_start|>assistant\n"), "the next render gets a sound child"


def test_a_templates_own_errors_are_told_from_broken_bounds():
    with pytest.raises(TemplateFailed, match="roles must alternate") as failed:
        render("{{ raise_exception('roles must alternate') }}", {}, MESSAGES)
    assert not failed.value.syntax
    with pytest.raises(TemplateFailed, match="does not compile") as failed:
        render("{% if %}", {}, MESSAGES)
    assert failed.value.syntax
    with pytest.raises(TemplateFailed, match="SecurityError"):
        render("{{ ''.__class__.__mro__ }}", {}, MESSAGES)


def test_output_is_capped_by_the_input_it_renders():
    long = [{"role": "user", "content": "y" * 600_000}]
    assert len(render("{{ messages[0].content * 3 }}", {}, long)) == 1_800_000, "four times the input is allowed"
    with pytest.raises(TemplateBroke, match="characters"):
        render("{% for i in range(10) %}{{ messages[0].content }}{% endfor %}", {}, long)


def test_a_slow_render_does_not_hold_up_another(monkeypatch):
    monkeypatch.setattr(template_sandbox, "SECONDS", budget(3.0))  # the spinning render lasts this long
    spinning = threading.Thread(target=lambda: pytest.raises(TemplateBroke, render, HOSTILE["nested ranges"], {}, []))
    spinning.start()
    try:
        started = time.monotonic()
        assert render(CHATML, {}, MESSAGES)
        quick = time.monotonic() - started
        assert spinning.is_alive() and quick < template_sandbox.SECONDS, "a render beside a spinning one is quick"
    finally:
        spinning.join()
