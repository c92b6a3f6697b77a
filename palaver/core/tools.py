"""Functions a model may call: OpenAI's tool objects, checked, and the grammar that holds a reply to them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from llguidance import LLMatcher
from pydantic import Field, field_validator

from palaver.core.json_schemas import SCHEMA_PARAM, Grammar, canonical_schema, compact, grammar_problem, schema_grammar
from palaver.core.validation import RequestModel, body_error, field_error

MAX_TOOLS = 128  # OpenAI's own limit
MAX_TOOLS_BYTES = 65_536  # every function's schema together, as the one grammar they become
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
# The Hermes format, which Qwen 2.5 and 3, Hermes and SmolLM3 were trained on: a call is a JSON object
# between tags, written with these separators and no other whitespace, so it can never run on in blank space.
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "}\n</tool_call>"
SEPARATORS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
COMPACT = {"whitespace_flexible": False}  # a JSON answer beside the calls, written as response_format writes one
ToolChoiceMode = Literal["none", "auto", "required"]


def call_head(name: str) -> str:
    """Return the text that opens a call to name, up to its arguments."""
    return f'{CALL_OPEN}\n{{"name": "{name}", "arguments": '


class FunctionDefinition(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description="The function's name: letters, digits, _ and -.")
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema for the arguments; none: no arguments.")
    strict: bool | None = Field(None, description="Always enforced here; accepted for OpenAI clients.")

    @field_validator("parameters")
    @classmethod
    def _enforceable(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        return arguments_schema(parameters)

    def as_function(self) -> Function:
        parameters = NO_PARAMETERS if self.parameters is None else self.parameters
        return Function(self.name, self.description, compact(parameters))


def arguments_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Accept a JSON schema for a function's arguments: one the grammar can enforce, of type object."""
    canonical_schema(schema)
    if schema.get("type", "object") != "object":
        raise field_error("must be a JSON schema of type object: arguments are an object")
    return schema


class FunctionTool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestModel):
    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: FunctionName


def unique_names(tools: list[FunctionTool]) -> list[FunctionTool]:
    """Accept tools whose functions have distinct names, and whose schemas fit in one grammar."""
    distinct_functions([tool.function.as_function() for tool in tools])
    return tools


def distinct_functions(functions: list[Function]) -> list[Function]:
    """Accept functions of distinct names whose schemas fit in one grammar."""
    names = [function.name for function in functions]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise field_error(f"must name each function once; '{repeated}' is named twice")
    size = sum(len(function.parameters) for function in functions)
    if size > MAX_TOOLS_BYTES:
        raise field_error(f"must hold at most {MAX_TOOLS_BYTES} bytes of parameter schemas in all (got {size})")
    return functions


@dataclass(frozen=True)
class Function:
    name: str
    description: str | None
    parameters: str  # compact JSON schema

    def as_tool(self) -> dict[str, Any]:
        """Return the function as OpenAI shapes a tool, which is how chat templates expect it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = json.loads(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolUse:
    """The functions a reply may call, which of them it must or may call, and how many at once."""

    functions: tuple[Function, ...]
    choice: str  # none, auto, required, or named: the reply calls the function called `named`
    parallel: bool = True
    named: str | None = None

    @classmethod
    def of(cls, tools: list[FunctionTool], choice: ToolChoiceMode | NamedToolChoice | None, parallel: bool) -> ToolUse:
        functions = tuple(tool.function.as_function() for tool in tools)
        if isinstance(choice, NamedToolChoice):
            return cls(functions, "named", parallel, choice.function.name)
        return cls(functions, choice or "auto", parallel)

    @property
    def calls_possible(self) -> bool:
        return self.choice != "none" and bool(self.functions)

    def prompt_tools(self) -> list[dict[str, Any]] | None:
        """Return the tools the prompt shows the model: none when it may not call them."""
        return [function.as_tool() for function in self.functions] if self.calls_possible else None

    def grammar(self, json_schema: str | None = None) -> str | None:
        """Return the Lark grammar a reply must follow (a text or JSON answer, or calls), or None for any text."""
        if not self.calls_possible:
            return None
        callable_ = [f for f in self.functions if self.choice != "named" or f.name == self.named]
        close = json.dumps(CALL_CLOSE)
        rules = [
            f"fn_{index}: {json.dumps(call_head(f.name))} %json {with_options(f.parameters, SEPARATORS)} {close}"
            for index, f in enumerate(callable_)
        ]
        several = self.parallel and self.choice in ("auto", "required")
        lines = [
            "%llguidance {}",
            "start: " + ("answer | calls" if self.choice == "auto" else "calls"),
            'calls: call ("\\n" call)*' if several else "calls: call",
            "call: " + " | ".join(f"fn_{index}" for index in range(len(callable_))),
            *rules,
        ]
        if self.choice == "auto":
            # Text that never holds a call's opening tag: a reply is either an answer or well-formed calls.
            answer = f"%json {with_options(json_schema, COMPACT)}" if json_schema else "TEXT"
            lines += [f"answer: {answer}", f"TEXT: /(.|\\n)*/ & ~/(.|\\n)*{CALL_OPEN}(.|\\n)*/"]
        return "\n".join(lines)


def with_options(schema: str, options: dict[str, Any]) -> str:
    """Return schema with the grammar library's options (its separators) written in, as a %json rule takes them."""
    return json.dumps({**json.loads(schema), "x-guidance": options}, ensure_ascii=False)


def lark_grammar(lark: str) -> str:
    """Return the grammar for Lark text, such as ToolUse.grammar's."""
    return LLMatcher.grammar_from_lark(lark)


def enforced_calls_grammar(tools: ToolUse, json_schema: str | None = None) -> Grammar | None:
    """Build the grammar a reply with tools must follow, or raise the 400 naming 'tools' when it cannot be held."""
    calls = tools.grammar(json_schema)
    if calls is None:
        return None
    grammar = lark_grammar(calls)
    problem = grammar_problem(grammar)
    if problem is not None:
        raise body_error(f"'tools' cannot be enforced: {problem.splitlines()[0][:300]}", "tools")
    return Grammar(grammar, "tools")


def grammar_for(json_schema: str | None, tools: ToolUse | None) -> Grammar | None:
    """Build, unchecked, the grammar a reply must follow: its calls' (and its answer's), its schema's, or None."""
    calls = tools.grammar(json_schema) if tools is not None else None
    if calls is not None:
        return Grammar(lark_grammar(calls), "tools")
    if json_schema is not None:
        return Grammar(schema_grammar(json_schema), SCHEMA_PARAM)
    return None
