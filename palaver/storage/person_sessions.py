"""A person's signed-in browsers: a random token in the cookie, its SHA-256 in the database; ended one or all."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from palaver.storage.records import Person, as_utc, utc_now
from palaver.storage.schema import people, person_sessions

# A session's (and its person's) last_seen_at is written at most this often: a signed-in page is not a write a request.
TOUCH_EVERY = timedelta(minutes=1)
MAX_USER_AGENT = 200


def token_hash(token: str) -> str:
    """Return what the database keeps of a token: its SHA-256, so a copy of the database signs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


class PersonSessions:
    """Start, find and end the sessions of people signed in on a browser; a session unused for idle_seconds ends."""

    def __init__(self, engine: sa.Engine, idle_seconds: float, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self.idle = timedelta(seconds=idle_seconds)
        self._clock = clock

    def start(self, person_id: str, user_agent: str = "") -> str:
        """Start a session for a person; return its token, which only the browser's cookie keeps."""
        token, now = secrets.token_urlsafe(32), self._clock()
        with self.engine.begin() as connection:
            connection.execute(  # the person's idle sessions go as a new one starts: the table stays bounded
                person_sessions.delete().where(
                    person_sessions.c.person_id == person_id, person_sessions.c.last_seen_at < now - self.idle
                )
            )
            connection.execute(
                person_sessions.insert().values(
                    token_hash=token_hash(token),
                    person_id=person_id,
                    created_at=now,
                    last_seen_at=now,
                    user_agent=user_agent[:MAX_USER_AGENT],
                )
            )
            connection.execute(people.update().where(people.c.id == person_id).values(last_seen_at=now))
        return token

    def person(self, token: str) -> Person | None:
        """Return the person signed in with token (active or pending); None if it ended, went idle or was disabled."""
        hashed, now = token_hash(token), self._clock()
        query = (
            sa.select(people, person_sessions.c.last_seen_at.label("session_seen_at"))
            .join(people, people.c.id == person_sessions.c.person_id)
            .where(person_sessions.c.token_hash == hashed)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        seen = as_utc(row.session_seen_at)
        if now - seen > self.idle:
            self.end(token)
            return None
        if row.state == "disabled":
            return None
        if now - seen > TOUCH_EVERY:
            with self.engine.begin() as connection:
                connection.execute(
                    person_sessions.update().where(person_sessions.c.token_hash == hashed).values(last_seen_at=now)
                )
                connection.execute(people.update().where(people.c.id == row.id).values(last_seen_at=now))
        return Person.of(row)

    def end(self, token: str) -> bool:
        """End one session (signing out of this browser); return whether it was there."""
        with self.engine.begin() as connection:
            ended = connection.execute(
                person_sessions.delete().where(person_sessions.c.token_hash == token_hash(token))
            )
        return ended.rowcount > 0

    def end_all(self, person_id: str) -> int:
        """End every session of a person (signing out everywhere); return how many there were."""
        with self.engine.begin() as connection:
            ended = connection.execute(person_sessions.delete().where(person_sessions.c.person_id == person_id))
        return ended.rowcount

    def count(self, person_id: str) -> int:
        """Return how many sessions a person has that have not gone idle."""
        since = self._clock() - self.idle
        query = sa.select(sa.func.count()).where(
            person_sessions.c.person_id == person_id, person_sessions.c.last_seen_at >= since
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()
