"""The security headers as raw lines, for the answers the app does not write."""

from palaver.web.headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, header_lines


def test_every_answer_gets_the_headers_and_only_html_the_page_policy():
    plain = header_lines().decode()
    assert all(f"{name}: {value}\r\n" in plain for name, value in SECURITY_HEADERS.items())
    assert "Content-Security-Policy" not in plain
    assert f"Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n" in header_lines("text/html").decode()
