"""The shared vocabulary: usage that adds up, a stream read to its final item, and the caller by default."""

import pytest

from palaver.core.types import ANONYMOUS, CALLER, Message, Reply, Usage, final


def test_usage_adds_up_and_writes_openais_fields():
    usage = Usage(3, 4) + Usage(1, 1)
    assert usage == Usage(4, 5) and usage.as_dict() == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert Message("user", "hi").as_dict() == {"role": "user", "content": "hi"}


def test_final_reads_a_stream_to_its_reply_and_closes_it():
    closed = []

    def events():
        try:
            yield "text"
            yield Reply("text", Usage(1, 1), 0, "stop")
            yield "never read"
        finally:
            closed.append(True)

    assert final(events(), Reply).text == "text" and closed == [True]
    with pytest.raises(StopIteration):
        final((item for item in ["only text"]), Reply)


def test_a_generation_outside_any_request_is_nobodys():
    assert CALLER.get() is ANONYMOUS and ANONYMOUS.client == "" and ANONYMOUS.reserve is None
