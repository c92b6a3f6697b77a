"""Fuzzing: every parameter and every endpoint, with hostile values, never yields a 5xx or a traceback."""

import base64
import json
import math
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import procfile_server, server_env

from commons import Settings
from palaver.core.errors import InvalidRequest, NotFound
from palaver.core.parameters import PARAMETER_NAMES, Sampling
from palaver.web.api.schemas import ChatRequest, FormChatRequest
from palaver.web.mlflow import ScoringRequest
from palaver.web.openai.request_schemas import ChatCompletionRequest, TextCompletionRequest

# Reproducible in CI; each test stays within a few seconds.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SERVER_FUZZ = settings(FUZZ, max_examples=40)

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
]
BODIES = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6) | JSON_VALUES
MESSAGE_LISTS = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
            "content": SCALARS | st.lists(JSON_VALUES, max_size=2),
        }
    ),
    max_size=4,
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
    ("GET", "/api/schema"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
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
def fuzz_server(chat_model, tmp_path_factory):
    env = server_env(
        chat_model, tmp_path_factory.mktemp("fuzz"), max_new_tokens="2", metrics="1", max_body_bytes="8192"
    )
    with procfile_server(env, wait_for="/readyz", timeout=120) as running:
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


@pytest.mark.parametrize("path", ["/api/conversations", "/api/conversations/abc/export", "/"])
@SERVER_FUZZ
@given(query=st.dictionaries(st.sampled_from(["limit", "cursor", "format", "sort", "q"]), CURSORS, max_size=3))
def test_random_query_strings_never_get_a_5xx(fuzz, path, query):
    send(fuzz, "GET", f"{path}?{urlencode(query)}", b"", "")


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
