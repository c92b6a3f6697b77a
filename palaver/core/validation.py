"""Typed request models, and the one translation of their validation errors into Palaver's 400s."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Literal, Self, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from palaver.core.errors import InvalidRequest, PalaverError


class RequestModel(BaseModel):
    """A request body: unknown fields refused, types strict, numbers finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_not_given(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {name: value for name, value in data.items() if value is not None}
        return data

    @classmethod
    def parse(cls, data: Any, context: Mapping[str, Any] | None = None, *, from_text: bool = False) -> Self:
        """Validate data (form text when from_text), or raise the InvalidRequest that names the first bad field."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("the request body must be a JSON object")
        try:
            return cls.model_validate(dict(data), strict=not from_text, context=dict(context or {}))
        except ValidationError as exc:
            raise invalid_request(exc.errors()[0], cls) from None


def field_error(must: str, field: str | None = None) -> PydanticCustomError:
    """Return an error the translation completes as "'<field>' <must>"; a model's check names its field."""
    return PydanticCustomError("palaver_field", "{must}", {"must": must, "field": field})


def body_error(message: str, param: str | None = None) -> PydanticCustomError:
    """Return an error about the body as a whole (or fields together), told to the client as it is."""
    return PydanticCustomError("palaver_body", "{message}", {"message": message, "param": param})


def unsupported(message: str) -> PydanticCustomError:
    """Return an error for a field Palaver cannot honour at the value sent."""
    return PydanticCustomError("palaver_unsupported", "{message}", {"message": message})


def neutral_or_refused(value: Any, neutrals: tuple[Any, ...], message: str) -> Any:
    """Return a field's value when it is one that changes nothing; otherwise raise the error that names it."""
    if value not in neutrals:
        raise unsupported(message)
    return value


def invalid_request(error: ErrorDetails, model: type[BaseModel]) -> PalaverError:
    """Translate one of pydantic's errors into the message Palaver's clients read."""
    loc, ctx = error["loc"], error.get("ctx") or {}
    param = location(loc) or None
    kind = error["type"]
    if kind == "palaver_body":  # a nested model's check may name its field from the model: tool_call_id
        named = ctx.get("param")
        nested = param and named and not named.startswith(param)
        return InvalidRequest(ctx["message"], param=f"{param}.{named}" if nested else named)
    if kind == "palaver_unsupported":
        return InvalidRequest(ctx["message"], param=param, code="unsupported_parameter")
    if kind == "palaver_field":
        param = ".".join(part for part in (param, ctx.get("field")) if part) or None
        return InvalidRequest(f"'{param}' {ctx['must']}", param=param)
    if kind == "missing":
        return InvalidRequest(f"'{param}' is required", param=param)
    if kind == "string_pattern_mismatch":
        return InvalidRequest(f"'{param}' must match the pattern {ctx['pattern']}", param=param)
    owner, field = field_at(model, loc)
    if kind == "extra_forbidden":
        accepted = ", ".join(field_names(owner)) if owner else ""
        return InvalidRequest(
            f"unknown field '{loc[-1]}'" + (f"; accepted fields are {accepted}" if accepted else ""), param=param
        )
    if field is not None:
        item = nested_model(field) if isinstance(loc[-1], int) else None
        must = "an object with the fields " + ", ".join(field_names(item)) if item else expected(field)
        return InvalidRequest(f"'{param}' must be {must}", param=param)
    return InvalidRequest(f"'{param}' is invalid: {error['msg']}", param=param)


def location(loc: tuple[int | str, ...]) -> str:
    """Write a location as clients name it: messages[0].content."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def field_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Find the model that holds the field at loc, and the field itself when it is one of that model's."""
    owner: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if owner is None or (field is not None and (owner := nested_model(field)) is None):
            return None, None
        field = by_alias(owner).get(part)
        if field is None:
            return owner, None
    return owner, field


def nested_model(field: FieldInfo) -> type[BaseModel] | None:
    """Return the model a field holds (alone, optional or in a list), if any."""
    pending = [field.annotation]
    while pending:
        kind = pending.pop()
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
        pending.extend(get_args(kind))
    return None


def by_alias(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def field_names(model: type[BaseModel]) -> list[str]:
    return list(by_alias(model))


def expected(field: FieldInfo) -> str:
    """Describe the values a field accepts, from its type and constraints."""
    kind = without_none(field.annotation)
    bounds = {type(item): item for item in field.metadata}
    if kind is bool:
        return "true or false"
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(option) for option in get_args(kind))
    if kind in (int, float):
        parts = ["an integer" if kind is int else "a finite number"]
        if Gt in bounds:
            parts.append(f"greater than {bounds[Gt].gt}")
        if Ge in bounds:
            parts.append(f"at least {bounds[Ge].ge}")
        if Lt in bounds:
            parts.append(f"less than {bounds[Lt].lt}")
        if Le in bounds:
            parts.append(f"at most {bounds[Le].le}")
        return " and ".join([" ".join(parts[:2]), *parts[2:]]) if len(parts) > 1 else parts[0]
    if kind is str:
        low = bounds[MinLen].min_length if MinLen in bounds else 0
        if MaxLen in bounds:
            return f"a string of {low} to {bounds[MaxLen].max_length} characters"
        return "a string"
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return "an object with the fields " + ", ".join(field_names(kind))
    if get_origin(kind) in (list, tuple):
        return "a list"
    if kind is dict or get_origin(kind) is dict:
        return "a JSON object"
    if get_origin(kind) in (Union, types.UnionType):  # str or a named function, say
        return " or ".join(expected(FieldInfo.from_annotation(option)) for option in get_args(kind))
    return "a " + getattr(kind, "__name__", "value of the documented type")


def without_none(annotation: Any) -> Any:
    """Return annotation without the None of an optional type."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = [option for option in get_args(annotation) if option is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation
