"""A gthread worker whose pool threads only ever get whole requests, so slow or idle clients hold none."""

from __future__ import annotations

import errno
import html
import selectors
import socket
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future
from functools import partial

from gunicorn import util
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from palaver.web import probes
from palaver.web.headers import header_lines
from palaver.web.http_reading import CUT, TOO_LARGE, WAIT, PendingRequest

LINGER_SECONDS, LINGER_BYTES = 2.0, 65536  # what gunicorn's close_graceful allows a closing client
ACCEPT_BATCH = 64  # connections taken per wake-up: a connect flood drains fast, and the loop still turns


class Connection(TConn):
    """A client connection that knows its address, when it last sent anything, and tells its worker it closed."""

    def __init__(self, cfg, sock, client, server, on_close) -> None:
        super().__init__(cfg, sock, client, server)
        self.address = client[0] if isinstance(client, tuple) else str(client)
        self.on_close = on_close
        self.pending: PendingRequest | None = None
        self.cut_off = False
        self.lingered = 0

    def close(self, graceful: bool = False) -> None:
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close(self)
        super().close(graceful)


class BufferedThreadWorker(ThreadWorker):
    """Run gthread, but read each request's head and body in the poller and hand only whole ones to threads.

    The poller also answers health probes itself, and bounds open connections: per client address, and in all,
    by dropping the idlest connection that waits in the poller (docs/slow-clients.md).
    """

    max_body_bytes = 65536  # the app's body limit; gunicorn.conf.py sets these from the settings
    request_deadline = 10.0  # seconds from a request's first byte until all of it must have arrived
    max_connections_per_address = 64  # 0: no cap (behind a proxy every connection comes from the proxy)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Connections the poller reads a request from, or lingers on: the idlest first.
        self.watched: OrderedDict[Connection, None] = OrderedDict()
        self.by_address: Counter[str] = Counter()

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

    def init_process(self) -> None:
        # gunicorn writes its own 400, 414 and 431 through util.write_error: ours adds the security headers.
        util.write_error = write_error_with_headers
        super().init_process()

    def accept(self, listener) -> None:
        """Take new connections, making room for each within the per-address and total bounds."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, client = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                    return
                raise
            conn = Connection(self.cfg, sock, client, listener.getsockname(), self.forget)
            if not self.make_room(conn.address):
                conn.on_close = None
                util.close(sock)
                continue
            self.nr_conns += 1
            self.by_address[conn.address] += 1
            self.enqueue_req(conn)

    def make_room(self, address: str) -> bool:
        """Drop the idlest waiting connection where a new one from address would pass a bound; False if none can go."""
        cap = self.max_connections_per_address
        if cap and self.by_address[address] >= cap:
            idlest = next((conn for conn in self.watched if conn.address == address), None)
            if idlest is None:
                return False
            self.drop(idlest)
        if self.nr_conns >= self.worker_connections:
            if not self.watched:
                return False
            self.drop(next(iter(self.watched)))
        return True

    def set_accept_enabled(self, enabled: bool) -> None:
        # gthread stops accepting at worker_connections; while a connection waits in the poller, accept() makes room.
        super().set_accept_enabled(enabled or (self.alive and bool(self.watched)))

    def forget(self, conn: Connection) -> None:
        """Count a closed connection out of its address's share."""
        self.by_address[conn.address] -= 1
        if self.by_address[conn.address] <= 0:
            del self.by_address[conn.address]

    def enqueue_req(self, conn: Connection) -> None:
        """Read the connection's next request in the poller; a thread gets it once it is whole."""
        # A body drain or pipelining may have read the next request's start already.
        leftover = conn.parser.unreader.take_buffered() if conn.parser else b""
        self.expect_request(conn)
        if leftover and self.feed(conn, leftover):
            return
        conn.sock.setblocking(False)
        self.watch(conn)

    def expect_request(self, conn: Connection) -> None:
        conn.pending, conn.cut_off = PendingRequest(self.max_body_bytes), False
        conn.timeout = time.monotonic() + (self.cfg.keepalive or self.request_deadline)

    def feed(self, conn: Connection, data: bytes) -> bool:
        """Add data to the connection's request; return True once the connection has left the poller."""
        while True:
            assert conn.pending is not None  # feed is only called while a request is being read
            if not conn.pending.data:
                conn.timeout = time.monotonic() + self.request_deadline
            state = conn.pending.feed(data)
            if state == WAIT:
                if conn.pending.wants_continue and conn.pending.body_at >= 0:
                    # Such a client sends its body only after this; gunicorn would say it only once the body is here.
                    conn.pending.wants_continue = False
                    self.send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                return False
            if state == TOO_LARGE:
                self.refuse(conn, b"431 Request Header Fields Too Large")
                return True
            if state != CUT and (leftover := self.answer_probe(conn)) is not None:
                if conn.pending is None:
                    return True  # answered, then closed
                if not leftover:
                    return False
                data = leftover  # a pipelined request follows the probe
                continue
            self.hand_to_thread(conn, cut=state == CUT)
            return True

    def answer_probe(self, conn: Connection) -> bytes | None:
        """Answer a whole health probe here, never in a thread; return the bytes after it, or None if not one."""
        pending = conn.pending
        assert pending is not None
        path = pending.probe_path()
        keep_alive = pending.keeps_alive()
        answer = probes.raw_answer(path, pending.request_line.partition(b" ")[0], keep_alive) if path else None
        if answer is None:
            return None
        leftover = bytes(pending.data[pending.end :])
        if not self.send(conn, answer) or not keep_alive:
            self.unwatch(conn)
            conn.pending = None
            self.linger(conn)
            return b""
        self.expect_request(conn)
        return leftover

    def hand_to_thread(self, conn: Connection, cut: bool) -> None:
        self.unwatch(conn)
        assert conn.pending is not None
        conn.init()
        data, conn.cut_off, conn.pending = conn.pending.handed_over(), cut, None
        if conn.cut_off:  # no read may wait for the rest of a refused request: it ends where the bytes here do
            conn.parser.unreader = IterUnreader([data])
        else:
            conn.parser.unreader.unread(data)
        super().enqueue_req(conn)

    def on_readable(self, conn: Connection, _sock: socket.socket) -> None:
        """Take what the client sent: more of its request, or bytes to drop while the connection closes."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and conn.pending is not None:
            self.watched.move_to_end(conn)  # it is not idle: the idlest are dropped first under the bounds
            self.feed(conn, data)
        elif data and conn.lingered + len(data) < LINGER_BYTES:
            conn.lingered += len(data)
        else:
            self.drop(conn)  # the client hung up, the connection broke, or it sent too much while closing

    def handle_request(self, req, conn: Connection) -> bool:
        """Serve the request; after a refused one, close: the rest of it is still coming and cannot be parsed."""
        if conn.cut_off:
            req.force_close()
        return super().handle_request(req, conn)

    def finish_request(self, conn: Connection, fs: Future) -> None:
        """Take the connection back from its thread: read its next request here, or linger while it closes."""
        try:
            keep_alive = not fs.cancelled() and fs.exception() is None and bool(fs.result())
        except Exception:
            keep_alive = False
        if keep_alive and self.alive:
            self.enqueue_req(conn)  # a kept-alive connection waits in the poller, bounded like any other
        elif keep_alive:
            super().finish_request(conn, fs)
        else:
            self.linger(conn)  # gthread's close_graceful would block this loop up to 2 s per closing client

    def linger(self, conn: Connection) -> None:
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

    def refuse(self, conn: Connection, status: bytes) -> None:
        """Answer a request the poller is reading with an empty error, and close."""
        self.unwatch(conn)
        self.send(conn, b"HTTP/1.1 %s\r\nConnection: close\r\nContent-Length: 0\r\n%s\r\n" % (status, header_lines()))
        self.linger(conn)  # the client may still be sending: closing at once could reset the answer away

    @staticmethod
    def send(conn: Connection, data: bytes) -> bool:
        """Write a short answer; return False if the socket did not take all of it now."""
        try:
            return conn.sock.send(data) == len(data)
        except OSError:
            return False

    def watch(self, conn: Connection) -> None:
        """Have the poller call on_readable for the connection."""
        if conn not in self.watched:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))
        self.watched[conn] = None
        self.watched.move_to_end(conn)

    def unwatch(self, conn: Connection) -> None:
        """Stop watching the connection, if the poller is."""
        if conn in self.watched:
            del self.watched[conn]
            self.poller.unregister(conn.sock)

    def drop(self, conn: Connection) -> None:
        """Close the connection now."""
        self.unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close connections past their deadline (a partial request gets a 408 first); stopping, close idle ones."""
        super().murder_pending()
        now = time.monotonic()
        for conn in list(self.watched):
            idle = conn.pending is None or not conn.pending.data
            if conn.timeout <= now and not idle:
                self.refuse(conn, b"408 Request Timeout")
            elif conn.timeout <= now or (idle and not self.alive):
                self.drop(conn)  # a stopping worker waits for requests under way, not for clients to speak


def write_error_with_headers(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write one of gunicorn's own error pages, as util.write_error does, with the security headers."""
    body = (
        f"<html><head><title>{html.escape(reason)}</title></head>"
        f"<body><h1>{html.escape(reason)}</h1><p>{html.escape(mesg)}</p></body></html>\n"
    ).encode("latin-1", "replace")
    head = b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: %d\r\n" % (
        status_int,
        reason.encode("latin-1", "replace"),
        len(body),
    )
    util.write_nonblock(sock, head + header_lines("text/html") + b"\r\n" + body)
