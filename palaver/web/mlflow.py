"""MLflow's scoring protocol: /invocations, /ping and /health, answered as `mlflow models serve` does."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from flask import Blueprint, Response, request
from pydantic import BeforeValidator, Field, model_validator

from palaver.backends.mlflow_models import OpenAIModel, find_mlflow_model
from palaver.core.errors import InvalidRequest
from palaver.core.parameters import Sampling
from palaver.core.requests import GenerationRequest
from palaver.core.types import Message, Reply, final
from palaver.core.validation import RequestModel, body_error, field_error
from palaver.web.api.schemas import prompt_list
from palaver.web.body import read_json
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.generations import start_all
from palaver.web.openai.request_schemas import ChatCompletionRequest, TextCompletionRequest
from palaver.web.openai.routes import serve_chat, serve_text
from palaver.web.security import require_api_key
from palaver.web.services import services

mlflow = Blueprint("mlflow", __name__)

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
INVALID_INPUT = (
    f"Invalid input. The body must be a JSON object with exactly one of {', '.join(INPUT_KEYS)}, "
    "and optionally params, or a chat payload with messages"
)
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@mlflow.get("/ping")
@mlflow.get("/health")
def ping():
    return Response("\n", mimetype="application/json")


@mlflow.post("/invocations")
def invocations():
    require_api_key()
    body = read_csv() if request.mimetype in ("text/csv", "application/csv") else read_json()
    context = {"settings": services().settings}
    if isinstance(body, Mapping) and "messages" in body:  # llm/v1/chat
        return serve_chat(ChatCompletionRequest.parse(body, context), require_model=False)
    if isinstance(body, Mapping) and "prompt" in body:  # llm/v1/completions
        return serve_text(TextCompletionRequest.parse(body, context), require_model=False)
    if not isinstance(body, Mapping):
        raise InvalidRequest(INVALID_INPUT)
    return {"predictions": predict(ScoringRequest.parse(body, context))}


@mlflow.errorhandler(Exception)
def mlflow_error(exc: Exception):
    error = to_palaver_error(exc)
    code = (
        "INVALID_PARAMETER_VALUE"
        if error.status == 400 and error.param
        else ERROR_CODES.get(error.status, "INTERNAL_ERROR")
    )
    return json_error(error, {"error_code": code, "message": error.message})


def read_csv() -> dict[str, Any]:
    """Read a CSV body (a header row, then one prompt per row) as a dataframe_split."""
    rows = list(csv.reader(io.StringIO(request.get_data(as_text=True))))
    if len(rows) < 2:
        raise InvalidRequest("a CSV body needs a header row and at least one row of data")
    return {"dataframe_split": {"columns": rows[0], "data": rows[1:]}}


def first_column(rows: Any) -> Any:
    """Take each record's (or row's) first value: a frame's first column holds the prompts."""
    if isinstance(rows, Mapping):  # columnar: {"prompt": ["a", "b"]}
        return next(iter(rows.values()), None)
    if isinstance(rows, list):
        return [next(iter(row.values()), None) if isinstance(row, Mapping) else row for row in rows]
    return rows


def split_frame(frame: Any) -> Any:
    """Take the prompts of a dataframe_split: the first value of each row of data."""
    if (
        not isinstance(frame, Mapping)
        or set(frame) - {"columns", "data", "index"}
        or not isinstance(frame.get("data"), list)
    ):
        raise field_error("must be an object of columns, data and index, with data a list of rows")
    return [row[0] if isinstance(row, list) and row else row for row in frame["data"]]


def prompts_of(extract: Callable[[Any], Any]) -> Any:
    """Return a validator that takes prompts out of one of MLflow's input formats, then checks them."""
    return BeforeValidator(lambda value, info: prompt_list(extract(value), info))


class ScoringParams(Sampling):
    """The params of a scoring request: generation parameters, plus the pipeline's own."""

    return_full_text: bool | None = Field(
        None,
        description="Begin each prediction with its prompt, as a transformers pipeline does; "
        "by default, except for an openai-flavour MLflow model.",
    )
    preset: str | None = Field(None, description="Name of a Palaver preset.")


class ScoringRequest(RequestModel):
    """POST /invocations with one of MLflow's input formats: each is read as a list of prompts."""

    dataframe_split: Annotated[list[str] | None, prompts_of(split_frame)] = None
    dataframe_records: Annotated[list[str] | None, prompts_of(first_column)] = None
    instances: Annotated[list[str] | None, prompts_of(first_column)] = None
    inputs: Annotated[list[str] | None, prompts_of(first_column)] = None
    params: ScoringParams = ScoringParams()

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, body: Any) -> Any:
        if not isinstance(body, Mapping) or len(set(body) - {"params"}) != 1 or not set(body) & set(INPUT_KEYS):
            raise body_error(INVALID_INPUT)
        return body

    @property
    def input_key(self) -> str:
        """Return which of MLflow's input formats the body used."""
        return next(key for key in INPUT_KEYS if getattr(self, key) is not None)

    @property
    def prompts(self) -> list[str]:
        return getattr(self, self.input_key)


def predict(scoring: ScoringRequest) -> list[str]:
    """Complete each prompt; like a transformers text-generation pipeline, include it unless told not to."""
    app, params = services(), scoring.params
    generation = params.applied_to(app.settings.generation_defaults())
    preset = app.presets.get(params.preset)
    saved = find_mlflow_model(app.settings.model)
    if isinstance(saved, OpenAIModel) and saved.task == "chat.completions":  # each row is a user message, as in MLflow
        work = [GenerationRequest(generation, messages=preset.apply([Message("user", p)])) for p in scoring.prompts]
    else:
        work = [GenerationRequest(generation, prompt=preset.format(p)) for p in scoring.prompts]
    replies = [final(stream, Reply) for stream in start_all(work, app.backend, scoring.input_key)[0]]
    full_text = params.return_full_text if params.return_full_text is not None else not isinstance(saved, OpenAIModel)
    return [
        (prompt + reply.text if full_text else reply.text).strip() for prompt, reply in zip(scoring.prompts, replies)
    ]
