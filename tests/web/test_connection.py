"""Whether a request's client has hung up: a closed socket says so, a silent or pipelining one does not."""

import socket

from flask import Flask

from palaver.web.connection import client_gone_probe


def probe_for(sock):
    app = Flask(__name__)
    with app.test_request_context(environ_base={"gunicorn.socket": sock}):
        return client_gone_probe()


def test_a_closed_peer_is_gone_and_a_quiet_or_pipelining_one_is_not():
    server, client = socket.socketpair()
    with server, client:
        gone = probe_for(server)
        assert gone is not None and not gone()
        client.sendall(b"GET / HTTP/1.1\r\n")  # the next request, pipelined: still there
        assert not gone()
        client.close()
        server.recv(100)
        assert gone()
    app = Flask(__name__)
    with app.test_request_context():
        assert client_gone_probe() is None, "without the server's socket there is nothing to watch"
