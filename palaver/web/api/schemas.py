"""The JSON API's and the chat form's request and response models, and the schema built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo, field_validator

from palaver.chat.conversations import ChatInput, ChatTurn
from palaver.core.config import Settings
from palaver.core.errors import InvalidRequest
from palaver.core.json_schemas import ResponseFormat
from palaver.core.parameters import PARAMETER_NAMES, Sampling, Thinking
from palaver.core.validation import field_error
from palaver.web.api.listing import is_conversation_id

if TYPE_CHECKING:
    from palaver.backends import ModelRouter


def settings_of(info: ValidationInfo) -> Settings:
    """Return the settings a request is validated against."""
    return (info.context or {}).get("settings") or Settings()


def within_message_limit(text: str, info: ValidationInfo) -> str:
    """Return a message's text if it is no longer than PALAVER_MAX_MESSAGE_CHARS."""
    max_chars = settings_of(info).max_message_chars
    if len(text) > max_chars:
        raise field_error(f"must be at most {max_chars} characters")
    return text


def named_model(models: ModelRouter, name: str | None) -> str:
    """Return the configured model's name a required 'model' names (or its source as written); 404 for any other."""
    if not name:
        known = ", ".join(f"'{served}'" for served in models.names)
        raise InvalidRequest(f"'model' is required; this server serves {known}", param="model")
    return models.resolve(name)


def message_text(text: str, settings: Settings) -> str:
    """Return a message stripped of surrounding whitespace, if it is neither empty nor too long."""
    text = text.strip()
    if not text:
        raise field_error("must not be empty")
    if "\x00" in text:  # no database stores it as text, and no reader wants it
        raise field_error("must not contain NUL characters")
    if len(text) > settings.max_message_chars:
        raise field_error(f"must be at most {settings.max_message_chars} characters (got {len(text)})")
    return text


class ChatRequest(Sampling):
    """POST /api/chat: one user message, in a new conversation or a running one."""

    message: str = Field(description="The user's message.")
    conversation_id: str | None = Field(
        None, min_length=1, max_length=64, description="Continue this conversation; omit it to start a new one."
    )
    preset: str | None = Field(None, description="Name of a preset (see presets) for this conversation.")
    model: str | None = Field(
        None,
        max_length=100,
        description="The model a new conversation runs on (see /v1/models); a conversation keeps its own.",
    )
    replace_last_turn: bool = Field(
        False,
        description="Put this message and its reply in place of the conversation's last turn (regenerate or edit).",
    )
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object, or json_schema: the reply follows the schema, enforced at each token."
    )
    thinking: Thinking = None

    @field_validator("message")
    @classmethod
    def _message_text(cls, text: str, info: ValidationInfo) -> str:
        return message_text(text, settings_of(info))

    @field_validator("conversation_id")
    @classmethod
    def _known_shape(cls, conversation_id: str | None) -> str | None:
        if conversation_id is not None and not is_conversation_id(conversation_id):
            raise field_error("must be a conversation id: letters, digits, '-' and '_' only")
        return conversation_id

    def to_input(self, settings: Settings) -> ChatInput:
        """Return the conversation's input, with the server's defaults for parameters left out."""
        params = replace(self.applied_to(settings.generation_defaults()), thinking=self.thinking)
        grammar = None
        if self.response_format is not None:
            params = replace(params, json_schema=self.response_format.schema_text())
            grammar = self.response_format.grammar()  # built when the schema was checked
        model = self.model or None
        return ChatInput(
            self.message, self.conversation_id, params, self.preset, self.replace_last_turn, model, grammar
        )


class FormChatRequest(ChatRequest):
    """POST / from the chat page or curl: the same fields as form text, the message in textbox."""

    message: str = Field(alias="textbox", description="The user's message.")

    @classmethod
    def from_form(cls, form: Mapping[str, Any], settings: Settings) -> FormChatRequest:
        """Validate form fields; an empty parameter field means the default, as a browser sends it."""
        fields = {name: value for name, value in form.items() if not (name in PARAMETER_NAMES and value == "")}
        return cls.parse(fields, {"settings": settings}, from_text=True)


class UsageModel(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    """The answer to POST /api/chat (and to the form, asked for JSON)."""

    reply: str
    reasoning: str = Field("", description="A thinking model's reasoning before its reply; empty for other models.")
    conversation_id: str
    model: str = Field(description="The model that wrote the reply: the conversation's.")
    usage: UsageModel
    truncated_turns: int = Field(description="Oldest messages left out of the prompt to fit the context window.")
    finish_reason: Literal["stop", "length", "cancelled"]

    @classmethod
    def of(cls, turn: ChatTurn) -> ChatResponse:
        reply = turn.reply
        return cls(
            reply=reply.text,
            reasoning=reply.reasoning,
            conversation_id=turn.conversation_id,
            model=turn.model or "",
            usage=UsageModel(**reply.usage.as_dict()),
            truncated_turns=reply.truncated_turns,
            finish_reason=reply.finish_reason,
        )


def chat_schema(settings: Settings) -> dict[str, Any]:
    """Return the JSON Schemas of /api/chat's request and response, with this server's defaults and limits."""
    request = ChatRequest.model_json_schema()
    properties = request["properties"]
    properties["message"]["maxLength"] = settings.max_message_chars
    defaults = settings.generation_defaults()
    for name in PARAMETER_NAMES:
        properties[name]["default"] = list(defaults.stop) if name == "stop" else getattr(defaults, name)
    properties["preset"]["default"] = settings.preset
    return {"request": request, "response": ChatResponse.model_json_schema()}


MAX_PROMPTS = 16


def prompt_list(value: Any, info: ValidationInfo) -> list[str]:
    """Accept one prompt or a list of 1 to MAX_PROMPTS, each non-empty and within the message limit."""
    max_chars = settings_of(info).max_message_chars
    prompts = [value] if isinstance(value, str) else value
    if (
        not isinstance(prompts, list)
        or not 0 < len(prompts) <= MAX_PROMPTS
        or not all(isinstance(p, str) and p.strip() and len(p) <= max_chars for p in prompts)
    ):
        raise field_error(
            f"must be a prompt or a list of 1 to {MAX_PROMPTS} non-empty prompts, each a string of at most "
            f"{max_chars} characters"
        )
    return prompts


Prompts = Annotated[list[str], BeforeValidator(prompt_list)]
