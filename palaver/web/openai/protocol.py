"""OpenAI's request and response objects: parse requests for the engine, and build its answers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palaver.config import Settings
from palaver.errors import InvalidRequest, NotFound
from palaver.parameters import GenerationParams
from palaver.types import Message, Reply, Usage

# Client field -> generation parameter. top_k and repetition_penalty are extensions, as in vLLM.
PARAMETER_FIELDS = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
}
# Fields we accept only at a value that changes nothing; anything else is a clear 400, never ignored.
NEUTRAL_FIELDS: dict[str, tuple[Any, str]] = {
    "n": (1, "only n=1 is supported"),
    "best_of": (1, "only best_of=1 is supported"),
    "presence_penalty": (0, "presence_penalty is not supported; use repetition_penalty"),
    "frequency_penalty": (0, "frequency_penalty is not supported; use repetition_penalty"),
    "logprobs": (False, "logprobs are not supported"),
    "top_logprobs": (0, "top_logprobs are not supported"),
    "logit_bias": ({}, "logit_bias is not supported"),
    "tools": ([], "tools are not supported"),
    "functions": ([], "functions are not supported"),
    "tool_choice": ("none", "tools are not supported"),
    "function_call": ("none", "functions are not supported"),
    "response_format": ({"type": "text"}, 'only response_format {"type": "text"} is supported'),
    "suffix": ("", "suffix is not supported"),
    "store": (False, "storing completions is not supported"),
    "modalities": (["text"], "only the text modality is supported"),
}
PASSIVE_FIELDS = {"model", "stream", "stream_options", "user", "preset", "parallel_tool_calls", "metadata"}
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_PROMPTS = 16


@dataclass(frozen=True)
class CompletionRequest:
    """A validated chat or text completion request."""

    model: str
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False
    preset: str | None = None
    messages: list[Message] | None = None
    prompts: list[str] | None = None
    echo: bool = False

    @classmethod
    def parse_chat(cls, body: Any, settings: Settings, *, require_model: bool = True) -> CompletionRequest:
        """Validate a chat.completions body."""
        fields = common_fields(body, settings, {"messages"}, require_model)
        messages = parse_messages(fields.get("messages"), settings.max_message_chars, settings.max_messages)
        return cls(messages=messages, **fields["common"])

    @classmethod
    def parse_text(cls, body: Any, settings: Settings, *, require_model: bool = True) -> CompletionRequest:
        """Validate a completions body, whose prompt is a string or a list of strings."""
        fields = common_fields(body, settings, {"prompt", "echo"}, require_model)
        prompts = fields.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if (
            not isinstance(prompts, list)
            or not 0 < len(prompts) <= MAX_PROMPTS
            or not all(isinstance(p, str) and p.strip() and len(p) <= settings.max_message_chars for p in prompts)
        ):
            raise InvalidRequest(
                f"'prompt' must be a non-empty string of at most {settings.max_message_chars} "
                f"characters, or a list of 1 to {MAX_PROMPTS} such strings",
                param="prompt",
            )
        echo = fields.get("echo") or False
        if not isinstance(echo, bool):
            raise InvalidRequest("'echo' must be true or false", param="echo")
        return cls(prompts=prompts, echo=echo, **fields["common"])


def common_fields(body: Any, settings: Settings, own: set[str], require_model: bool) -> dict[str, Any]:
    """Check every field of a completion body; return its own fields and the shared ones."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    body = {key: value for key, value in body.items() if value is not None}  # null means "not given"
    for name, value in body.items():
        if name in NEUTRAL_FIELDS and value != NEUTRAL_FIELDS[name][0]:
            raise InvalidRequest(NEUTRAL_FIELDS[name][1], param=name, code="unsupported_parameter")
        if name not in NEUTRAL_FIELDS and name not in PASSIVE_FIELDS | own | set(PARAMETER_FIELDS):
            raise InvalidRequest(f"unknown field '{name}'", param=name)
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise InvalidRequest("send either 'max_tokens' or 'max_completion_tokens', not both", param="max_tokens")
    model = check_model(body.get("model"), settings, require_model)
    stream = check_bool(body.get("stream", False), "stream")
    options = body.get("stream_options", {})
    if not isinstance(options, Mapping) or set(options) - {"include_usage"} or (options and not stream):
        raise InvalidRequest(
            "'stream_options' takes only include_usage, and only with stream: true", param="stream_options"
        )
    if not isinstance(body.get("user", ""), str):
        raise InvalidRequest("'user' must be a string", param="user")
    given = {name: body[name] for name in PARAMETER_FIELDS if name in body}
    params = settings.generation_defaults().overridden(given, aliases=PARAMETER_FIELDS)
    if "temperature" in given:  # OpenAI clients sample whenever the temperature is above zero
        params = GenerationParams(**{**params.__dict__, "do_sample": params.temperature > 0})
    preset = body.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise InvalidRequest("'preset' must be a preset's name", param="preset")
    common = dict(
        model=model,
        params=params,
        stream=stream,
        preset=preset,
        include_usage=check_bool(options.get("include_usage", False), "stream_options.include_usage"),
    )
    return {**{name: body[name] for name in own if name in body}, "common": common}


def check_model(model: Any, settings: Settings, required: bool) -> str:
    """Accept the served model's name (or PALAVER_MODEL as written); refuse any other."""
    served = settings.model_name
    if model is None and not required:
        return served
    if not isinstance(model, str) or not model:
        raise InvalidRequest(f"'model' is required; this server serves '{served}'", param="model")
    if model not in {served, settings.model}:
        raise NotFound(
            f"the model '{model}' does not exist; this server serves '{served}'", param="model", code="model_not_found"
        )
    return served


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false", param=name)
    return value


def parse_messages(raw: Any, max_chars: int, max_messages: int) -> list[Message]:
    """Validate OpenAI-style messages; content may be a string or a list of text parts."""
    if not isinstance(raw, list) or not 0 < len(raw) <= max_messages:
        raise InvalidRequest(
            f"'messages' must be a list of 1 to {max_messages} messages"
            + (f" (got {len(raw)})" if isinstance(raw, list) else ""),
            param="messages",
        )
    messages = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, Mapping) or item.get("role") not in CHAT_ROLES:
            raise InvalidRequest(
                f"'{where}' must be an object whose role is one of {', '.join(CHAT_ROLES)}", param=f"{where}.role"
            )
        content = text_content(item.get("content"), f"{where}.content")
        if len(content) > max_chars:
            raise InvalidRequest(f"'{where}.content' must be at most {max_chars} characters", param=f"{where}.content")
        messages.append(Message(CHAT_ROLES[item["role"]], content))
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise InvalidRequest("'messages' must hold at least one non-empty user message", param="messages")
    return messages


def text_content(content: Any, where: str) -> str:
    """Return a message's text, joining text parts; any other kind of part is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(part["text"] for part in content)
    raise InvalidRequest(f"'{where}' must be a string or a list of text parts; only text is supported", param=where)


# ---------------------------------------------------------------------------
# Response objects.


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(reply: Reply) -> str:
    return "length" if reply.finish_reason == "length" else "stop"


def usage_info(usage: Usage, truncated_turns: int = 0) -> dict[str, int]:
    """Build OpenAI's usage object, with the turns left out of the prompt as an extra field."""
    return {**usage.as_dict(), "truncated_turns": truncated_turns}


def chat_completion(completion_id: str, model: str, reply: Reply) -> dict[str, Any]:
    """Build a chat.completion object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "logprobs": None,
                "finish_reason": finish_reason(reply),
            }
        ],
        "usage": usage_info(reply.usage, reply.truncated_turns),
        "system_fingerprint": None,
    }


def chat_chunk(
    completion_id: str,
    model: str,
    created: int,
    delta: dict | None = None,
    reason: str | None = None,
    usage: dict | None = None,
    include_usage: bool = False,
) -> dict:
    """Build a chat.completion.chunk; a usage chunk has no choices."""
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [] if usage else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": reason}],
    }
    if include_usage:
        chunk["usage"] = usage
    return chunk


def text_completion(
    completion_id: str, model: str, choices: list[dict], usage: Usage | None, created: int | None = None
) -> dict[str, Any]:
    """Build a text_completion object (or one of its stream chunks, without usage)."""
    completion = {
        "id": completion_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if usage is not None:
        completion["usage"] = usage_info(usage)
    return completion


def text_choice(index: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
