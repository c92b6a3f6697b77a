"""Fuzzing: every parameter and every endpoint, with hostile values, never yields a 5xx or a traceback."""

import base64
import json
import math
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import capped_command, procfile_server, server_env

from commons import Settings
from palaver.core.errors import InvalidRequest, NotFound
from palaver.core.json_schemas import grammar_problem
from palaver.core.parameters import PARAMETER_NAMES, Sampling
from palaver.web.anthropic.request_schemas import MessagesInput, MessagesRequest
from palaver.web.api.schemas import ChatRequest, FormChatRequest
from palaver.web.mlflow import ScoringRequest
from palaver.web.openai.request_schemas import ChatCompletionRequest, TextCompletionRequest
from palaver.web.responses.request_schemas import ResponsesRequest

# Reproducible in CI; each test stays within a few seconds.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SERVER_FUZZ = settings(FUZZ, max_examples=25)  # per endpoint and field: each example is a real request
FUZZ_ADDRESS_SPACE = 6 * 2**30  # the fuzzed servers' cap: input that exhausts memory fails them, not the machine

HOSTILE_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**63, -1, 0, 1e-320, -0.0])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | HOSTILE_NUMBERS
    | st.text(max_size=40)
    | st.sampled_from(["\ud800", "nan", "inf", "", "1e999"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "message",
    "messages",
    "prompt",
    "model",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_new_tokens",
    "max_completion_tokens",
    "repetition_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "preset",
    "conversation_id",
    "replace_last_turn",
    "title",
    "confirm",
    "inputs",
    "instances",
    "dataframe_split",
    "dataframe_records",
    "params",
    "echo",
    "do_sample",
    "logit_bias",
    "user",
    "role",
    "content",
    "return_full_text",
    "textbox",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "response_format",
]
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6) | JSON_VALUES
MESSAGE_LISTS = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
            "content": SCALARS | st.lists(JSON_VALUES, max_size=2),
        },
        optional={"tool_calls": JSON_VALUES, "tool_call_id": SCALARS},
    ),
    max_size=4,
)

# JSON schemas built from the keywords the grammar library enforces, a few it refuses, and hostile values.
SCHEMA_LEAVES = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {},
        {"enum": ["a", "b", 1, None]},
        {"const": "x"},
        {"type": "string", "maxLength": 5},
        {"type": "string", "pattern": "^[a-z]{1,4}$"},
        {"type": "string", "pattern": "(unclosed"},
        {"type": "integer", "minimum": 0, "maximum": 9},
        {"type": "number", "multipleOf": 0.5},
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"not": {}},
        {"uniqueItems": True},
        {"$ref": "#/$defs/missing"},
        {"type": "frog"},
        {"maxLength": math.nan},
        {"minimum": 10**400},
    ]
)


def object_of(properties):
    return st.builds(
        lambda props, required, closed: {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": not closed,
        },
        st.dictionaries(st.sampled_from(["a", "b", "city", "", "é"]), properties, max_size=3),
        st.lists(st.sampled_from(["a", "b", "zz"]), max_size=2),
        st.booleans(),
    )


SCHEMAS = st.recursive(
    SCHEMA_LEAVES,
    lambda inner: object_of(inner)
    | st.builds(lambda items, most: {"type": "array", "items": items, "maxItems": most}, inner, st.integers(-1, 4))
    | st.builds(lambda options: {"anyOf": options}, st.lists(inner, max_size=3)),
    max_leaves=8,
)
FUNCTION_NAMES = st.sampled_from(["get_time", "get_weather", "f", "f", "has space", "", "x" * 65, "\ud800", "é"])
FUNCTIONS = st.fixed_dictionaries(
    {"name": FUNCTION_NAMES},
    optional={"parameters": object_of(SCHEMAS) | SCHEMAS | JSON_VALUES, "description": st.text(max_size=20) | SCALARS},
)
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "function", "function", "retrieval"]), "function": FUNCTIONS}
)
TOOLS = st.lists(TOOL, min_size=1, max_size=4) | st.lists(TOOL | JSON_VALUES, max_size=3) | JSON_VALUES
TOOL_CHOICES = (
    st.sampled_from(["none", "auto", "required", "any", ""])
    | st.builds(lambda name: {"type": "function", "function": {"name": name}}, FUNCTION_NAMES)
    | st.sampled_from(["auto", "required"])
    | JSON_VALUES
)
RESPONSE_FORMATS = (
    st.builds(lambda schema: {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}, SCHEMAS)
    | st.sampled_from([{"type": "json_object"}, {"type": "text"}, {"type": "json_schema"}])
    | JSON_VALUES
)
TOOL_REQUESTS = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}]) | MESSAGE_LISTS},
    optional={
        "tools": TOOLS,
        "tool_choice": TOOL_CHOICES,
        "parallel_tool_calls": JSON_VALUES,
        "response_format": RESPONSE_FORMATS,
        "logprobs": JSON_VALUES,
        "top_logprobs": JSON_VALUES | st.integers(-5, 25),
        "stream": st.booleans(),
        "n": st.integers(0, 3),
    },
)
# Mostly well-formed: distinct names and object parameters, so the grammar is built from random schemas.
WELL_FORMED_TOOLS = st.lists(
    st.builds(
        lambda name, parameters: {"type": "function", "function": {"name": name, "parameters": parameters}},
        st.sampled_from(["a", "b", "c", "get_time"]),
        object_of(SCHEMAS),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda tool: tool["function"]["name"],
)
WELL_FORMED_TOOL_REQUESTS = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}]), "tools": WELL_FORMED_TOOLS},
    optional={
        "tool_choice": st.sampled_from(["none", "auto", "required", {"type": "function", "function": {"name": "a"}}]),
        "parallel_tool_calls": st.booleans(),
        "response_format": RESPONSE_FORMATS,
        "logprobs": st.booleans(),
        "stream": st.booleans(),
    },
)


def bounds(name):
    """Return the lowest and highest values a parameter's declaration allows."""
    limits = {type(item).__name__: item for item in Sampling.model_fields[name].metadata}
    low = limits["Ge"].ge if "Ge" in limits else limits["Gt"].gt if "Gt" in limits else -math.inf
    return low, limits["Le"].le if "Le" in limits else math.inf


@pytest.mark.parametrize("name", PARAMETER_NAMES)
@FUZZ
@given(value=JSON_VALUES)
def test_every_parameter_accepts_only_finite_in_range_values(name, value):
    try:
        checked = getattr(Sampling.parse({name: value}).applied_to(Settings().generation_defaults()), name)
    except InvalidRequest as exc:
        assert exc.param == name and f"'{name}'" in exc.message
        return
    low, high = bounds(name)
    if isinstance(checked, float):
        assert math.isfinite(checked) and low <= checked <= high
    elif isinstance(checked, int) and not isinstance(checked, bool):
        assert low <= checked <= high


@pytest.mark.parametrize("name", PARAMETER_NAMES)
@FUZZ
@given(text=st.text(max_size=30) | st.sampled_from(["nan", "-inf", "Infinity", "1e999", "9" * 5000, " 5 ", "0x10"]))
def test_every_parameter_from_a_form_accepts_only_finite_in_range_values(name, text):
    try:
        form = FormChatRequest.from_form({"textbox": "hi", name: text}, Settings())
    except InvalidRequest as exc:
        assert exc.param == name
        return
    checked = getattr(form.to_input(Settings()).params, name)
    assert not isinstance(checked, float) or math.isfinite(checked)


@FUZZ
@given(body=BODIES)
def test_chat_requests_parse_or_refuse_any_body(body):
    try:
        ChatRequest.parse(body, {"settings": Settings()})
    except InvalidRequest:
        pass


@FUZZ
@given(body=BODIES, messages=MESSAGE_LISTS)
def test_completion_requests_parse_or_refuse_any_body(body, messages):
    for candidate in (
        body,
        {**body, "model": "SmolLM2-135M-Instruct", "messages": messages} if isinstance(body, dict) else body,
    ):
        for model in (ChatCompletionRequest, TextCompletionRequest, ScoringRequest):
            try:
                model.parse(candidate, {"settings": Settings()})
            except (InvalidRequest, NotFound):
                pass


ANTHROPIC_TOOLS = st.lists(
    st.builds(lambda name, schema: {"name": name, "input_schema": schema}, st.sampled_from(["a", "b"]), SCHEMAS)
    | JSON_VALUES,
    max_size=3,
)
ANTHROPIC_REQUESTS = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}]) | MESSAGE_LISTS},
    optional={
        "max_tokens": JSON_VALUES | st.integers(-5, 5000),
        "system": JSON_VALUES,
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": st.sampled_from([{"type": "any"}, {"type": "tool", "name": "a"}]) | JSON_VALUES,
        "stop_sequences": JSON_VALUES,
        "temperature": JSON_VALUES,
        "stream": JSON_VALUES,
    },
)


@FUZZ
@given(body=ANTHROPIC_REQUESTS | BODIES)
def test_anthropic_requests_parse_or_are_refused_naming_a_field(body):
    candidate = {"model": "m", **body} if isinstance(body, dict) else body
    for model in (MessagesRequest, MessagesInput):  # /v1/messages and its count_tokens
        try:
            request = model.parse(candidate, {"settings": Settings()})
        except InvalidRequest as exc:
            assert "Traceback" not in exc.message
            continue
        grammar = request.reply_grammar()
        assert grammar is None or grammar_problem(grammar.text) is None, "what is accepted can be enforced"


RESPONSES_TOOLS = st.lists(
    st.builds(
        lambda name, schema: {"type": "function", "name": name, "parameters": schema}, st.sampled_from("ab"), SCHEMAS
    )
    | st.sampled_from([{"type": "web_search"}, {"type": "file_search"}, {"type": "mcp"}])
    | JSON_VALUES,
    max_size=3,
)
RESPONSES_INPUTS = (
    st.text(max_size=20)
    | MESSAGE_LISTS
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", 3])},
            optional={"role": SCALARS, "content": JSON_VALUES, "call_id": SCALARS, "output": JSON_VALUES},
        ),
        max_size=3,
    )
    | JSON_VALUES
)
RESPONSES_REQUESTS = st.fixed_dictionaries(
    {"input": st.just("hi") | RESPONSES_INPUTS},
    optional={
        "tools": RESPONSES_TOOLS,
        "tool_choice": st.sampled_from(["required", {"type": "function", "name": "a"}]) | JSON_VALUES,
        "text": st.builds(lambda schema: {"format": {"type": "json_schema", "name": "s", "schema": schema}}, SCHEMAS)
        | JSON_VALUES,
        "instructions": JSON_VALUES,
        "previous_response_id": JSON_VALUES,
        "max_output_tokens": JSON_VALUES | st.integers(-5, 5000),
        "store": JSON_VALUES,
        "background": JSON_VALUES,
        "include": JSON_VALUES,
    },
)


@FUZZ
@given(body=RESPONSES_REQUESTS | BODIES)
def test_responses_requests_parse_or_are_refused_naming_a_field(body):
    candidate = {"model": "m", **body} if isinstance(body, dict) else body
    try:
        request = ResponsesRequest.parse(candidate, {"settings": Settings()})
    except InvalidRequest as exc:
        assert "Traceback" not in exc.message
        return
    grammar = request.reply_grammar()
    assert grammar is None or grammar_problem(grammar.text) is None, "what is accepted can be enforced"


@FUZZ
@given(body=TOOL_REQUESTS | WELL_FORMED_TOOL_REQUESTS)
def test_random_tools_schemas_and_logprobs_parse_or_are_refused_naming_a_field(body):
    try:
        request = ChatCompletionRequest.parse({"model": "m", **body}, {"settings": Settings()})
    except InvalidRequest as exc:
        assert exc.param and "Traceback" not in exc.message
        return
    grammar = request.reply_grammar()
    assert grammar is None or grammar_problem(grammar.text) is None, "what the boundary accepts, the engine can enforce"


# ---------------------------------------------------------------------------
# Against a real server: random JSON, random bytes and wrong content types on every endpoint.

ENDPOINTS = [
    ("POST", "/"),
    ("POST", "/stop"),
    ("POST", "/new"),
    ("POST", "/key"),
    ("GET", "/c/abc"),
    ("POST", "/c/abc"),
    ("POST", "/c/abc/stop"),
    ("POST", "/c/abc/rename"),
    ("POST", "/c/abc/delete"),
    ("POST", "/api/chat"),
    ("GET", "/api/conversations"),
    ("GET", "/api/conversations/abc"),
    ("PATCH", "/api/conversations/abc"),
    ("GET", "/api/conversations/abc/export"),
    ("DELETE", "/api/conversations/abc"),
    ("POST", "/api/conversations/abc/cancel"),
    ("POST", "/api/conversations/abc/shares"),
    ("DELETE", "/api/shares/abc"),
    ("POST", "/c/abc/share"),
    ("POST", "/s/abc/continue"),
    ("GET", "/api/schema"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/ollama/api/chat"),
    ("POST", "/ollama/api/generate"),
    ("POST", "/ollama/api/embed"),
    ("POST", "/ollama/api/embeddings"),
    ("POST", "/ollama/api/pull"),
    ("GET", "/models"),
    ("POST", "/models/pull"),
    ("POST", "/models/remove"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/abc"),
    ("DELETE", "/v1/responses/abc"),
    ("GET", "/v1/responses/abc/input_items"),
    ("GET", "/v1/models"),
    ("POST", "/invocations"),
    ("GET", "/readyz"),
    ("GET", "/healthz"),
    ("GET", "/ping"),
    ("GET", "/metrics"),
    ("POST", "/no/such/path"),
]
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/csv",
        "multipart/form-data; boundary=x",
        "",
        "application/json; charset=latin-1",
    ]
)


class Fuzzed:
    """A server under fuzzing: send a request, and read the log the server wrote since the last look."""

    def __init__(self, server):
        self.server, self.session, self.seen = server, requests.Session(), 0

    def send(self, method: str, path: str, body: bytes, content_type: str) -> str:
        """Send a request; return a description of it if it got a 5xx, else an empty string."""
        headers = {"Content-Type": content_type} if content_type else {}
        response = self.session.request(method, self.server.url + path, data=body, headers=headers, timeout=30)
        _ = response.content  # read streams to the end
        if response.status_code < 500:
            return ""
        return f"{method} {path} {body[:200]!r}: {response.status_code} {response.text[:300]}"

    def new_log(self) -> str:
        log = self.server.log()
        fresh, self.seen = log[self.seen :], len(log)
        return fresh


@pytest.fixture(scope="module")
def fuzz_server(gguf_chat_model, tmp_path_factory):
    env = server_env(
        gguf_chat_model, tmp_path_factory.mktemp("fuzz"), max_new_tokens="2", metrics="1", max_body_bytes="8192"
    )
    with procfile_server(
        env, wait_for="/readyz", timeout=120, command=capped_command(FUZZ_ADDRESS_SPACE), wait_for_exit=False
    ) as running:
        fuzzed = Fuzzed(running)
        yield fuzzed
        fuzzed.session.close()


@pytest.fixture
def fuzz(fuzz_server):
    """The fuzzed server; each test fails itself if the server logged a traceback while it ran."""
    fuzz_server.new_log()
    yield fuzz_server


def send(fuzz: Fuzzed, method: str, path: str, body: bytes, content_type: str) -> None:
    """Send a request: no answer may be a 5xx, and nothing the server logs meanwhile may be a traceback."""
    failure = fuzz.send(method, path, body, content_type)
    log = fuzz.new_log()
    assert not failure, failure
    assert "Traceback" not in log and "unhandled error" not in log, log[-2000:]


@pytest.mark.parametrize("method, path", ENDPOINTS)
@SERVER_FUZZ
@given(body=BODIES, content_type=CONTENT_TYPES)
def test_random_json_never_gets_a_5xx(fuzz, method, path, body, content_type):
    send(fuzz, method, path, json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass"), content_type)


FORM_VALUES = st.text(max_size=20) | st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e999", "9" * 5000, "true"])


@pytest.mark.parametrize("path", ["/", "/api/chat", "/new", "/key", "/c/abc", "/c/abc/rename", "/c/abc/delete"])
@SERVER_FUZZ
@given(fields=st.dictionaries(st.sampled_from(FIELDS), FORM_VALUES, max_size=5))
def test_random_form_fields_never_get_a_5xx(fuzz, path, fields):
    send(fuzz, "POST", path, urlencode({"textbox": "hi", **fields}).encode(), "application/x-www-form-urlencoded")


@pytest.mark.parametrize("method, path", [e for e in ENDPOINTS if e[0] == "POST"])
@SERVER_FUZZ
@given(
    body=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    content_type=CONTENT_TYPES,
)
def test_random_bytes_never_get_a_5xx(fuzz, method, path, body, content_type):
    send(fuzz, method, path, body, content_type)


QUERY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
CURSORS = QUERY_TEXT | QUERY_TEXT.map(lambda text: base64.urlsafe_b64encode(text.encode()).decode().rstrip("="))


@pytest.mark.parametrize(
    "path", ["/api/conversations", "/api/conversations/abc/export", "/", "/v1/responses/abc/input_items"]
)
@SERVER_FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["limit", "cursor", "format", "sort", "q", "after", "order"]), CURSORS, max_size=3
    )
)
def test_random_query_strings_never_get_a_5xx(fuzz, path, query):
    send(fuzz, "GET", f"{path}?{urlencode(query)}", b"", "")


@SERVER_FUZZ
@given(body=TOOL_REQUESTS | WELL_FORMED_TOOL_REQUESTS)
def test_random_tools_schemas_and_logprobs_never_get_a_5xx(fuzz, body):
    payload = json.dumps({"model": "chat-llama", "max_tokens": 2, **body}, allow_nan=True)
    send(fuzz, "POST", "/v1/chat/completions", payload.encode("utf-8", "surrogatepass"), "application/json")


@pytest.mark.parametrize(
    "cursor", ["0001-01-01T00:00:00+05:00|x", "9999-12-31T23:59:59-05:00|x", "2026-01-01T00:00:00|x", "2026-01-01|"]
)
def test_cursors_with_dates_at_the_edges_are_refused_or_served(fuzz, cursor):
    send(fuzz, "POST", "/", b"textbox=hi", "application/x-www-form-urlencoded")  # an owner, so a real query
    encoded = base64.urlsafe_b64encode(cursor.encode()).decode()
    send(fuzz, "GET", f"/api/conversations?cursor={encoded}", b"", "")


HOSTILE_TEXTS = ["nan", "NaN", "inf", "-Infinity", "1e999", "-1", "9" * 5000, "", "\u0663", "0x10"]


@pytest.mark.parametrize("name", PARAMETER_NAMES)
def test_every_parameter_with_every_hostile_value_on_every_surface(fuzz, name):
    for text in HOSTILE_TEXTS:
        send(
            fuzz,
            "POST",
            "/",
            urlencode({"textbox": "hi", name: text}).encode(),
            "application/x-www-form-urlencoded",
        )
    for value in [math.nan, math.inf, -math.inf, 10**400, -(10**400), 1e308, "nan", None, [], {}, True]:
        for path, body in [
            ("/api/chat", {"message": "hi"}),
            ("/invocations", {"inputs": ["x"], "params": {}}),
            ("/v1/completions", {"model": "chat-llama", "prompt": "x"}),
        ]:
            body = json.loads(json.dumps(body))
            (body["params"] if "params" in body else body)[name] = value
            send(fuzz, "POST", path, json.dumps(body, allow_nan=True).encode(), "application/json")


# ---------------------------------------------------------------------------
# Hostile schemas against a real server: each is refused with a 400 naming its field, or served; every reply
# that stops parses and follows its schema, and nothing is a 5xx or a traceback.

COUNTS = st.integers(0, 120)
COUNTED_PATTERNS = st.builds(
    lambda counts, atom: "^" + "".join("(" for _ in counts) + atom + "".join(f"){{1,{n}}}" for n in counts) + "y$",
    st.lists(st.integers(1, 120), min_size=1, max_size=3),
    st.sampled_from(["x", "x{1,100}", "[ab]", "(a|ab)", ".", "x*"]),
)
RECURSIVE = st.sampled_from(
    [
        {"$ref": "#/$defs/a"},
        {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"$ref": "#/$defs/a"}, "maxItems": 2}]},
        {"type": "object", "properties": {"next": {"$ref": "#/$defs/a"}}, "required": ["next"]},
        {"type": "object", "properties": {"next": {"$ref": "#/$defs/a"}}},
        {"allOf": [{"$ref": "#/$defs/a"}]},
        {"anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]},
    ]
).map(lambda body: {"$defs": {"a": body}, "$ref": "#/$defs/a"})


def wide(count: int, leaf: dict, required: int) -> dict:
    names = [f"{index:x}" for index in range(count)]
    return {"type": "object", "properties": {name: leaf for name in names}, "required": names[:required]}


def nested(depth: int, kind: str) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema} if kind == "array" else {"properties": {"a": schema}}
    return schema


HOSTILE_SCHEMAS = (
    RECURSIVE
    | COUNTED_PATTERNS.map(lambda pattern: {"type": "string", "pattern": pattern})
    | st.builds(wide, st.integers(0, 1300), st.sampled_from([{}, {"type": "integer"}]), st.integers(0, 1300))
    | st.builds(nested, st.integers(1, 20), st.sampled_from(["array", "object"]))
    | st.lists(SCHEMAS | RECURSIVE, min_size=1, max_size=4).map(lambda options: {"anyOf": options})
)


@pytest.fixture(scope="module")
def schema_server(gguf_chat_model, tmp_path_factory):
    env = server_env(gguf_chat_model, tmp_path_factory.mktemp("schemas"), max_new_tokens="24")
    with procfile_server(
        env, wait_for="/readyz", timeout=120, command=capped_command(FUZZ_ADDRESS_SPACE), wait_for_exit=False
    ) as running:
        fuzzed = Fuzzed(running)
        yield fuzzed
        fuzzed.session.close()


@SERVER_FUZZ
@given(schema=HOSTILE_SCHEMAS, stream=st.booleans(), seed=st.integers(0, 3))
def test_hostile_schemas_are_refused_or_served_and_every_stop_validates(schema_server, schema, stream, seed):
    import jsonschema

    schema_server.new_log()
    body = {
        "model": "chat-llama",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.8,
        "seed": seed,
        "stream": stream,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    response = schema_server.session.post(schema_server.server.url + "/v1/chat/completions", json=body, timeout=60)
    log = schema_server.new_log()
    assert response.status_code < 500 and "Traceback" not in log, (response.text[:300], log[-2000:])
    if response.status_code == 400:
        assert response.json()["error"]["param"], response.text
        return
    assert response.status_code == 200, response.text[:300]
    if stream:
        sent = [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
        choices = [c for event in sent for c in event.get("choices", [])]
        text = "".join(c["delta"].get("content") or "" for c in choices)
        finish = next((c["finish_reason"] for c in choices if c.get("finish_reason")), None)
    else:
        choice = response.json()["choices"][0]
        text, finish = choice["message"]["content"], choice["finish_reason"]
    if finish == "stop":  # checked against the schema as given: the metaschema frowns on some a server may serve
        jsonschema.Draft202012Validator(schema).validate(json.loads(text))
