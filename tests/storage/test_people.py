"""People on real SQLite and PostgreSQL: the first is the admin, passwords hashed with argon2, a lockout per account."""

import threading

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from palaver.core.errors import Forbidden, InvalidRequest, RateLimited, Unauthorized
from palaver.storage.people import FAILURES_BEFORE_LOCK, PeopleStore, lock_for
from palaver.storage.schema import people as people_table


def test_the_first_person_is_an_active_admin_and_later_ones_wait_unless_sign_up_is_open(people, clock):
    first = people.create("Ada@Example.org", "correct horse", display_name="  Ada  Lovelace ")
    assert (first.login, first.name, first.role, first.state) == ("ada@example.org", "Ada Lovelace", "admin", "active")
    clock.advance(seconds=1)
    second = people.create("grace", "another passphrase")
    assert (second.role, second.state) == ("member", "pending")
    clock.advance(seconds=1)
    third = people.create("linus", "yet another one", open_signup=True)
    assert (third.role, third.state) == ("member", "active")
    with pytest.raises(InvalidRequest) as taken:
        people.create("ADA@example.org", "whatever it is")
    assert taken.value.code == "login_taken" and taken.value.param == "login"
    assert [p.login for p in people.everyone()] == ["grace", "ada@example.org", "linus"]  # the waiting one first
    assert people.by_login(" GRACE ") == second and people.get(first.id) == first


def test_concurrent_first_sign_ups_make_one_admin(people):
    barrier, made = threading.Barrier(4), []

    def sign_up(number):
        barrier.wait()
        made.append(people.create(f"person{number}", "a passphrase"))

    threads = [threading.Thread(target=sign_up, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(p.role for p in made) == ["admin", "member", "member", "member"]


def test_only_the_hash_of_a_password_is_stored_and_only_the_password_signs_in(people):
    people.create("ada", "correct horse")
    with people.engine.connect() as connection:
        stored = connection.execute(sa.select(people_table.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert people.authenticate(" ADA ", "correct horse").login == "ada"
    for login, password in (("ada", "wrong horse"), ("nobody", "correct horse")):
        with pytest.raises(Unauthorized) as refused:
            people.authenticate(login, password)
        assert refused.value.code == "invalid_credentials"  # the same answer: it does not say which logins exist


def test_a_pending_person_signs_in_and_a_disabled_one_is_told_only_with_the_right_password(people):
    admin = people.create("ada", "correct horse")
    grace = people.create("grace", "another passphrase")
    assert people.authenticate("grace", "another passphrase").state == "pending"
    assert people.set_state(grace.id, "disabled") and people.get(grace.id).state == "disabled"
    with pytest.raises(Unauthorized):
        people.authenticate("grace", "not her passphrase")
    with pytest.raises(Forbidden) as disabled:
        people.authenticate("grace", "another passphrase")
    assert disabled.value.code == "account_disabled"
    assert people.set_state(grace.id, "active") and people.authenticate("grace", "another passphrase").active
    assert people.set_role(grace.id, "admin") and people.get(grace.id).admin
    with pytest.raises(InvalidRequest):
        people.set_state(admin.id, "asleep")
    assert not people.set_state("no-such-person", "active")


def test_failures_in_a_row_lock_the_account_for_growing_minutes_whatever_the_password(people, clock):
    people.create("ada", "correct horse")
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        with pytest.raises(Unauthorized):
            people.authenticate("ada", "wrong")
    with pytest.raises(RateLimited) as locked:
        people.authenticate("ada", "wrong")
    assert locked.value.code == "account_locked" and locked.value.retry_after == 60
    clock.advance(seconds=30)
    with pytest.raises(RateLimited) as still:  # the right password too, while locked: guessing cannot go on
        people.authenticate("ada", "correct horse")
    assert still.value.retry_after == 30
    clock.advance(seconds=31)
    with pytest.raises(RateLimited) as longer:  # one more failure after the lock: twice as long
        people.authenticate("ada", "wrong")
    assert longer.value.retry_after == 120
    clock.advance(minutes=3)
    assert people.authenticate("ada", "correct horse").login == "ada"  # a success starts the count again
    for _ in range(FAILURES_BEFORE_LOCK - 1):
        with pytest.raises(Unauthorized):
            people.authenticate("ada", "wrong")


def test_locks_grow_to_an_hour_at_most():
    assert [lock_for(n) for n in range(FAILURES_BEFORE_LOCK)] == [None] * FAILURES_BEFORE_LOCK
    minutes = [lock_for(FAILURES_BEFORE_LOCK + n).total_seconds() / 60 for n in range(8)]
    assert minutes == [1, 2, 4, 8, 16, 32, 60, 60]
    assert lock_for(10_000).total_seconds() == 3600


def test_a_hash_made_with_weaker_parameters_is_made_again_at_sign_in(people):
    people.create("ada", "correct horse")
    stronger = PeopleStore(people.engine, 3600, hasher=PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    stronger.authenticate("ada", "correct horse")
    with people.engine.connect() as connection:
        stored = connection.execute(sa.select(people_table.c.password_hash)).scalar_one()
    assert "m=2048,t=2,p=1" in stored
    assert people.authenticate("ada", "correct horse").login == "ada"


def test_a_person_of_an_identity_provider_has_no_password_to_sign_in_with(people):
    person = people.create("ada@example.org", identity="oidc:https://issuer.example|1234")
    assert people.by_identity("oidc:https://issuer.example|1234") == person
    assert people.by_identity("oidc:https://issuer.example|9999") is None
    with pytest.raises(Unauthorized):
        people.authenticate("ada@example.org", "")


def test_disabling_a_person_ends_their_sessions(people):
    people.create("ada", "correct horse")
    grace = people.create("grace", "another passphrase", open_signup=True)
    token = people.sessions.start(grace.id)
    assert people.sessions.person(token).id == grace.id
    people.set_state(grace.id, "disabled")
    assert people.sessions.person(token) is None and people.sessions.count(grace.id) == 0
