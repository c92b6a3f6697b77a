"""Chat templates rendered with jinja2 alone: transformers' globals and filters, inside a sandbox."""

import jinja2
import pytest

from palaver.engine.chat_template import ChatTemplate

MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def render(source, messages=MESSAGES, prompt=True):
    return ChatTemplate(source, {"eos_token": "</s>", "bos_token": "<s>"}).render(messages, prompt)


def test_templates_get_transformers_globals_filters_and_whitespace_rules():
    source = (
        "{{ bos_token }}{% for m in messages %}\n  {{ m.role }}: {{ m.content | tojson }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}{% generation %}assistant:{% endgeneration %}{% endif %}"
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
        "{{ strftime_now('%Y') | length }}"
    )
    # trim_blocks and lstrip_blocks, as in transformers: a block's own line leaves no blank line behind.
    assert render(source) == '<s>  user: "Hi"</s>\n  assistant: "Hello"</s>\nassistant:24'
    assert render(source, prompt=False).endswith("</s>\n24")
    assert render("{{ messages[0].content | tojson }}", [{"role": "user", "content": "é<b>"}]) == '"é<b>"'


def test_a_template_may_raise_its_own_error():
    with pytest.raises(jinja2.TemplateError, match="only user and assistant"):
        render("{{ raise_exception('only user and assistant') }}")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.pop() }}",  # the messages are read-only
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
        "{{ namespace(__init__=1) }}",
    ],
)
def test_the_sandbox_keeps_a_template_from_pythons_internals(attack):
    with pytest.raises(jinja2.exceptions.SecurityError):
        render(attack)
