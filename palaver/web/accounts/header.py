"""Signing in through a trusted proxy (PALAVER_AUTH=header): the person its header names, believed from it alone."""

from __future__ import annotations

import ipaddress
import logging
from functools import lru_cache

from flask import request

from palaver.core.errors import ConfigurationError, InvalidRequest
from palaver.storage.records import Person
from palaver.web.accounts.vetted import vetted_person
from palaver.web.services import services

log = logging.getLogger("palaver")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LONGEST_NAME = 200
MOST_PEERS_LOGGED = 1000  # a flood from many addresses logs this many lines, not one per request
peers_logged: set[str] = set()


@lru_cache(maxsize=4)
def proxy_networks(setting: str) -> tuple[Network, ...]:
    """Parse PALAVER_AUTH_PROXIES: addresses and networks, by commas."""
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in setting.split(",") if item.strip())
    except ValueError as exc:
        raise ConfigurationError(f"PALAVER_AUTH_PROXIES: {exc}") from None


def peer_address() -> str:
    """Return the address of the connection's own peer, as it was before ProxyFix read X-Forwarded-For into it."""
    before_proxy_fix = request.environ.get("werkzeug.proxy_fix.orig")
    environ = before_proxy_fix if isinstance(before_proxy_fix, dict) else request.environ
    return str(environ.get("REMOTE_ADDR") or "")


def from_trusted_proxy(address: str) -> bool:
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:  # a Unix socket, or no address at all
        return False
    return any(peer in network for network in proxy_networks(services().settings.auth_proxies))


def person_of_proxy_header() -> Person | None:
    """Return the person the proxy's header names, made on first sight; the header from anyone else is not heard."""
    settings = services().settings
    name = request.headers.get(settings.auth_header, "").strip().lower()
    if not name:
        return None
    peer = peer_address()
    if not from_trusted_proxy(peer):
        if peer not in peers_logged and len(peers_logged) < MOST_PEERS_LOGGED:
            peers_logged.add(peer)
            log.warning("ignored %s from %s: not one of PALAVER_AUTH_PROXIES", settings.auth_header, peer or "nowhere")
        return None
    if len(name) > LONGEST_NAME or not name.isprintable():
        raise InvalidRequest(f"{settings.auth_header} must be printable and at most {LONGEST_NAME} characters")
    return vetted_person(f"header:{name}", name)
