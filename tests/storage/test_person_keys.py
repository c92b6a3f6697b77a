"""API keys on real SQLite and PostgreSQL: a secret shown once and stored hashed, listed by prefix, revoked."""

import pytest
import sqlalchemy as sa

from palaver.core.errors import InvalidRequest
from palaver.storage.person_keys import KEY_PREFIX, secret_hash
from palaver.storage.schema import person_keys


def test_a_key_acts_for_its_person_and_only_its_hash_and_prefix_are_stored(people, clock):
    ada = people.create("ada", "correct horse")
    key, secret = people.keys.create(ada.id, "  my   laptop ")
    assert secret.startswith(KEY_PREFIX) and len(secret) == len(KEY_PREFIX) + 43
    assert key.name == "my laptop" and secret.startswith(key.prefix) and len(key.prefix) == 10
    with people.engine.connect() as connection:
        row = connection.execute(sa.select(person_keys)).one()
    assert row.secret_hash == secret_hash(secret) and secret not in tuple(str(value) for value in row)
    assert people.keys.of(ada.id)[0].last_used_at is None
    assert people.keys.person(secret) == ada
    assert people.keys.of(ada.id)[0].last_used_at == clock.now
    assert people.keys.person(secret[:-1]) is None


def test_a_revoked_key_and_a_key_of_someone_not_active_stop_working_at_once(people):
    ada = people.create("ada", "correct horse")
    grace = people.create("grace", "another passphrase")
    _, waiting = people.keys.create(grace.id, "script")
    assert people.keys.person(waiting) is None  # pending approval
    people.set_state(grace.id, "active")
    assert people.keys.person(waiting).login == "grace"
    people.set_state(grace.id, "disabled")
    assert people.keys.person(waiting) is None
    key, secret = people.keys.create(ada.id, "laptop")
    assert not people.keys.revoke(grace.id, key.id)  # not hers to revoke
    assert people.keys.revoke(ada.id, key.id) and not people.keys.revoke(ada.id, key.id)
    assert people.keys.person(secret) is None
    assert people.keys.of(ada.id)[0].revoked_at is not None


def test_keys_are_listed_newest_first_named_within_bounds(people, clock):
    ada = people.create("ada", "correct horse")
    people.keys.create(ada.id, "first")
    clock.advance(seconds=1)
    people.keys.create(ada.id, "second")
    assert [k.name for k in people.keys.of(ada.id)] == ["second", "first"]
    for name in ("", "   ", "x" * 101):
        with pytest.raises(InvalidRequest):
            people.keys.create(ada.id, name)
