"""A generation request as its caller makes it: what to answer, how, on which model, for whom; and a cancel flag."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from palaver.core.json_schemas import Grammar
from palaver.core.parameters import GenerationParams
from palaver.core.tools import ToolUse
from palaver.core.types import CALLER, Caller, CallersRequest, Message


@dataclass(eq=False)  # a request is itself: compared and hashed by identity
class GenerationRequest(CallersRequest):
    """One request to a backend: its inputs, as the boundary checked them, and a way to stop it."""

    params: GenerationParams
    messages: list[Message] | None = None  # a conversation (its preset applied), formatted by the model's family...
    prompt: str | None = None  # ...or a raw completion prompt
    tools: ToolUse | None = None  # functions a chat's reply may call
    # What the reply must follow (params.json_schema's, or the tools'), built and checked where the request came
    # in; None without one, or from a caller that checked none (the backend then builds it, once).
    grammar: Grammar | None = None
    model: str | None = None  # the configured model's name, as the router resolved it; None: the default
    max_history: int | None = None  # most messages (but system ones) the prompt may keep; None: what the context fits
    client_gone: Callable[[], bool] | None = None
    caller: Caller = field(default_factory=CALLER.get)  # whose request it is, as the view that made it knew
    cancelled: threading.Event = field(default_factory=threading.Event)
