"""Groups of people: created, renamed and deleted by an admin, with their members; a group's quota binds them all."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from palaver.core.errors import InvalidRequest
from palaver.storage.records import utc_now
from palaver.storage.schema import group_members, groups, people, quotas

MAX_GROUP_NAME = 100


@dataclass(frozen=True)
class Group:
    """A group: its id, its name, and the ids of its members."""

    id: str
    name: str
    members: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """Return the subject the group's quota is kept under."""
        return f"group:{self.id}"


def group_name(name: str) -> str:
    """Return a group's name as kept, or refuse one that is empty or too long."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_GROUP_NAME:
        raise InvalidRequest(f"a group's name must be 1 to {MAX_GROUP_NAME} characters", param="name")
    return name


class Groups:
    """Create, rename, delete and list groups, and add people to them or take them out."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], datetime] = utc_now):
        self.engine = engine
        self._clock = clock

    def create(self, name: str) -> Group:
        name, group_id = group_name(name), secrets.token_hex(16)
        try:
            with self.engine.begin() as connection:
                connection.execute(groups.insert().values(id=group_id, name=name, created_at=self._clock()))
        except sa.exc.IntegrityError:
            raise InvalidRequest(f"there is a group named '{name}' already", param="name", code="group_taken") from None
        return Group(group_id, name)

    def rename(self, group_id: str, name: str) -> bool:
        """Rename a group; return whether there was one."""
        name = group_name(name)
        try:
            with self.engine.begin() as connection:
                renamed = connection.execute(groups.update().where(groups.c.id == group_id).values(name=name))
        except sa.exc.IntegrityError:
            raise InvalidRequest(f"there is a group named '{name}' already", param="name", code="group_taken") from None
        return renamed.rowcount > 0

    def delete(self, group_id: str) -> bool:
        """Delete a group, its memberships and its quota; return whether there was one."""
        with self.engine.begin() as connection:
            connection.execute(group_members.delete().where(group_members.c.group_id == group_id))
            connection.execute(quotas.delete().where(quotas.c.subject == f"group:{group_id}"))
            deleted = connection.execute(groups.delete().where(groups.c.id == group_id))
        return deleted.rowcount > 0

    def add(self, group_id: str, person_id: str) -> bool:
        """Put a person in a group; return whether both exist (a person already in it stays, once)."""
        with self.engine.begin() as connection:
            found = (
                connection.execute(
                    sa.select(sa.func.count()).select_from(groups).where(groups.c.id == group_id)
                ).scalar_one()
                and connection.execute(
                    sa.select(sa.func.count()).select_from(people).where(people.c.id == person_id)
                ).scalar_one()
            )
            if not found:
                return False
            already = connection.execute(
                sa.select(sa.func.count())
                .select_from(group_members)
                .where(group_members.c.group_id == group_id, group_members.c.person_id == person_id)
            ).scalar_one()
            if not already:
                connection.execute(group_members.insert().values(group_id=group_id, person_id=person_id))
        return True

    def remove(self, group_id: str, person_id: str) -> bool:
        """Take a person out of a group; return whether they were in it."""
        with self.engine.begin() as connection:
            removed = connection.execute(
                group_members.delete().where(
                    group_members.c.group_id == group_id, group_members.c.person_id == person_id
                )
            )
        return removed.rowcount > 0

    def everything(self) -> list[Group]:
        """Return every group, by name, with its members."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(groups.c.id, groups.c.name).order_by(groups.c.name)).all()
            members = connection.execute(sa.select(group_members.c.group_id, group_members.c.person_id)).all()
        return [Group(row.id, row.name, tuple(m.person_id for m in members if m.group_id == row.id)) for row in rows]

    def get(self, group_id: str) -> Group | None:
        return next((group for group in self.everything() if group.id == group_id), None)

    def of(self, person_id: str) -> list[str]:
        """Return the ids of the groups a person is in."""
        query = sa.select(group_members.c.group_id).where(group_members.c.person_id == person_id)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())
