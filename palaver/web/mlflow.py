"""MLflow's scoring protocol: /invocations, /ping and /health, answered as `mlflow models serve` does."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request

from palaver.engine.engine import GenerationRequest
from palaver.errors import InvalidRequest
from palaver.parameters import GenerationParams
from palaver.types import Reply, final
from palaver.web.boundary import get_engine, get_settings, read_json, to_palaver_error
from palaver.web.openai.protocol import MAX_PROMPTS, CompletionRequest
from palaver.web.openai.routes import serve_chat, serve_text, start_all
from palaver.web.security import require_api_key

mlflow = Blueprint("mlflow", __name__)

INPUT_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
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
    settings, engine = get_settings(), get_engine()
    if isinstance(body, Mapping) and "messages" in body:  # llm/v1/chat
        return serve_chat(CompletionRequest.parse_chat(body, settings, require_model=False), engine)
    if isinstance(body, Mapping) and "prompt" in body:  # llm/v1/completions
        return serve_text(CompletionRequest.parse_text(body, settings, require_model=False), engine)
    prompts, params = scoring_input(body)
    return {"predictions": predict(prompts, params)}


@mlflow.errorhandler(Exception)
def mlflow_error(exc: Exception):
    error = to_palaver_error(exc)
    code = (
        "INVALID_PARAMETER_VALUE"
        if error.status == 400 and error.param
        else ERROR_CODES.get(error.status, "INTERNAL_ERROR")
    )
    response = jsonify({"error_code": code, "message": error.message})
    response.status_code = error.status
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def read_csv() -> dict[str, Any]:
    """Read a CSV body (a header row, then one prompt per row) as a dataframe_split."""
    rows = list(csv.reader(io.StringIO(request.get_data(as_text=True))))
    if len(rows) < 2:
        raise InvalidRequest("a CSV body needs a header row and at least one row of data")
    return {"dataframe_split": {"columns": rows[0], "data": rows[1:]}}


def scoring_input(body: Any) -> tuple[list[str], dict[str, Any]]:
    """Take prompts and params from any of MLflow's wrapped formats; a frame's first column holds prompts."""
    if not isinstance(body, Mapping) or len(set(body) - {"params"}) != 1 or not set(body) & set(INPUT_KEYS):
        raise InvalidRequest(
            f"Invalid input. The body must be a JSON object with exactly one of "
            f"{', '.join(INPUT_KEYS)}, and optionally params, or a chat payload with messages"
        )
    key = next(key for key in INPUT_KEYS if key in body)
    data = body[key]
    if key == "dataframe_split":
        if (
            not isinstance(data, Mapping)
            or set(data) - {"columns", "data", "index"}
            or not isinstance(data.get("data"), list)
        ):
            raise InvalidRequest("'dataframe_split' takes columns, data and index, with data a list of rows", param=key)
        data = [row[0] if isinstance(row, list) and row else row for row in data["data"]]
    elif isinstance(data, Mapping):  # columnar: {"prompt": ["a", "b"]}
        data = next(iter(data.values()), None)
    prompts = [data] if isinstance(data, str) else data
    if isinstance(prompts, list):
        prompts = [next(iter(p.values()), None) if isinstance(p, Mapping) else p for p in prompts]
    max_chars = get_settings().max_message_chars
    if (
        not isinstance(prompts, list)
        or not 0 < len(prompts) <= MAX_PROMPTS
        or not all(isinstance(p, str) and p.strip() and len(p) <= max_chars for p in prompts)
    ):
        raise InvalidRequest(
            f"'{key}' must hold 1 to {MAX_PROMPTS} non-empty prompts of at most {max_chars} characters each", param=key
        )
    params = body.get("params", {})
    if not isinstance(params, Mapping):
        raise InvalidRequest("'params' must be an object", param="params")
    return prompts, dict(params)


def predict(prompts: list[str], params: dict[str, Any]) -> list[str]:
    """Complete each prompt; like a transformers text-generation pipeline, include it unless told not to."""
    full_text = params.pop("return_full_text", True)
    if not isinstance(full_text, bool):
        raise InvalidRequest("'return_full_text' must be true or false", param="return_full_text")
    engine = get_engine()
    preset = engine.presets.get(params.pop("preset", None))
    generation: GenerationParams = get_settings().generation_defaults().overridden(params)
    replies = []
    for stream in start_all([GenerationRequest(generation, prompt=p, preset=preset) for p in prompts], engine):
        replies.append(final(stream, Reply))
    return [(prompt + reply.text if full_text else reply.text).strip() for prompt, reply in zip(prompts, replies)]
