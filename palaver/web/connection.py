"""The client's connection: whether it has hung up, so that work done for nobody stops."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable

from flask import request


def client_gone_probe() -> Callable[[], bool] | None:
    """Return a check for whether this request's client has closed its connection."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            # Readable with nothing to read means the peer closed; pipelined bytes mean it is still there.
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    return gone
