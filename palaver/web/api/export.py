"""Exports: a whole conversation as JSON (every message's time, token counts and finish reason) or Markdown."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from palaver.core.validation import RequestModel
from palaver.storage.records import StoredConversation


class ExportQuery(RequestModel):
    """GET /api/conversations/<id>/export: the format to download."""

    format: Literal["json", "markdown"] = "json"


FINISH_NOTES = {"cancelled": "stopped before the end", "length": "cut off at the token limit"}


def as_json(conversation: StoredConversation) -> str:
    """Write a whole conversation as JSON: its summary's fields, then its messages with all they hold."""
    return conversation.model_dump_json(indent=2)


def as_markdown(conversation: StoredConversation) -> str:
    """Write a conversation as a Markdown document: its title, then each message under its speaker and time."""
    title = conversation.title or f"Conversation {conversation.id[:8]}"
    lines = [f"# {title}", "", f"*Started {stamp(conversation.created_at)}, {conversation.turns} turns.*", ""]
    for record in conversation.records:
        note = FINISH_NOTES.get(record.finish_reason or "")
        heading = f"### {record.role.capitalize()} · {stamp(record.created_at)}" + (f" · {note}" if note else "")
        lines += [heading, "", record.content, ""]
    return "\n".join(lines)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
