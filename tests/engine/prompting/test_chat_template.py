"""Chat templates rendered with jinja2 alone: transformers' globals and filters, inside a sandbox."""

import jinja2
import pytest

from palaver.engine.prompting.chat_template import ChatTemplate

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


def test_tools_reach_the_template_as_transformers_passes_them(chat_model):
    from tiny_models import TOOLS_TEMPLATE
    from transformers import AutoTokenizer

    from palaver.core.tool_calls import template_messages
    from palaver.core.types import Message, ToolCall

    messages = template_messages(
        [
            Message("user", "time?"),
            Message("assistant", "", tool_calls=(ToolCall("call_1", "get_time", '{"zone": "UTC"}'),)),
            Message("tool", "12:00", tool_call_id="call_1"),
        ]
    )
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    ours = ChatTemplate(TOOLS_TEMPLATE, {}).render(messages, True, tools)
    reference = AutoTokenizer.from_pretrained(chat_model)
    theirs = reference.apply_chat_template(
        messages, tools=tools, chat_template=TOOLS_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert ours == theirs and '"name": "get_time"' in ours
    assert render("{{ tools is none }}") == "True", "no tools: the template sees none"
