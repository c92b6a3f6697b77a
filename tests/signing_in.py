"""Accounts for tests: argon2 at its smallest cost, and signing up and in through the forms as a browser does."""

from __future__ import annotations

from argon2 import PasswordHasher

# Real argon2id at the least cost it takes: tests check the logic, not the library's cost (servers keep its defaults).
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "a long passphrase"


def sign_up(client, login: str, password: str = PASSWORD, base: str = "", **fields):
    """Post the sign-up form, as a Flask test client (base empty) or a requests session on base."""
    return client.post(f"{base}/sign-up", data={"login": login, "password": password, **fields})


def sign_in(client, login: str, password: str = PASSWORD, base: str = "", **fields):
    """Post the sign-in form, as a Flask test client (base empty) or a requests session on base."""
    return client.post(f"{base}/sign-in", data={"login": login, "password": password, **fields})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
