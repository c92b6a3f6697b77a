"""Replies as Markdown: rendered on the server, with raw HTML escaped and only http, https and mailto links."""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup

SAFE_SCHEMES = ("http:", "https:", "mailto:")
LINK_REL = "noopener noreferrer nofollow"
LANGUAGE_NAME = re.compile(r"[\w+#.-]{1,32}")


def safe_link(url: str) -> bool:
    """Allow absolute http, https and mailto links only: no javascript:, data:, or relative URLs."""
    return url.strip().lower().startswith(SAFE_SCHEMES)


def render_link_open(renderer: Any, tokens: list, index: int, options: Any, env: Any) -> str:
    token = tokens[index]
    token.attrSet("rel", LINK_REL)
    token.attrSet("target", "_blank")
    return str(renderer.renderToken(tokens, index, options, env))


def render_fence(renderer: Any, tokens: list, index: int, options: Any, env: Any) -> str:
    """Render a fenced block with its language shown above it, for the page's copy button to sit beside."""
    token = tokens[index]
    words = token.info.split(maxsplit=1)
    language = words[0] if words and LANGUAGE_NAME.fullmatch(words[0]) else ""
    label = language or "text"
    code_class = f' class="language-{language}"' if language else ""
    return (
        f'<figure class="code"><figcaption>{label}</figcaption>'
        f"<pre><code{code_class}>{escapeHtml(token.content)}</code></pre></figure>\n"
    )


def build_renderer() -> MarkdownIt:
    # commonmark plus tables and strikethrough; html=False escapes every tag a reply holds.
    renderer = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    renderer.enable(["table", "strikethrough"])
    renderer.disable("image")  # an image would load from anywhere the model names; it stays text
    renderer.validateLink = safe_link  # type: ignore[method-assign]  # markdown-it documents this override
    renderer.add_render_rule("link_open", render_link_open)
    renderer.add_render_rule("fence", render_fence)
    renderer.add_render_rule("code_block", render_fence)
    return renderer


RENDERER = build_renderer()


def render_markdown(text: str) -> Markup:
    """Render a reply's Markdown as HTML that is safe to insert into the page."""
    return Markup(RENDERER.render(text))  # noqa: S704 - markdown-it escapes everything, with raw HTML off
