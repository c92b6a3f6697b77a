"""Replies rendered as Markdown on the server: what they may hold, and everything they may not."""

import re
from html.parser import HTMLParser

from hypothesis import example, given, settings
from hypothesis import strategies as st
from tiny_models import MARKDOWN_REPLY_PIECES

from palaver.web.markdown import LINK_REL, RenderCache, render_markdown

ALLOWED_TAGS = {
    "p", "em", "strong", "s", "ul", "ol", "li", "a", "code", "pre", "figure", "figcaption", "table", "thead",
    "tbody", "tr", "th", "td", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "br",
}  # fmt: skip


class Elements(HTMLParser):
    """Collect every element and its attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def assert_safe(html: str) -> None:
    for tag, attrs in Elements(html).found:
        assert tag in ALLOWED_TAGS, f"<{tag}> in {html!r}"
        assert not [name for name in attrs if name.startswith("on") or name in ("style", "src")], (tag, attrs)
        if tag == "a":
            assert attrs["href"].startswith(("http:", "https:", "mailto:")) and attrs["rel"] == LINK_REL
        if tag == "code" and "class" in attrs:
            assert re.fullmatch(r"language-[\w+#.-]+", attrs["class"]), attrs


def test_lists_tables_code_and_links_render():
    html = str(render_markdown("".join(MARKDOWN_REPLY_PIECES)))
    tags = [tag for tag, _ in Elements(html).found]
    assert {"strong", "ul", "li", "table", "th", "td", "figure", "figcaption", "pre", "code", "a"} <= set(tags)
    assert '<figcaption>python</figcaption><pre><code class="language-python">' in html
    assert [attrs["href"] for tag, attrs in Elements(html).found if tag == "a"] == ["https://example.com/docs"]
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert_safe(html)


def test_dangerous_links_and_html_stay_text():
    for text in [
        "[a](javascript:alert(1))",
        "[a](JaVaScRiPt:alert(1))",
        "[a]( javascript:alert(1))",
        "[a](java&#x09;script:alert(1))",
        "[a](vbscript:x)",
        "[a](data:text/html,<script>x</script>)",
        "[a](file:///etc/passwd)",
        "[a](/relative/path)",
        "[a][r]\n\n[r]: javascript:alert(1)",
        "<javascript:alert(1)>",
        "![x](https://tracker.example/pixel.png)",
        '<a href="https://example.com" onclick="x()">a</a>',
        "<iframe src=https://example.com></iframe>",
        '```"><script>alert(1)</script>\nx\n```',
    ]:
        html = str(render_markdown(text))
        assert_safe(html)
        assert "<img" not in html and "<iframe" not in html and "<script" not in html


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>\"'`[]()!:/\\=&#;*_-|\n jsavcriptdaonerlg123")), max_size=120))
@example("[]()")  # an empty destination, which markdown-it never passes to validateLink
@example("[a [b](https://x.org)](<>)")
def test_no_text_renders_to_unsafe_html(text):
    assert_safe(str(render_markdown(text)))


def test_a_reply_is_rendered_once_and_the_cache_stays_within_its_bound():
    cache = RenderCache(max_bytes=2000)
    first = cache.render("**bold** and `code`")
    assert cache.render("**bold** and `code`") is first, "a reply shown again is not rendered again"
    for index in range(100):
        cache.render(f"reply {index} " + "x" * 50)
    assert cache.size <= 2000 and cache.render("reply 99 " + "x" * 50) == "<p>reply 99 " + "x" * 50 + "</p>\n"
    assert cache.render("**bold** and `code`") == first and cache.render("**bold** and `code`") is not first
