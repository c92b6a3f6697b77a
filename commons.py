"""The shared vocabulary, as one import: settings (palaver.core.config), messages and replies (palaver.core.types)."""

from palaver.core.config import EMBEDDED_MODEL_NAME, SETTINGS, WEIGHT_MODES, Settings
from palaver.core.setting import Setting, default_cache_dir
from palaver.core.types import REPLY_LISTENER, Message, PromptInfo, Reply, Usage

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
]
