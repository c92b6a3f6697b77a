"""Usage on real SQLite and PostgreSQL: added per day and model, summed today and this month, taken or refused."""

import threading

import pytest

from palaver.core.errors import RateLimited
from palaver.storage.usage import Usage


@pytest.fixture
def usage(people, clock):
    return Usage(people.engine, clock)


def test_usage_adds_up_per_day_and_model_and_a_month_starts_afresh(people, usage, clock):
    ada = people.create("ada", "passphrase one")
    usage.add(ada.id, "tiny", requests=1, tokens=10)
    usage.add(ada.id, "tiny", requests=1, tokens=5)
    usage.add(ada.id, "other", requests=1, tokens=7)
    clock.advance(days=1)
    usage.add(ada.id, "tiny", requests=1, tokens=3)
    assert usage.tokens(ada.id) == (3, 25)
    assert [
        (s.model, s.requests_today, s.tokens_today, s.requests_this_month, s.tokens_this_month)
        for s in usage.report(ada.id)
    ] == [("other", 0, 0, 1, 7), ("tiny", 1, 3, 3, 18)]
    clock.advance(days=31)
    assert usage.tokens(ada.id) == (0, 0) and usage.report() == []


def test_taking_counts_what_is_under_way_and_a_refusal_takes_nothing(people, usage):
    ada = people.create("ada", "passphrase one")

    def at_most_20(today: int, _month: int) -> int:
        if today - 8 >= 20:
            raise RateLimited("spent")
        return max(0, today - 20)

    kept = [usage.take(ada.id, "tiny", 8, at_most_20)[1] for _ in range(3)]
    assert kept == [8, 8, 4], "the last reservation keeps what is left"
    with pytest.raises(RateLimited):
        usage.take(ada.id, "tiny", 8, at_most_20)
    assert usage.tokens(ada.id)[0] == 20 and usage.report(ada.id)[0].requests_today == 3


def test_concurrent_first_rows_of_a_day_add_up(people, usage):
    ada = people.create("ada", "passphrase one")
    threads = [threading.Thread(target=usage.add, args=(ada.id, "tiny"), kwargs={"tokens": 1}) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert usage.tokens(ada.id) == (8, 8)
