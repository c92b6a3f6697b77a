"""The caller of a request: its key, else its address; the share it holds until its answer is sent."""

from palaver.core.types import ANONYMOUS, CALLER

KEYS = "key-one, key-two"


def caller_of(app, **request) -> str:
    """Return who a request counted against, read from the share it holds while its answer is unsent."""
    answer = app.test_client().get("/api/schema", **request)
    (caller,) = app.extensions["palaver"].shares.in_flight
    answer.close()
    return caller


def test_a_caller_is_its_key_else_its_address_and_behind_a_proxy_the_forwarded_one(make_app, chat_model):
    keyed = make_app(chat_model, api_keys=KEYS, client_share=8)
    one = caller_of(keyed, headers={"Authorization": "Bearer key-one"})
    assert one.startswith("key:") and "key-one" not in one
    assert caller_of(keyed, headers={"Authorization": "Bearer key-two"}) != one
    plain = make_app(chat_model, client_share=8)
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert caller_of(plain, environ_base={"REMOTE_ADDR": "10.0.0.5"}, headers=forwarded) == "address:10.0.0.5"
    trusting = make_app(chat_model, trusted_proxies=1, client_share=8)
    assert caller_of(trusting, environ_base={"REMOTE_ADDR": "10.0.0.5"}, headers=forwarded) == "address:203.0.113.9"


def test_a_share_is_held_until_the_answer_is_sent_and_the_thread_is_nobodys_after(make_app, chat_model):
    app = make_app(chat_model, client_share=2)
    shares = app.extensions["palaver"].shares
    client = app.test_client()
    answer = client.post("/api/chat", json={"message": "hi", "max_new_tokens": 2})
    assert shares.in_flight == {"address:127.0.0.1": 1}, "held while the answer is unsent"
    answer.close()
    assert shares.in_flight == {} and CALLER.get() is ANONYMOUS
    stream = client.post("/", data={"textbox": "hi"}, headers={"Accept": "text/event-stream"}, buffered=False)
    assert shares.in_flight == {"address:127.0.0.1": 1}, "a stream holds its place until its last event"
    list(stream.response)
    stream.close()
    assert shares.in_flight == {}
