"""The app's services, built once by the app factory and reached by views through services()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from palaver.backends import ModelRouter
    from palaver.chat.conversations import Chat
    from palaver.chat.presets import Presets
    from palaver.core.config import Settings
    from palaver.models.pulls import Pulls
    from palaver.storage.people import PeopleStore
    from palaver.web.fairness import ClientShares
    from palaver.web.metrics import Metrics
    from palaver.web.quotas import PersonQuotas
    from palaver.web.rate_limits import RateLimits

EXTENSION = "palaver"


@dataclass
class Services:
    """Everything a request may use: the settings, the backend, the presets, the chat service, the bounds, people."""

    settings: Settings
    backend: ModelRouter
    presets: Presets
    chat: Chat
    metrics: Metrics
    limits: RateLimits
    shares: ClientShares
    pulls: Pulls  # models being pulled from the library's page or Ollama's /api/pull
    people: PeopleStore  # accounts, their sessions and keys (PALAVER_AUTH), in the conversations' database
    quotas: PersonQuotas  # people's quotas, groups and usage, held at the door (PALAVER_AUTH)

    def close(self) -> None:
        """Stop the backend after the requests already queued, and the store's background threads."""
        self.backend.close()
        self.chat.store.close()


def services() -> Services:
    """Return the current app's services."""
    return current_app.extensions[EXTENSION]
