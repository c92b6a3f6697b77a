"""MLflow's scoring protocol, with the payload shapes from MLflow's documentation."""

import pytest


@pytest.fixture
def client(make_app, chat_model):
    return make_app(chat_model).test_client()


def test_ping_and_health_answer_as_mlflow_does(client):
    for path in ("/ping", "/health"):
        response = client.get(path)
        assert response.status_code == 200 and response.get_data() == b"\n" and response.mimetype == "application/json"


def test_llm_v1_chat_payload_gets_a_chat_completion(client):
    response = client.post(
        "/invocations",
        json={
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.5,
            "max_tokens": 5,
            "stop": ["\n"],
            "n": 1,
            "stream": False,
        },
    )
    body = response.get_json()
    assert response.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant" and body["usage"]["completion_tokens"] <= 5


def test_llm_v1_completions_payload_gets_a_text_completion(client):
    body = client.post("/invocations", json={"prompt": "Hello", "max_tokens": 3, "temperature": 0}).get_json()
    assert body["object"] == "text_completion" and len(body["choices"]) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"inputs": ["Hello there", "What is your name"], "params": {"max_new_tokens": 4, "temperature": 0}},
        {"instances": ["Hello there", "What is your name"]},
        {"dataframe_split": {"columns": ["prompt"], "data": [["Hello there"], ["What is your name"]]}},
        {"dataframe_split": {"columns": ["text"], "index": [0, 1], "data": [["Hello there"], ["What is your name"]]}},
        {"dataframe_records": [{"prompt": "Hello there"}, {"prompt": "What is your name"}]},
        {"inputs": {"prompt": ["Hello there", "What is your name"]}},
    ],
)
def test_text_generation_frames_get_predictions_that_include_the_prompt(client, payload):
    response = client.post("/invocations", json=payload)
    predictions = response.get_json()["predictions"]
    assert response.status_code == 200 and len(predictions) == 2
    assert predictions[0].startswith("Hello there") and predictions[1].startswith("What is your name")


def test_a_single_prompt_still_gets_a_list(client):
    assert len(client.post("/invocations", json={"inputs": "Hello"}).get_json()["predictions"]) == 1


def test_return_full_text_false_leaves_the_prompt_out(client):
    body = client.post(
        "/invocations", json={"inputs": ["Hello there"], "params": {"return_full_text": False, "max_new_tokens": 3}}
    ).get_json()
    assert not body["predictions"][0].startswith("Hello there")


def test_csv_bodies_are_read_like_mlflow_frames(client):
    response = client.post("/invocations", data="prompt\nHello there\nWhat is your name\n", content_type="text/csv")
    assert response.status_code == 200 and len(response.get_json()["predictions"]) == 2


@pytest.mark.parametrize(
    "payload, code, words",
    [
        ({"foo": 1}, "BAD_REQUEST", "Invalid input"),
        ({"inputs": ["a"], "instances": ["b"]}, "BAD_REQUEST", "exactly one"),
        ({"inputs": [""]}, "INVALID_PARAMETER_VALUE", "non-empty prompts"),
        ({"inputs": ["a"], "params": {"temperature": 9}}, "INVALID_PARAMETER_VALUE", "at most 2.0"),
        ({"inputs": ["a"], "params": {"num_beams": 4}}, "INVALID_PARAMETER_VALUE", "unknown field 'num_beams'"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 9}, "INVALID_PARAMETER_VALUE", "at most 8"),
        ([1, 2], "BAD_REQUEST", "Invalid input"),
    ],
)
def test_bad_input_gets_mlflow_style_errors_without_stack_traces(client, payload, code, words):
    response = client.post("/invocations", json=payload)
    body = response.get_json()
    assert response.status_code == 400 and body["error_code"] == code and words in body["message"]
    assert set(body) == {"error_code", "message"}


def test_invocations_needs_a_key_when_keys_are_set(make_app, chat_model):
    client = make_app(chat_model, api_keys="secret").test_client()
    response = client.post("/invocations", json={"inputs": ["hi"]})
    assert response.status_code == 401 and response.get_json()["error_code"] == "UNAUTHENTICATED"
    assert client.get("/ping").status_code == 200
    assert (
        client.post("/invocations", json={"inputs": ["hi"]}, headers={"Authorization": "Bearer secret"}).status_code
        == 200
    )
