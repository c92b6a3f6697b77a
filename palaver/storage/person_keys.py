"""A person's API keys: random secrets shown once, kept as their SHA-256, listed by name and prefix, revoked."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from palaver.core.errors import InvalidRequest
from palaver.storage.person_sessions import TOUCH_EVERY
from palaver.storage.records import Person, PersonKey, as_utc, utc_now
from palaver.storage.schema import people, person_keys

KEY_PREFIX = "pv-"
SHOWN_CHARACTERS = 10  # "pv-" and 7 of the secret: enough to tell keys apart, far too few to guess the rest by
MAX_KEYS = 50  # unrevoked keys a person may hold
MAX_KEY_NAME = 100


def secret_hash(secret: str) -> str:
    """Return what the database keeps of a key: its SHA-256 (a key carries 256 random bits: nothing to stretch)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_name(name: str) -> str:
    """Return a key's name as kept, or refuse one that is empty or too long."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_KEY_NAME:
        raise InvalidRequest(f"a key's name must be 1 to {MAX_KEY_NAME} characters", param="name")
    return name


class PersonKeys:
    """Create, list, revoke and look up people's API keys."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self._clock = clock

    def create(self, person_id: str, name: str) -> tuple[PersonKey, str]:
        """Create a key for a person; return it and its secret, which is never shown again."""
        name, now = key_name(name), self._clock()
        secret, key_id = KEY_PREFIX + secrets.token_urlsafe(32), secrets.token_hex(16)
        key = PersonKey(key_id, name, secret[:SHOWN_CHARACTERS], now, None, None)
        with self.engine.begin() as connection:
            held = connection.execute(
                sa.select(sa.func.count()).where(
                    person_keys.c.person_id == person_id, person_keys.c.revoked_at.is_(None)
                )
            ).scalar_one()
            if held >= MAX_KEYS:
                raise InvalidRequest(f"a person may hold at most {MAX_KEYS} keys: revoke one first", param="name")
            connection.execute(
                person_keys.insert().values(
                    id=key_id,
                    person_id=person_id,
                    name=name,
                    prefix=key.prefix,
                    secret_hash=secret_hash(secret),
                    created_at=now,
                )
            )
        return key, secret

    def of(self, person_id: str) -> list[PersonKey]:
        """Return a person's keys, revoked ones too, newest first."""
        query = (
            sa.select(person_keys)
            .where(person_keys.c.person_id == person_id)
            .order_by(person_keys.c.created_at.desc(), person_keys.c.id)
        )
        with self.engine.connect() as connection:
            return [PersonKey.of(row) for row in connection.execute(query)]

    def revoke(self, person_id: str, key_id: str) -> bool:
        """Revoke one of a person's keys at once; return whether it was theirs and still working."""
        with self.engine.begin() as connection:
            revoked = connection.execute(
                person_keys.update()
                .where(
                    person_keys.c.id == key_id,
                    person_keys.c.person_id == person_id,
                    person_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=self._clock())
            )
        return revoked.rowcount > 0

    def person(self, secret: str) -> Person | None:
        """Return the active person a key acts for; None for an unknown or revoked key, or a person not active."""
        hashed, now = secret_hash(secret), self._clock()
        query = (
            sa.select(people, person_keys.c.id.label("key_id"), person_keys.c.last_used_at.label("key_used_at"))
            .join(people, people.c.id == person_keys.c.person_id)
            .where(person_keys.c.secret_hash == hashed, person_keys.c.revoked_at.is_(None))
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None or row.state != "active":
            return None
        if row.key_used_at is None or now - as_utc(row.key_used_at) > TOUCH_EVERY:
            with self.engine.begin() as connection:
                connection.execute(person_keys.update().where(person_keys.c.id == row.key_id).values(last_used_at=now))
                connection.execute(people.update().where(people.c.id == row.id).values(last_seen_at=now))
        return Person.of(row)
