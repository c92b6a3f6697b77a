"""The shared vocabulary, as one import: settings (palaver.config) and messages and replies (palaver.types)."""

from palaver.config import (
    EMBEDDED_MODEL_NAME,
    SETTINGS,
    WEIGHT_MODES,
    Setting,
    Settings,
    default_cache_dir,
    settings_markdown,
)
from palaver.types import REPLY_LISTENER, Message, PromptInfo, Reply, Usage

__all__ = [
    "EMBEDDED_MODEL_NAME",
    "REPLY_LISTENER",
    "SETTINGS",
    "WEIGHT_MODES",
    "Message",
    "PromptInfo",
    "Reply",
    "Setting",
    "Settings",
    "Usage",
    "default_cache_dir",
    "settings_markdown",
]
