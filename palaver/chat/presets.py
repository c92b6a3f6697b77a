"""Prompt presets: a system prompt and a user-message template that every request goes through."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from palaver.backends.mlflow_models import MLFLOW_PRESET, PLACEHOLDER, OpenAIModel, find_mlflow_model
from palaver.core.config import Settings
from palaver.core.errors import ConfigurationError, InvalidRequest
from palaver.core.types import Message

log = logging.getLogger("palaver.chat.presets")

BUILT_IN_DIR = Path(__file__).resolve().parents[2] / "presets"
DEFAULT = "default"


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str = ""
    system_prompt: str = ""
    user_template: str = PLACEHOLDER
    leading: tuple[Message, ...] = ()  # fixed messages between the system prompt and the conversation

    def __post_init__(self):
        if PLACEHOLDER not in self.user_template:
            raise ConfigurationError(f"preset '{self.name}': the user template must contain {PLACEHOLDER}")

    def apply(self, messages: list[Message]) -> list[Message]:
        """Put the system prompt first and every user message through the template."""
        system = [m.content for m in messages if m.role == "system"]
        if self.system_prompt:
            system.insert(0, self.system_prompt)
        shaped = [Message("system", "\n\n".join(system))] if system else []
        shaped.extend(self.leading)
        for message in messages:
            if message.role == "user":
                shaped.append(Message("user", self.format(message.content)))
            elif message.role != "system":
                shaped.append(message)
        return shaped

    def format(self, text: str) -> str:
        """Put text into the user template; braces elsewhere in either are left alone."""
        return self.user_template.replace(PLACEHOLDER, text)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "user_template": self.user_template,
            "leading_messages": [message.as_dict() for message in self.leading],
        }


class Presets:
    """The presets a server offers: the settings' own, the built-in ones and a directory of files."""

    def __init__(self, settings: Settings):
        configured = Preset(
            DEFAULT,
            "Default",
            "The server's own system prompt and template.",
            settings.system_prompt,
            settings.user_template or PLACEHOLDER,
        )
        self.by_name: dict[str, Preset] = {DEFAULT: configured}
        saved = find_mlflow_model(settings.model)
        if isinstance(saved, OpenAIModel):
            template = saved.template
            self.by_name[MLFLOW_PRESET] = Preset(
                MLFLOW_PRESET,
                "MLflow model",
                f"The prompt template saved with {saved.path.name}.",
                template.system_prompt,
                template.user_template,
                template.leading,
            )
        for directory in [BUILT_IN_DIR, *([Path(settings.presets_dir)] if settings.presets_dir else [])]:
            for path in sorted(directory.glob("*.json")):
                self.by_name[path.stem] = load_preset(path)
        if settings.preset not in self.by_name:
            raise ConfigurationError(
                f"PALAVER_PRESET: no preset named '{settings.preset}'; available: {', '.join(self.by_name)}"
            )
        self.default = self.by_name[settings.preset]

    def get(self, name: str | None, param: str = "preset") -> Preset:
        """Return the named preset, or the default for None."""
        if name is None:
            return self.default
        if not isinstance(name, str) or name not in self.by_name:
            raise InvalidRequest(f"'{param}' must be one of: {', '.join(self.by_name)}", param=param)
        return self.by_name[name]

    def __iter__(self):
        return iter(self.by_name.values())


def load_preset(path: Path) -> Preset:
    """Read a preset file: JSON with title, description, system_prompt and user_template."""
    try:
        data = json.loads(path.read_text())
        return Preset(
            path.stem,
            data.get("title", path.stem),
            data.get("description", ""),
            data.get("system_prompt", ""),
            data.get("user_template", PLACEHOLDER),
        )
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"preset file {path}: {exc}") from None
