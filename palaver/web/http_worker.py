"""A gthread worker whose pool threads only ever get whole requests, so slow or idle clients hold none."""

from __future__ import annotations

import re
import selectors
import socket
import time
from concurrent.futures import Future
from functools import partial

from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

HEAD_LIMIT = 64 * 1024  # gunicorn's own limits allow 800 KiB, too much to hold for every connection
HEAD_END = re.compile(rb"\r?\n\r?\n")  # a bare LF ends the search too: gunicorn refuses it at once
WAIT, WHOLE, CUT, TOO_LARGE = "wait", "whole", "cut", "too large"  # CUT: hand over what is here, to be refused
LINGER_SECONDS, LINGER_BYTES = 2.0, 65536  # what gunicorn's close_graceful allows a closing client


class PendingRequest:
    """Hold the bytes of one HTTP/1 request as they arrive, and tell when they make a whole request."""

    def __init__(self, max_body: int) -> None:
        self.data = bytearray()
        self.max_body = max_body
        self.searched = 0  # where the search for the head's end resumes
        self.body_at = -1  # where the body starts, once the head is complete
        self.length = 0  # the Content-Length, or -1 for a chunked body
        self.scan = 0  # chunked: where the next chunk-size line starts
        self.decoded = 0  # chunked: body bytes in the chunks before scan
        self.wants_continue = False

    def feed(self, data: bytes) -> str:
        """Add data; return WAIT for more, WHOLE, CUT, or TOO_LARGE for a head past HEAD_LIMIT."""
        self.data += data
        if self.body_at < 0:
            end = HEAD_END.search(self.data, self.searched)
            if end is None:
                self.searched = max(0, len(self.data) - 3)
                return TOO_LARGE if len(self.data) > HEAD_LIMIT else WAIT
            self.body_at = end.end()
            if end.group() != b"\r\n\r\n" or self.read_head(bytes(self.data[: end.start()])) == CUT:
                return CUT
        state = self.read_body()
        # Tiny chunks carry more framing than data: bound what one request may hold whatever its chunks.
        if state == WAIT and len(self.data) - self.body_at > 2 * self.max_body + 1024:
            return CUT
        return state

    def read_head(self, head: bytes) -> str:
        """Learn how the body is framed; return CUT where gunicorn or the app refuses the request as it stands."""
        lines = head.split(b"\r\n")
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
        self.wants_continue = lines[0].endswith(b"HTTP/1.1") and fields.get(b"expect") == [b"100-continue"]
        codings, lengths = fields.get(b"transfer-encoding"), fields.get(b"content-length")
        if codings:  # both framings at once, or a coding other than chunked, is refused by gunicorn
            self.length, self.scan = -1, self.body_at
            return CUT if lengths or not codings[-1].endswith(b"chunked") else WAIT
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return CUT
            self.length = int(lengths[0])
            if self.length > self.max_body:  # the app answers 413 from the head alone
                return CUT
        return WAIT

    def read_body(self) -> str:
        """Return whether the body is all here, reading chunk framing on from where the last call stopped."""
        if self.length >= 0:
            return WHOLE if len(self.data) - self.body_at >= self.length else WAIT
        while True:
            eol = self.data.find(b"\r\n", self.scan)
            if eol < 0:
                return CUT if len(self.data) - self.scan > 1024 else WAIT
            digits = bytes(self.data[self.scan : eol]).split(b";")[0].strip()
            if not digits or digits.strip(b"0123456789abcdefABCDEF"):
                return CUT  # a malformed chunk size: the app answers 400
            size = int(digits, 16)
            if size == 0:  # the trailer section ends with an empty line
                return WHOLE if self.data.find(b"\r\n\r\n", eol) >= 0 else WAIT
            if self.decoded + min(size, len(self.data) - eol - 2) > self.max_body:
                return CUT  # the app reads past its limit from what is here, and answers 413
            end = eol + 2 + size + 2
            if len(self.data) < end:
                return WAIT
            if self.data[end - 2 : end] != b"\r\n":
                return CUT
            self.decoded, self.scan = self.decoded + size, end


class BufferedThreadWorker(ThreadWorker):
    """Run gthread, but read each request's head and body in the poller and hand only whole ones to threads."""

    max_body_bytes = 65536  # the app's body limit; gunicorn.conf.py sets both of these
    request_deadline = 10.0  # seconds from a request's first byte until all of it must have arrived

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.watched: set[TConn] = set()  # connections the poller reads a request from, or lingers on

    @classmethod
    def check_config(cls, cfg, log) -> None:
        """Refuse set-ups whose bytes on the socket are not plain HTTP/1 requests."""
        super().check_config(cfg, log)
        if (
            cfg.is_ssl
            or cfg.protocol != "http"
            or cfg.proxy_protocol != "off"
            or cfg.http2_cleartext in ("prior-knowledge", "both")
        ):
            raise RuntimeError("BufferedThreadWorker reads plain HTTP/1 only: no TLS, uwsgi, PROXY or h2c preface")

    def enqueue_req(self, conn: TConn) -> None:
        """Read the connection's next request in the poller; a thread gets it once it is whole."""
        # A body drain or pipelining may have read the next request's start already.
        leftover = conn.parser.unreader.take_buffered() if conn.parser else b""
        conn.pending, conn.cut_off = PendingRequest(self.max_body_bytes), False
        conn.timeout = time.monotonic() + (self.cfg.keepalive or self.request_deadline)
        if leftover and self.feed(conn, leftover):
            return
        conn.sock.setblocking(False)
        self.watch(conn)

    def feed(self, conn: TConn, data: bytes) -> bool:
        """Add data to the connection's request; hand it to a thread and return True once it can go."""
        if not conn.pending.data:
            conn.timeout = time.monotonic() + self.request_deadline
        state = conn.pending.feed(data)
        if state == WAIT:
            if conn.pending.wants_continue and conn.pending.body_at >= 0:
                # Such a client sends its body only after this; gunicorn would say it only once the body is here.
                conn.pending.wants_continue = False
                self.send(conn, b"100 Continue", b"")
            return False
        if state == TOO_LARGE:
            self.refuse(conn, b"431 Request Header Fields Too Large")
            return True
        self.unwatch(conn)
        conn.init()
        data, conn.cut_off, conn.pending = bytes(conn.pending.data), state == CUT, None
        if conn.cut_off:  # no read may wait for the rest of a refused request: it ends where the bytes here do
            conn.parser.unreader = IterUnreader([data])
        else:
            conn.parser.unreader.unread(data)
        super().enqueue_req(conn)
        return True

    def on_readable(self, conn: TConn, _sock: socket.socket) -> None:
        """Take what the client sent: more of its request, or bytes to drop while the connection closes."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and conn.pending is not None:
            self.feed(conn, data)
        elif data and conn.lingered + len(data) < LINGER_BYTES:
            conn.lingered += len(data)
        else:
            self.drop(conn)  # the client hung up, the connection broke, or it sent too much while closing

    def handle_request(self, req, conn: TConn) -> bool:
        """Serve the request; after a refused one, close: the rest of it is still coming and cannot be parsed."""
        if conn.cut_off:
            req.force_close()
        return super().handle_request(req, conn)

    def finish_request(self, conn: TConn, fs: Future) -> None:
        """Take the connection back from its thread, lingering in the poller where gthread would close it."""
        if fs.cancelled() or (fs.exception() is None and not fs.result()):
            self.linger(conn)  # gthread's close_graceful would block this loop up to 2 s per closing client
        else:
            super().finish_request(conn, fs)

    def linger(self, conn: TConn) -> None:
        """Send FIN, then drop what the client still sends until it closes, as close_graceful does."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self.drop(conn)
            return
        conn.pending, conn.lingered = None, 0
        conn.timeout = time.monotonic() + LINGER_SECONDS
        self.watch(conn)

    def refuse(self, conn: TConn, status: bytes) -> None:
        """Answer a request the poller is reading with an empty error, and close."""
        self.unwatch(conn)
        self.send(conn, status, b"Connection: close\r\nContent-Length: 0\r\n")
        self.linger(conn)  # the client may still be sending: closing at once could reset the answer away

    def send(self, conn: TConn, status: bytes, headers: bytes) -> None:
        """Write a short response head, or nothing if the socket will not take it now."""
        try:
            conn.sock.send(b"HTTP/1.1 %s\r\n%s\r\n" % (status, headers))
        except OSError:
            pass

    def watch(self, conn: TConn) -> None:
        """Have the poller call on_readable for the connection."""
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))
        self.watched.add(conn)

    def unwatch(self, conn: TConn) -> None:
        """Stop watching the connection, if the poller is."""
        if conn in self.watched:
            self.watched.discard(conn)
            self.poller.unregister(conn.sock)

    def drop(self, conn: TConn) -> None:
        """Close the connection now."""
        self.unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close connections past their deadline; a partial request gets a 408 first."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [conn for conn in self.watched if conn.timeout <= now]:
            if conn.pending is not None and conn.pending.data:
                self.refuse(conn, b"408 Request Timeout")
            else:
                self.drop(conn)
