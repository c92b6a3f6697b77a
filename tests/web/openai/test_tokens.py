"""POST /tokenize and /detokenize: the ids a request is fed, counted as its usage counts them, and their text."""

import openai
import pytest
import requests

MODEL = "chat-llama"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo there, 😀"}]


def post(server, path, body):
    return requests.post(f"{server}{path}", json=body, timeout=30)


def test_a_chats_count_is_the_usage_the_same_chat_reports(server):
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    usage = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1).usage
    counted = post(server, "/tokenize", {"model": MODEL, "messages": MESSAGES, "max_tokens": 1}).json()
    assert counted["count"] == usage.prompt_tokens == len(counted["tokens"]) and counted["max_model_len"] == 512
    prompt_usage = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=1).usage
    assert post(server, "/tokenize", {"prompt": "Once upon a time"}).json()["count"] == prompt_usage.prompt_tokens


def test_detokenize_gives_back_the_text_of_the_ids(server):
    ids = post(server, "/tokenize", {"prompt": "héllo wörld 😀"}).json()["tokens"]
    assert post(server, "/detokenize", {"model": MODEL, "tokens": ids}).json() == {"prompt": "héllo wörld 😀"}


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/tokenize", {"prompt": "a", "messages": MESSAGES}, "prompt"),
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": ""}]}, "messages"),
        ("/tokenize", {"prompt": "a", "model": "gpt-4"}, "model"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens"),
        ("/detokenize", {"tokens": [True]}, "tokens"),
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {"tokens": [1] * 16_385}, "tokens"),
    ],
)
def test_bad_requests_name_the_field(server, path, body, param):
    refused = post(server, path, body)
    assert refused.status_code in (400, 404) and refused.json()["error"]["param"] == param, refused.text
