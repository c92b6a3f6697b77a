"""Generation parameters: their types and allowed ranges, and the one path that validates them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from palaver.errors import InvalidRequest


def parse_bool(value: str) -> bool:
    """Parse a boolean written as 1/0, true/false, yes/no or on/off."""
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: type
    minimum: float | None
    maximum: float | None
    help: str
    exclusive_minimum: bool = False
    nullable: bool = False
    default: Any = None  # for parameters that have no setting

    def range_text(self) -> str:
        """Describe the allowed values in words, for error messages."""
        if self.kind is bool:
            return "true or false"
        if self.kind is tuple:
            return f"a string or a list of at most {self.maximum} non-empty strings"
        low = f"greater than {self.minimum}" if self.exclusive_minimum else f"at least {self.minimum}"
        text = f"{'an integer' if self.kind is int else 'a finite number'} {low} and at most {self.maximum}"
        return text + (", or null" if self.nullable else "")

    def check(self, value: Any, *, from_text: bool = False, field_name: str | None = None) -> Any:
        """Return value converted to this parameter's type, or raise InvalidRequest naming field_name."""
        try:
            return self._check(value, from_text)
        except InvalidRequest:
            field_name = field_name or self.name
            raise InvalidRequest(f"'{field_name}' must be {self.range_text()}", param=field_name) from None

    def _check(self, value: Any, from_text: bool) -> Any:
        if from_text:
            value = self._from_text(value)
        if value is None and self.nullable:
            return None
        if self.kind is tuple:
            return self._check_strings(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise self._invalid()
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._invalid()
        # NaN passes every comparison below, and sampling with it fails the whole batch.
        if isinstance(value, float) and not math.isfinite(value):
            raise self._invalid()
        if self.kind is int and isinstance(value, float) and not value.is_integer():
            raise self._invalid()
        # Compare before converting: float() of an integer with hundreds of digits overflows.
        too_low = value <= self.minimum if self.exclusive_minimum else value < self.minimum
        if too_low or value > self.maximum:
            raise self._invalid()
        value = int(value) if self.kind is int else float(value)
        return value

    def _check_strings(self, value: Any) -> tuple[str, ...]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or (self.maximum is not None and len(values) > self.maximum):
            raise self._invalid()
        if not all(isinstance(v, str) and 0 < len(v) <= 100 for v in values):
            raise self._invalid()
        return tuple(values)

    def _from_text(self, text: Any) -> Any:
        if not isinstance(text, str) or self.kind is tuple:
            return text
        if text.strip() == "" and self.nullable:
            return None
        try:
            return parse_bool(text) if self.kind is bool else self.kind(text)
        except ValueError:
            raise self._invalid() from None

    def _invalid(self) -> InvalidRequest:
        return InvalidRequest(f"'{self.name}' must be {self.range_text()}", param=self.name)

    def describe(self, default: Any) -> dict[str, Any]:
        """Describe this parameter for the published schema."""
        kind = {bool: "boolean", int: "integer", float: "number", tuple: "string or array of strings"}[self.kind]
        return {
            "name": self.name,
            "type": kind,
            "default": default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "exclusive_minimum": self.exclusive_minimum,
            "nullable": self.nullable,
            "description": self.help,
        }


GENERATION_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("max_new_tokens", int, 1, 1024, "Longest reply, in tokens."),
    Parameter("temperature", float, 0.0, 2.0, "Sampling temperature; 0 means greedy decoding."),
    Parameter(
        "top_p",
        float,
        0.0,
        1.0,
        "Sample from the smallest set of tokens whose probability reaches top_p.",
        exclusive_minimum=True,
    ),
    Parameter("top_k", int, 0, 1000, "Sample from the k most likely tokens; 0 disables the cut-off."),
    Parameter("repetition_penalty", float, 1.0, 2.0, "Penalty for repeating tokens; 1 disables it."),
    Parameter("do_sample", bool, None, None, "Sample; false means greedy decoding."),
    Parameter("seed", int, 0, 2**32 - 1, "Random seed for reproducible sampling.", nullable=True),
    Parameter("stop", tuple, 0, 4, "Text that ends the reply when generated; it is left out of the reply.", default=()),
)
PARAMETERS_BY_NAME = {param.name: param for param in GENERATION_PARAMETERS}


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    do_sample: bool
    seed: int | None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def overridden(
        self, values: Mapping[str, Any], *, from_text: bool = False, aliases: Mapping[str, str] | None = None
    ) -> GenerationParams:
        """Return a copy with values validated and applied; aliases map client field names to ours."""
        aliases = aliases or {}
        changes = {}
        for field_name, value in values.items():
            param = PARAMETERS_BY_NAME.get(aliases.get(field_name, field_name))
            if param is None:
                allowed = ", ".join(aliases or PARAMETERS_BY_NAME)
                raise InvalidRequest(
                    f"unknown field '{field_name}'; accepted parameters are {allowed}", param=field_name
                )
            changes[param.name] = param.check(value, from_text=from_text, field_name=field_name)
        return GenerationParams(**{**self.__dict__, **changes})
