"""People: accounts created, found, approved and disabled; passwords checked with argon2 and a lockout per account."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cached_property

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from palaver.core.errors import Forbidden, InvalidRequest, RateLimited, Unauthorized
from palaver.storage.person_keys import PersonKeys
from palaver.storage.person_sessions import PersonSessions
from palaver.storage.records import Person, as_utc, utc_now
from palaver.storage.schema import conversations, messages, people, quotas, responses, shares

ROLES = ("admin", "member")
STATES = ("pending", "active", "disabled")
FAILURES_BEFORE_LOCK = 5  # failed sign-ins in a row; each one from then on locks the account twice as long
LONGEST_LOCK = timedelta(hours=1)
FIRST_PERSON_LOCK_KEY = 0x70656F70  # "peop": concurrent first sign-ups on PostgreSQL make one admin, not two
PERSON_COLUMNS = [column for column in people.c if column.name != "password_hash"]


def lock_for(failures: int) -> timedelta | None:
    """Return how long an account is locked after failures in a row: none below the bound, then 1, 2, 4... minutes."""
    if failures < FAILURES_BEFORE_LOCK:
        return None
    return min(timedelta(minutes=2 ** min(failures - FAILURES_BEFORE_LOCK, 6)), LONGEST_LOCK)


def locked(wait: timedelta) -> RateLimited:
    seconds = max(1, int(wait.total_seconds() + 0.999))
    return RateLimited(
        f"too many failed sign-ins for this account: it is locked; try again in {seconds} seconds",
        retry_after=seconds,
        code="account_locked",
    )


WRONG_PASSWORD = "that login and password do not match an account"


class PeopleStore:
    """Keep people, their sessions (.sessions) and API keys (.keys) in the conversations' database."""

    def __init__(
        self,
        engine: sa.Engine,
        session_idle_seconds: float,
        clock: Callable[[], datetime] = utc_now,
        hasher: PasswordHasher | None = None,
    ):
        self.engine = engine
        self.hasher = hasher or PasswordHasher()  # argon2id with the library's current parameters
        self._clock = clock
        self.sessions = PersonSessions(engine, session_idle_seconds, clock)
        self.keys = PersonKeys(engine, clock)

    def create(
        self,
        login: str,
        password: str | None = None,
        *,
        display_name: str = "",
        identity: str | None = None,
        open_signup: bool = False,
    ) -> Person:
        """Add a person: the first of all becomes an active admin; later ones wait for approval unless open_signup.

        A person of an identity provider or a proxy comes with identity and no password.
        """
        person_id, login = secrets.token_hex(16), login.strip().lower()
        values = dict(
            id=person_id,
            login=login,
            display_name=" ".join(display_name.split())[:200],
            password_hash=self.hasher.hash(password) if password is not None else None,
            identity=identity,
            role="member",
            state="active" if open_signup else "pending",
            created_at=self._clock(),
        )
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_PERSON_LOCK_KEY})
                # Inserted first, then counted: on SQLite the insert holds the write lock until the count is done.
                connection.execute(people.insert().values(**values))
                if connection.execute(sa.select(sa.func.count()).select_from(people)).scalar_one() == 1:
                    connection.execute(
                        people.update().where(people.c.id == person_id).values(role="admin", state="active")
                    )
        except sa.exc.IntegrityError:
            raise InvalidRequest(f"the login '{login}' is taken", param="login", code="login_taken") from None
        person = self.get(person_id)
        assert person is not None  # just written
        return person

    def get(self, person_id: str) -> Person | None:
        return self._one(people.c.id == person_id)

    def by_login(self, login: str) -> Person | None:
        return self._one(people.c.login == login.strip().lower())

    def by_identity(self, identity: str) -> Person | None:
        """Return the person an identity provider or a trusted proxy names, if they have been here before."""
        return self._one(people.c.identity == identity)

    def _one(self, condition: sa.ColumnElement[bool]) -> Person | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(*PERSON_COLUMNS).where(condition)).first()
        return Person.of(row) if row else None

    def everyone(self) -> list[Person]:
        """Return every person, those waiting for approval first, then in the order they came."""
        waiting_first = sa.case((people.c.state == "pending", 0), else_=1)
        query = sa.select(*PERSON_COLUMNS).order_by(waiting_first, people.c.created_at, people.c.id)
        with self.engine.connect() as connection:
            return [Person.of(row) for row in connection.execute(query)]

    def authenticate(self, login: str, password: str) -> Person:
        """Return the person of this login and password (pending ones too), or refuse: 401, or 429 while locked.

        An unknown login's password is hashed all the same, so the time taken does not tell which logins exist.
        """
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(people).where(people.c.login == login.strip().lower())).first()
        now = self._clock()
        if row is not None and row.locked_until is not None and as_utc(row.locked_until) > now:
            raise locked(as_utc(row.locked_until) - now)  # not checked, nor counted: a lock ends when it says
        verified = self._verify(row.password_hash if row is not None else None, password)
        if row is None or not verified:
            lock = self._count_failure(row.id, now) if row is not None else None
            raise locked(lock) if lock else Unauthorized(WRONG_PASSWORD, param="password", code="invalid_credentials")
        if row.state == "disabled":  # told only to who knows the password
            raise Forbidden("this account is disabled; ask an admin", code="account_disabled")
        changes: dict = {"failed_sign_ins": 0, "locked_until": None, "last_seen_at": now}
        if self.hasher.check_needs_rehash(row.password_hash):  # the library's parameters have grown since
            changes["password_hash"] = self.hasher.hash(password)
        with self.engine.begin() as connection:
            connection.execute(people.update().where(people.c.id == row.id).values(**changes))
        return Person.of(row)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash or self._stand_in_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    @cached_property
    def _stand_in_hash(self) -> str:
        """Return a hash no password matches, checked in place of a missing one so that both take as long."""
        return self.hasher.hash(secrets.token_urlsafe(32))

    def _count_failure(self, person_id: str, now: datetime) -> timedelta | None:
        """Count a failed sign-in; return how long the account is now locked, if it is."""
        with self.engine.begin() as connection:
            failures: int = connection.execute(
                people.update()
                .where(people.c.id == person_id)
                .values(failed_sign_ins=people.c.failed_sign_ins + 1)
                .returning(people.c.failed_sign_ins)
            ).scalar_one()
            lock = lock_for(failures)
            if lock:
                connection.execute(people.update().where(people.c.id == person_id).values(locked_until=now + lock))
        return lock

    def set_state(self, person_id: str, state: str) -> bool:
        """Approve (active) or disable a person; disabling ends their sessions, and their keys stop working."""
        if state not in STATES:
            raise InvalidRequest(f"a person's state is one of {', '.join(STATES)}", param="state")
        with self.engine.begin() as connection:
            changed = connection.execute(people.update().where(people.c.id == person_id).values(state=state))
        if state == "disabled":
            self.sessions.end_all(person_id)
        return changed.rowcount > 0

    def reset_password(self, person_id: str) -> str | None:
        """Give a password account a new random password and end its sessions; return it, or None if none such."""
        password = secrets.token_urlsafe(12)
        with self.engine.begin() as connection:
            changed = connection.execute(
                people.update()
                .where(people.c.id == person_id, people.c.password_hash.is_not(None))
                .values(password_hash=self.hasher.hash(password), failed_sign_ins=0, locked_until=None)
            )
        if changed.rowcount == 0:
            return None
        self.sessions.end_all(person_id)
        return password

    def set_role(self, person_id: str, role: str) -> bool:
        """Make a person an admin or a member; return whether there was one."""
        if role not in ROLES:
            raise InvalidRequest(f"a person's role is one of {', '.join(ROLES)}", param="role")
        with self.engine.begin() as connection:
            changed = connection.execute(people.update().where(people.c.id == person_id).values(role=role))
        return changed.rowcount > 0

    def delete(self, person_id: str) -> bool:
        """Delete a person with all they own: conversations, shares, stored responses, sessions, keys, usage, quota."""
        owner = f"person:{person_id}"
        with self.engine.begin() as connection:
            owned = sa.select(conversations.c.id).where(conversations.c.owner == owner)
            connection.execute(messages.delete().where(messages.c.conversation_id.in_(owned)))
            connection.execute(shares.delete().where(shares.c.owner == owner))
            connection.execute(conversations.delete().where(conversations.c.owner == owner))
            connection.execute(responses.delete().where(responses.c.owner == owner))
            connection.execute(quotas.delete().where(quotas.c.subject == owner))
            # Sessions, keys, memberships and usage go with the row (ON DELETE CASCADE).
            deleted = connection.execute(people.delete().where(people.c.id == person_id))
        return deleted.rowcount > 0
