"""Reading one HTTP/1 request in the poller: where its head ends, how its body is framed, when it is whole."""

from __future__ import annotations

import re

HEAD_LIMIT = 64 * 1024  # gunicorn's own limits allow 800 KiB, too much to hold for every connection
PROBE_HEAD_LIMIT = 4096  # within gunicorn's request line and header field limits, so it would accept it too
HEAD_END = re.compile(rb"\r?\n\r?\n")  # a bare LF ends the search too: gunicorn refuses it at once
WAIT, WHOLE, CUT, TOO_LARGE = "wait", "whole", "cut", "too large"  # CUT: hand over what is here, to be refused


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
        self.request_line = b""
        self.fields: dict[bytes, list[bytes]] = {}

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
        self.request_line = lines[0]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.fields.setdefault(name.strip().lower(), []).append(value.strip().lower())
        self.wants_continue = lines[0].endswith(b"HTTP/1.1") and self.fields.get(b"expect") == [b"100-continue"]
        codings, lengths = self.fields.get(b"transfer-encoding"), self.fields.get(b"content-length")
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

    def handed_over(self) -> bytes:
        """Return the bytes for gunicorn's parser, without 'Expect: 100-continue', which the poller answers.

        Left in, gunicorn would send a second '100 Continue', or one before a 413 for a body it will never read.
        """
        if (
            b"expect" not in self.fields
            or self.body_at < 0
            or self.data[self.body_at - 4 : self.body_at] != b"\r\n\r\n"
        ):
            return bytes(self.data)
        lines = bytes(self.data[: self.body_at - 4]).split(b"\r\n")
        kept = [lines[0]] + [
            line
            for line in lines[1:]
            if not (line.partition(b":")[0].strip().lower() == b"expect" and b"100-continue" in line.lower())
        ]
        return b"\r\n".join(kept) + b"\r\n\r\n" + bytes(self.data[self.body_at :])

    def probe_path(self) -> str | None:
        """Return the path of a small, well-formed, bodiless GET or HEAD: the only requests a probe answer takes.

        Anything else goes to gunicorn's parser, which refuses what it must (a header past its field limit, a
        malformed line), so answering probes here never accepts a request gunicorn would refuse.
        """
        method, _, rest = self.request_line.partition(b" ")
        target, _, version = rest.partition(b" ")
        if method not in (b"GET", b"HEAD") or version not in (b"HTTP/1.1", b"HTTP/1.0") or b" " in version:
            return None
        if self.body_at > PROBE_HEAD_LIMIT or not target.startswith(b"/"):
            return None
        if any(not (name and name.isascii() and b" " not in name) for name in self.fields):
            return None
        if self.fields.get(b"transfer-encoding") or self.fields.get(b"content-length", [b"0"]) != [b"0"]:
            return None
        return target.partition(b"?")[0].decode("latin-1")

    def keeps_alive(self) -> bool:
        """Tell whether the connection stays open after this request, by its version and Connection header."""
        connection = b",".join(self.fields.get(b"connection", []))
        if self.request_line.endswith(b"HTTP/1.0"):
            return b"keep-alive" in connection
        return b"close" not in connection

    @property
    def end(self) -> int:
        """Return where a whole bodiless request ends in data; what follows is the next request's start."""
        return self.body_at + max(self.length, 0)
