"""Ollama's API under /ollama: chat, generate, embeddings, the model list, loading and unloading, pulls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing

from flask import Blueprint, Response, request

from palaver.backends import ModelRouter
from palaver.core.errors import ConversationBusy, PalaverError
from palaver.core.requests import GenerationRequest
from palaver.core.types import Reply, ReplyEvents
from palaver.web.body import read_json
from palaver.web.connection import client_gone_probe
from palaver.web.errors import json_error, to_palaver_error
from palaver.web.generations import TRUNCATED_HEADER, start_all
from palaver.web.ollama.embeddings import (
    EmbeddingResponse,
    EmbeddingsRequest,
    EmbedRequest,
    EmbedResponse,
    timed_embeddings,
)
from palaver.web.ollama.events import chat_lines, generate_lines, json_lines
from palaver.web.ollama.models import (
    ModelTag,
    RunningList,
    RunningModel,
    ShowRequest,
    ShowResponse,
    TagList,
    loaded_names,
)
from palaver.web.ollama.pull import pull_model
from palaver.web.ollama.request_schemas import ChatRequest, GenerateRequest, OllamaRequest, served_model
from palaver.web.ollama.response_schemas import ChatResponse, Clock, ErrorResponse, GenerateResponse
from palaver.web.security import require_api_key
from palaver.web.services import services

OLLAMA_VERSION = "0.9.0"  # the Ollama API this surface follows: tools, structured outputs and (from 0.9.0) thinking
# Answers a client probes before it has a key to send: constant, and no model behind them.
PROBES = {"ollama.running", "ollama.version"}
NOT_SERVED = {
    "push": "pushing models is not supported: Palaver serves the models PALAVER_MODELS configures",
    "create": "creating models is not supported: configure models with PALAVER_MODELS",
    "copy": "copying models is not supported: configure models (and their names) with PALAVER_MODELS",
    "delete": "deleting models is not supported: configure models with PALAVER_MODELS",
}
UNLOAD_WAIT = 5.0  # how long keep_alive 0 waits for a model's last requests to end before it answers 409
AFTER_REPLY_WAIT = 1.0  # ...and after a reply with keep_alive 0, for its own request to be counted out

ollama = Blueprint("ollama", __name__, url_prefix="/ollama")


class NotServed(PalaverError):
    status = 501
    type = "not_implemented"


@ollama.before_request
def require_key_but_for_probes() -> None:
    """Refuse a request without a valid key (when keys are set), but for the probes clients send before one."""
    if request.endpoint not in PROBES:
        require_api_key()


@ollama.get("/", strict_slashes=False)
def running():
    """Answer Ollama's probe, as Ollama does."""
    return Response("Ollama is running", mimetype="text/plain")


@ollama.get("/api/version")
def version():
    """Name the version of Ollama's API served here, which clients read to know what they may send."""
    return {"version": OLLAMA_VERSION}


@ollama.post("/api/chat")
def chat():
    """Answer a conversation: one object, or (Ollama's default) a stream of them; no messages loads the model."""
    app = services()
    given = ChatRequest.parse(read_json(), {"settings": app.settings})
    model = given.served_model(app.backend)
    if given.loads_only:
        return load_or_unload(given, model, ChatResponse)
    generation = GenerationRequest(
        given.generation_params(app.settings.generation_defaults()),
        messages=app.presets.get(None).apply(given.conversation()),
        tools=given.tool_use(),
        grammar=given.reply_grammar(),
        model=model,
        client_gone=client_gone_probe(),
    )
    return answer(given, generation, chat_lines, ChatResponse)


@ollama.post("/api/generate")
def generate():
    """Answer a prompt (through the chat template unless raw); no prompt loads the model."""
    app = services()
    given = GenerateRequest.parse(read_json(), {"settings": app.settings})
    model = given.served_model(app.backend)
    if given.loads_only:
        return load_or_unload(given, model, GenerateResponse)
    inputs = {"prompt": given.prompt} if given.raw else {"messages": app.presets.get(None).apply(given.conversation())}
    generation = GenerationRequest(
        given.generation_params(app.settings.generation_defaults()),
        **inputs,
        grammar=given.reply_grammar(),
        model=model,
        client_gone=client_gone_probe(),
    )
    return answer(given, generation, generate_lines, GenerateResponse)


@ollama.post("/api/embed")
def embed():
    """Embed a text or a list of texts, each cut to the context unless truncate is false; none loads the model."""
    router = services().backend
    given = EmbedRequest.parse(read_json())
    model = served_model(router, given.model)
    if given.unloads_after and not given.input:
        unload_now(router, model)
        return EmbedResponse(model=router.public_name(model), embeddings=[]).model_dump()
    answer = timed_embeddings(router, given.embedding_request(model), "input")
    if given.unloads_after:
        unload_when_idle(router, model, AFTER_REPLY_WAIT)
    return answer.model_dump()


@ollama.post("/api/embeddings")
def embeddings():
    """Embed one prompt, Ollama's older way: its vector under 'embedding'; no prompt loads the model."""
    router = services().backend
    given = EmbeddingsRequest.parse(read_json())
    model = served_model(router, given.model)
    if given.unloads_after and not given.prompt:
        unload_now(router, model)
        return EmbeddingResponse(embedding=[]).model_dump()
    answer = timed_embeddings(router, given.embedding_request(model), "prompt")
    if given.unloads_after:
        unload_when_idle(router, model, AFTER_REPLY_WAIT)
    return EmbeddingResponse(embedding=answer.embeddings[0] if answer.embeddings else []).model_dump()


@ollama.get("/api/tags")
def tags():
    """List every served model, loaded or not, with what its file says."""
    router = services().backend
    return TagList(models=[ModelTag.of(router, name) for name in router.names]).model_dump(mode="json")


@ollama.post("/api/show")
def show():
    """Describe a model: its details, its file's metadata, its template and default parameters."""
    router = services().backend
    given = ShowRequest.parse(read_json())
    name = served_model(router, given.model or given.name or "")
    return ShowResponse.of(router, name).model_dump(mode="json")


@ollama.get("/api/ps")
def ps():
    """List the models loaded now, with when they would be unloaded for idling."""
    router = services().backend
    return RunningList(models=[RunningModel.running(router, name) for name in loaded_names(router)]).model_dump(
        mode="json"
    )


ollama.add_url_rule("/api/pull", view_func=pull_model, methods=["POST"])


@ollama.route("/api/<any(push, create, copy, delete):action>", methods=["POST", "DELETE"])
def not_served(action: str):
    """Refuse what changes the models, which PALAVER_MODELS configures: 501, saying so."""
    raise NotServed(NOT_SERVED[action])


@ollama.errorhandler(Exception)
def ollama_error(exc: Exception):
    """Answer any error in Ollama's shape: {"error": "message"}, with its status."""
    error = to_palaver_error(exc)
    return json_error(error, ErrorResponse.of(error).model_dump())


Lines = Callable[[ReplyEvents, str, Clock, Callable[[], None]], Iterator[str]]
Shape = type[ChatResponse] | type[GenerateResponse]


def answer(given: OllamaRequest, generation: GenerationRequest, lines: Lines, shape: Shape):
    """Generate a reply and send it whole, or as a stream of lines; with keep_alive 0, unload the model after."""
    router = services().backend
    model = generation.model or router.default
    clock = Clock(loading=router.slots[model].state != "ready")
    # Errors found before any text (a prompt too long, a loading model) keep their status.
    [stream], info = start_all([generation], router, "messages")
    clock.joined = time.monotonic()
    headers = {TRUNCATED_HEADER: str(info.truncated_turns)}
    name = router.public_name(model)

    def after() -> None:
        if given.unloads_after:
            unload_when_idle(router, model, AFTER_REPLY_WAIT)

    if given.stream:
        return json_lines(lines(stream, name, clock, after), headers)
    reply = read_reply(stream, clock)
    after()
    return shape.of(name, reply, clock).as_json(), 200, headers


def read_reply(stream: ReplyEvents, clock: Clock) -> Reply:
    """Read a reply's events to its end, timing them; return the reply."""
    with closing(stream):
        reply = None
        for item in stream:
            clock.saw(item)
            if isinstance(item, Reply):
                reply = item
    assert reply is not None  # a stream ends with its reply, or raises
    return reply


def load_or_unload(given: OllamaRequest, model: str, shape: Shape):
    """Load a model (Ollama's request with nothing to answer), or with keep_alive 0 unload it; answer once done."""
    app = services()
    router = app.backend
    if given.unloads_after:
        unload_now(router, model)
        return shape(model=router.public_name(model), done=True, done_reason="unload").as_json()
    router.model_limits(app.settings.load_wait, model)  # loaded and ready, or a 503 while it loads
    return shape(model=router.public_name(model), done=True, done_reason="load").as_json()


def unload_now(router: ModelRouter, model: str) -> None:
    """Unload a model for keep_alive 0, once its last requests have ended; 409 if they go on past UNLOAD_WAIT."""
    if not unload_when_idle(router, model, UNLOAD_WAIT):
        raise ConversationBusy(
            f"the model '{model}' is serving other requests; it can be unloaded once they have ended",
            param="keep_alive",
            retry_after=1,
        )


def unload_when_idle(router: ModelRouter, model: str, wait: float) -> bool:
    """Unload a model once nobody uses it, waiting up to wait seconds; return whether it is unloaded."""
    deadline = time.monotonic() + wait
    while router.slots[model].backend is not None and not router.unload(model):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # the router tells nobody when a model's last request ends: look again shortly
    return True
