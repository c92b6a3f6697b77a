"""Helpers for tests that force failures, hold the engine busy, or ask it something."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from commons import Message
from palaver.core.parameters import Sampling
from palaver.engine.engine import Engine, GenerationRequest


def raising(error: Exception):
    """Return a stand-in for a model call that fails with error, to force failures."""

    def fail(*args, **kwargs):
        raise error

    return fail


@contextmanager
def model_held(served):
    """Hold a torch-served model's forward pass until released, to keep the engine busy; yield (busy, release)."""
    model = served.module  # the transformers model that the family's TorchServedModel wraps
    busy, release = threading.Event(), threading.Event()
    real_forward = model.forward

    def held_forward(*args, **kwargs):
        busy.set()
        release.wait(30)
        return real_forward(*args, **kwargs)

    model.forward = held_forward
    try:
        yield busy, release
    finally:
        release.set()
        del model.forward  # back to the class's own forward


def seed_turns(store, conversation_id: str, turns: int, reply: str = "Answer with **Markdown** and `code`.") -> None:
    """Append turns to a stored conversation in one transaction, as a long-lived conversation would hold them."""
    import sqlalchemy as sa

    from palaver.storage.records import utc_now
    from palaver.storage.schema import conversations, messages

    now = utc_now()
    with store.engine.begin() as connection:
        stored = connection.execute(sa.select(conversations.c.turns).where(conversations.c.id == conversation_id))
        first = stored.scalar_one()
        rows = []
        for turn in range(first, first + turns):
            common = dict(conversation_id=conversation_id, created_at=now)
            rows.append(
                dict(
                    common,
                    position=2 * turn,
                    role="user",
                    content=f"question {turn}",
                    prompt_tokens=9,
                    completion_tokens=None,
                    finish_reason=None,
                    seconds=None,
                )
            )
            rows.append(
                dict(
                    common,
                    position=2 * turn + 1,
                    role="assistant",
                    content=f"{reply} ({turn})",
                    prompt_tokens=None,
                    completion_tokens=8,
                    finish_reason="stop",
                    seconds=0.5,
                )
            )
        connection.execute(messages.insert(), rows)
        connection.execute(
            conversations.update().where(conversations.c.id == conversation_id).values(turns=first + turns)
        )


def assert_error(response, status, param, *words):
    """Check a Flask test response is an error envelope with this status, naming param, and no traceback."""
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["param"] == param and error["type"] and "Traceback" not in response.get_data(as_text=True)
    for word in words:
        assert word in error["message"]


def start_conversation(client, message):
    """Start a conversation through the API with a two-token reply; return its id."""
    return client.post("/api/chat", json={"message": message, "max_new_tokens": 2}).get_json()["conversation_id"]


def family_of(path, **settings):
    """Load the model at path through transformers and return its family."""
    from commons import Settings
    from palaver.engine.torch.loading import load_model

    return load_model(Settings(model=str(path), **settings)).family


def conversation(turns: int) -> list:
    """Return a conversation of turns alternating user and assistant messages."""
    from commons import Message

    return [Message("user" if i % 2 == 0 else "assistant", f"turn {i} hello there how are you") for i in range(turns)]


HELLO = [Message("user", "hello there")]  # a conversation of one message


def ask(engine: Engine, **overrides):
    """Generate a reply to HELLO with the engine's default parameters."""
    params = Sampling.parse(overrides).applied_to(engine.settings.generation_defaults())
    return engine.generate(GenerationRequest(params, messages=HELLO))


def one_model_at_a_time(make_settings, large_models, **overrides):
    """Return a router of two of the large models ("one", the default, loaded, and "two") with room for one only."""
    from palaver.backends import ModelRouter
    from palaver.core.requests import GenerationRequest
    from palaver.engine.machine import HEADROOM_BYTES, give_back, resident_bytes

    models, size = large_models
    names = models.replace("a=", "one=").replace("b=", "two=").rsplit(",", 1)[0]
    # The test process's garbage goes back first: freed between the two measurements, it would shrink the budget.
    give_back()
    router = ModelRouter(make_settings(models=names, max_batch_size=2, max_context_tokens=256, **overrides))
    router.generate(GenerationRequest(router.settings.generation_defaults(), prompt="hi", model="one"))
    give_back()
    # Measured with one loaded: what a first load imports is in it. The test process frees what earlier tests left
    # whenever their threads end, so the process without models is taken as this less what one is charged with.
    loaded = resident_bytes()
    router.budget.baseline = loaded - router.slots["one"].charge()
    router.budget.limit = loaded + HEADROOM_BYTES + size // 2
    return router


def schema_outgrowing_the_parser_mid_reply() -> dict:
    """A schema the boundary accepts whose objects, merged, outgrow the parser once the reply reaches them."""
    wide = {"type": "object", "properties": {f"p{index}": {} for index in range(900)}}
    variants = [{"allOf": [{"$ref": "#/$defs/w"}, {"properties": {f"z{k}": {}}}]} for k in range(4)]
    return {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"anyOf": variants}},
        "required": ["a", "b"],
        "$defs": {"w": wide},
    }


class GrammarWork:
    """Stand in for llguidance's LLMatcher where Palaver builds and compiles grammars: record each, then do it."""

    def __init__(self, real):
        self.real, self.built, self.compiled = real, [], []

    def __call__(self, tokenizer, grammar, *args, **kwargs):
        self.compiled.append(grammar)
        return self.real(tokenizer, grammar, *args, **kwargs)

    def __getattr__(self, name):
        found = getattr(self.real, name)
        if not name.startswith("grammar_from_"):
            return found

        def build(source, *args, **kwargs):
            self.built.append(source)
            return found(source, *args, **kwargs)

        return build


def count_grammar_work(monkeypatch) -> GrammarWork:
    """Record every grammar Palaver builds (at the boundary or in the engine) and compiles for a model."""
    from llguidance import LLMatcher

    from palaver.core import json_schemas, tools
    from palaver.engine.decoding import constraints

    work = GrammarWork(LLMatcher)
    for module in (json_schemas, tools, constraints):
        monkeypatch.setattr(module, "LLMatcher", work)
    return work


def sentence_transformers_vectors(path, texts: list[str], pooling: str, max_seq_length: int | None = None):
    """Return sentence-transformers' vectors for texts, computed here: one padded batch, pooled, normalised.

    Texts cut to max_seq_length as it cuts them; its Pooling module's formulas over the attention mask (cls_token or
    mean_tokens), then its Normalize module.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    cut = {"truncation": True, "max_length": max_seq_length} if max_seq_length else {}
    batch = tokenizer(texts, padding=True, return_tensors="pt", **cut)
    with torch.inference_mode():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    pooled = states[:, 0] if pooling == "cls_token" else mean
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def steps_to_finish(batch, rows=()) -> int:
    """Add rows to the batch, then step it until every row is done; return how many steps it took."""
    batch.add_many(list(rows))
    steps = 0
    while batch.rows:
        batch.step()
        batch.remove_done()
        steps += 1
    return steps
