"""The Responses API's tools: function tools in its flat shape, the tool choice, and hosted tools refused by name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from palaver.core.json_schemas import compact
from palaver.core.tools import NAME_PATTERN, NO_PARAMETERS, Function, ToolUse, arguments_schema
from palaver.core.validation import RequestModel, field_error, unsupported

ToolChoiceMode = Literal["none", "auto", "required"]
# Tools OpenAI runs on its own side: none can run here, so each is refused by its name, never ignored.
HOSTED_TOOLS = (
    "web_search",
    "web_search_preview",
    "file_search",
    "computer_use_preview",
    "computer",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "tool_search",
    "namespace",
)
FUNCTIONS_ONLY = 'send function tools: {"type": "function", "name", "description", "parameters", "strict"}'


def refused_tool(kind: str) -> Any:
    """Return the error for a tool of a kind other than function, naming the kind."""
    if kind in HOSTED_TOOLS or kind.startswith(("web_search", "computer_use")):
        return unsupported(f"'{kind}' tools run at OpenAI and are not supported here; {FUNCTIONS_ONLY}")
    return unsupported(f"tools of type '{kind}' are not supported; {FUNCTIONS_ONLY}")


class FunctionToolParam(RequestModel):
    """A function the reply may call, in the Responses API's flat shape; its arguments held to parameters."""

    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN, description="The function's name: letters, digits, _ and -.")
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema for the arguments; none: no arguments.")
    strict: bool | None = Field(None, description="Always enforced here; accepted for OpenAI clients.")

    @field_validator("type", mode="before")
    @classmethod
    def _function_only(cls, kind: Any) -> Any:
        if isinstance(kind, str) and kind != "function":
            raise refused_tool(kind)
        return kind

    @field_validator("parameters")
    @classmethod
    def _enforceable(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        return arguments_schema(parameters)

    def as_function(self) -> Function:
        parameters = NO_PARAMETERS if self.parameters is None else self.parameters
        return Function(self.name, self.description, compact(parameters))

    def described(self) -> dict[str, Any]:
        """Describe the tool as a response echoes it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": True,  # every call is held to its schema
        }


class FunctionChoice(RequestModel):
    """A tool choice that names the one function the reply must call."""

    type: Literal["function"]
    name: str = Field(pattern=NAME_PATTERN)


def a_mode_or_a_function(choice: Any) -> Any:
    """Accept none, auto, required or a named function; refuse a hosted tool's or an allowed_tools choice by type."""
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if isinstance(kind, str) and kind != "function":
        raise unsupported(
            f"a tool_choice of type '{kind}' is not supported; "
            'send none, auto, required or {"type": "function", "name": ...}'
        )
    try:
        return FunctionChoice.model_validate(choice)
    except ValueError:
        raise field_error('must be none, auto, required, or {"type": "function", "name": ...}') from None


def tool_use(
    tools: list[FunctionToolParam] | None, choice: ToolChoiceMode | FunctionChoice | None, parallel: bool
) -> ToolUse | None:
    """Return the functions the reply may call, and how; None without tools."""
    if not tools:
        return None
    functions = tuple(tool.as_function() for tool in tools)
    if isinstance(choice, FunctionChoice):
        return ToolUse(functions, "named", parallel, choice.name)
    return ToolUse(functions, choice or "auto", parallel)


def described_choice(choice: ToolChoiceMode | FunctionChoice | None) -> Any:
    """Describe the tool choice as a response echoes it: auto when none was sent."""
    if isinstance(choice, FunctionChoice):
        return {"type": "function", "name": choice.name}
    return choice or "auto"
