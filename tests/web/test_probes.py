"""Health probes as the poller answers them: the body and status of /healthz and /readyz, whole HTTP answers."""

from palaver.web import probes


def test_probe_answers_are_whole_http_answers_with_the_security_headers():
    probes.install(lambda: {"state": "loading", "pending": 0})
    ready = probes.raw_answer("/readyz", b"GET", keep_alive=True)
    assert ready.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and ready.endswith(b'"pending": 0}')
    assert b"X-Content-Type-Options: nosniff\r\n" in ready and b"Connection: close" not in ready
    alive = probes.raw_answer("/healthz", b"HEAD", keep_alive=False)
    assert alive.startswith(b"HTTP/1.1 200 OK\r\n") and alive.endswith(b"Connection: close\r\n\r\n")
    assert b"Content-Length: 16\r\n" in alive, "HEAD gets the length of the body it does not get"
    assert probes.raw_answer("/api/chat", b"GET", keep_alive=True) is None


def test_a_description_that_fails_is_a_500_not_a_broken_poller(caplog):
    def broken() -> dict:
        raise RuntimeError("no description")

    probes.install(broken)
    assert probes.raw_answer("/readyz", b"GET", keep_alive=True).startswith(b"HTTP/1.1 500 ")
    assert "no description" in caplog.text
    assert probes.health(broken, "/healthz") == (200, {"status": "ok"}), "liveness never asks the backend"
