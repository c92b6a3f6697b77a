"""Reading one HTTP/1 request in the poller: when its head and body are whole, and what is handed over."""

import pytest

from palaver.web.http_reading import CUT, HEAD_LIMIT, TOO_LARGE, WAIT, WHOLE, PendingRequest


def fed(*pieces: bytes, max_body: int = 100) -> tuple[PendingRequest, list[str]]:
    pending = PendingRequest(max_body)
    return pending, [pending.feed(piece) for piece in pieces]


def test_a_head_and_a_body_are_whole_once_every_byte_is_in():
    head = b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    pending, states = fed(head[:10], head[10:], b"he", b"llo")
    assert states == [WAIT, WAIT, WAIT, WHOLE] and pending.handed_over() == head + b"hello"
    _, states = fed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert states == [WHOLE]


def test_chunked_bodies_are_whole_after_the_last_chunk_and_its_trailers():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    _, states = fed(head, b"3\r\nabc\r\n", b"0\r\n", b"\r\n")
    assert states == [WAIT, WAIT, WAIT, WHOLE]
    _, states = fed(head + b"zz\r\nabc\r\n")
    assert states == [CUT], "a chunk size that is not hexadecimal is refused by the app"


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n",  # over the body limit: 413 from the head alone
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare line feeds: gunicorn refuses them
    ],
)
def test_requests_refused_as_they_stand_are_cut_at_once(head):
    _, states = fed(head)
    assert states == [CUT]


def test_a_head_that_never_ends_is_too_large_past_the_limit():
    _, states = fed(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT)
    assert states == [TOO_LARGE]


def test_expect_100_continue_is_taken_out_before_gunicorn_parses_the_request():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    pending, states = fed(head, b"hi")
    assert states == [WAIT, WHOLE] and pending.wants_continue
    assert pending.handed_over() == b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"


def test_only_small_well_formed_bodiless_gets_and_heads_are_probes():
    assert fed(b"GET /readyz?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")[0].probe_path() == "/readyz"
    assert fed(b"HEAD /healthz HTTP/1.0\r\n\r\n")[0].probe_path() == "/healthz"
    for head in (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
        b"GET http://x/healthz HTTP/1.1\r\n\r\n",
    ):
        assert fed(head, max_body=10_000)[0].probe_path() is None, head[:40]


def test_keep_alive_follows_the_version_and_the_connection_header():
    assert fed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[0].keeps_alive()
    assert not fed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[0].keeps_alive()
    assert not fed(b"GET / HTTP/1.0\r\n\r\n")[0].keeps_alive()
    assert fed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0].keeps_alive()
