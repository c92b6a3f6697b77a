"""Replies as Markdown: rendered on the server, with raw HTML escaped and only http, https and mailto links."""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
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


def drop_unchecked_links(state: Any) -> None:
    """Keep as plain text the links markdown-it never checks: an empty destination, as in [x]()."""
    for block in state.tokens:
        if not block.children:
            continue
        kept, dropping = [], []
        for token in block.children:
            if token.type == "link_open":
                dropping.append(not safe_link(token.attrGet("href") or ""))
                if dropping[-1]:
                    continue
            elif token.type == "link_close" and dropping:
                if dropping.pop():
                    continue
            kept.append(token)
        block.children = kept


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
    renderer.core.ruler.push("drop_unchecked_links", drop_unchecked_links)
    renderer.add_render_rule("link_open", render_link_open)
    renderer.add_render_rule("fence", render_fence)
    renderer.add_render_rule("code_block", render_fence)
    return renderer


RENDERER = build_renderer()
CACHE_BYTES = 16 * 1024 * 1024  # rendered replies kept; a page of 50 turns is well under 1 MB of them


class RenderCache:
    """Keep rendered replies, least recently used out first, within a bound on their text's size."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self._rendered: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, text: str) -> str:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            if (found := self._rendered.get(key)) is not None:
                self._rendered.move_to_end(key)
                return found
        rendered = RENDERER.render(text)  # outside the lock: renders of different replies run side by side
        with self._lock:
            if key not in self._rendered:
                self._rendered[key] = rendered
                self.size += len(rendered)
            while self.size > self.max_bytes and self._rendered:
                self.size -= len(self._rendered.popitem(last=False)[1])
        return rendered


CACHE = RenderCache(CACHE_BYTES)


def render_markdown(text: str) -> Markup:
    """Render a reply's Markdown as HTML that is safe to insert into the page, once per distinct reply."""
    return Markup(CACHE.render(text))  # noqa: S704 - markdown-it escapes everything, with raw HTML off
