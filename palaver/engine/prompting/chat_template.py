"""Render a model's Jinja chat template as transformers' apply_chat_template does, with jinja2 alone.

Compile and render only inside template_sandbox's child processes: jinja folds constants at compile time, so even
compiling a hostile template can take all memory.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Every binary operator is intercepted, which keeps jinja from folding `'x' * 10**10` while compiling.
ARITHMETIC = frozenset({"+", "-", "*", "/", "//", "%", "**"})


class GenerationTag(jinja2.ext.Extension):
    """Accept {% generation %}...{% endgeneration %}, which marks assistant text for training; here it renders as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return str(caller())


class TemplateNamespace(jinja2.utils.Namespace):
    """A namespace that refuses underscore names, so a template cannot reach Python's internals through one."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature trick)
        self, rest = args[0], args[1:]
        attributes = dict(*rest, **kwargs)
        for name in attributes:
            TemplateNamespace.check(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        TemplateNamespace.check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template may not set {name!r} on a namespace")


class OutputTooLong(Exception):
    """A render wrote more text than its bound."""


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with its operators intercepted, so that none of them runs at compile time."""

    intercepted_binops = ARITHMETIC


def raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def tojson(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
    # Jinja's own tojson escapes HTML characters, which would change what the model reads.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    """A compiled chat template, in the sandbox and with the globals that transformers gives templates."""

    def __init__(self, source: str, special_tokens: dict[str, Any]):
        environment = BoundedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
        )
        environment.filters["tojson"] = tojson
        environment.globals["raise_exception"] = raise_exception
        environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
        environment.globals["dict"] = lambda *args, **kwargs: dict(*args, **kwargs)
        environment.globals["namespace"] = TemplateNamespace
        self.source = source
        self.template = environment.from_string(source)
        self.special_tokens = dict(special_tokens)

    def render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
        limit: int | None = None,
        variables: dict[str, Any] | None = None,
    ) -> str:
        """Render messages (and the tools they may call), ending with the assistant's header when asked.

        limit: the most characters the render may write; past it, OutputTooLong. variables: what else the template
        reads (enable_thinking).
        """
        pieces, written = [], 0
        for piece in self.template.generate(
            # As transformers does, a key whose value is None is left out: templates test for keys, not values.
            messages=[{key: value for key, value in message.items() if value is not None} for message in messages],
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **(variables or {})},
        ):
            written += len(piece)
            if limit is not None and written > limit:
                raise OutputTooLong(f"it wrote more than {limit:,} characters")
            pieces.append(piece)
        return "".join(pieces)
