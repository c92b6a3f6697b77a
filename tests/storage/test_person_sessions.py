"""Sessions on real SQLite and PostgreSQL: only a token's hash is kept; one ends, all end, an idle one ends."""

import sqlalchemy as sa

from palaver.storage.person_sessions import token_hash
from palaver.storage.schema import people as people_table
from palaver.storage.schema import person_sessions


def test_a_session_is_found_by_its_token_whose_hash_alone_is_stored(people):
    ada = people.create("ada", "correct horse")
    token = people.sessions.start(ada.id, "Mozilla/5.0 " + "x" * 300)
    with people.engine.connect() as connection:
        row = connection.execute(sa.select(person_sessions)).one()
    assert row.token_hash == token_hash(token) != token and len(row.user_agent) == 200
    assert len(token) >= 43 and people.sessions.person(token).id == ada.id
    assert people.sessions.person(token + "x") is None and people.sessions.person("") is None


def test_signing_out_ends_one_session_and_signing_out_everywhere_ends_all(people):
    ada = people.create("ada", "correct horse")
    laptop, phone, other = (people.sessions.start(ada.id) for _ in range(3))
    assert people.sessions.end(laptop) and not people.sessions.end(laptop)
    assert people.sessions.person(laptop) is None and people.sessions.person(phone).id == ada.id
    assert people.sessions.count(ada.id) == 2
    assert people.sessions.end_all(ada.id) == 2
    assert people.sessions.person(phone) is None and people.sessions.person(other) is None


def test_an_idle_session_ends_and_a_used_one_is_touched_once_a_minute(people, clock):
    ada = people.create("ada", "correct horse")
    token = people.sessions.start(ada.id)
    started = clock.now
    clock.advance(seconds=30)
    people.sessions.person(token)
    assert people.get(ada.id).last_seen_at == started  # not a write per request
    clock.advance(minutes=50)
    people.sessions.person(token)
    assert people.get(ada.id).last_seen_at == clock.now
    clock.advance(minutes=59)
    assert people.sessions.person(token).id == ada.id  # used 59 minutes ago: still signed in
    clock.advance(minutes=61)
    assert people.sessions.person(token) is None and people.sessions.count(ada.id) == 0


def test_a_new_session_clears_the_persons_idle_ones(people, clock):
    ada = people.create("ada", "correct horse")
    people.sessions.start(ada.id)
    clock.advance(hours=2)
    people.sessions.start(ada.id)
    with people.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(person_sessions)).scalar_one() == 1
        assert connection.execute(sa.select(people_table.c.id)).scalar_one() == ada.id
