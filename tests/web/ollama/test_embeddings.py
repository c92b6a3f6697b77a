"""Ollama's /api/embed and /api/embeddings, driven by the official ollama client against one real server."""

import math

import numpy as np
import ollama
import pytest
import requests
from helpers import sentence_transformers_vectors
from servers import start_server

MODEL = "chat-llama"
KEY = "key-one"
SIZE, LIMIT = 32, 512  # the tiny chat Llama's hidden size and context
LONG = "a " * 2000  # past the context


@pytest.fixture(scope="module")
def server(gguf_chat_model, tmp_path_factory):
    with start_server(
        "", tmp_path_factory.mktemp("ollama-embed"), models=f"{MODEL}={gguf_chat_model}", api_keys=KEY
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=f"{server}/ollama", headers={"Authorization": f"Bearer {KEY}"})


def refusal(client, call, **arguments) -> str:
    """Return the message of the 400 a call gets."""
    with pytest.raises(ollama.ResponseError) as refused:
        call(**arguments)
    assert refused.value.status_code == 400, refused.value
    return refused.value.error


def test_the_ollama_client_embeds_a_text_or_a_list_and_the_older_endpoint_agrees(client):
    single = client.embed(model=MODEL, input="hello there")
    assert single.model == MODEL and len(single.embeddings) == 1 and len(single.embeddings[0]) == SIZE
    assert math.isclose(math.fsum(x * x for x in single.embeddings[0]), 1.0, rel_tol=1e-6)
    assert single.prompt_eval_count > 0 and single.total_duration >= single.load_duration >= 0
    listed = client.embed(model=f"{MODEL}:latest", input=["a b", "hello there"], options={"temperature": 0.5})
    assert listed.embeddings[1] == single.embeddings[0] != listed.embeddings[0]
    assert client.embeddings(model=MODEL, prompt="hello there").embedding == single.embeddings[0]
    assert client.embed(model=MODEL, input="hello there", dimensions=SIZE).embeddings == single.embeddings


def test_a_text_past_the_context_is_cut_to_it_unless_truncate_is_false(client):
    cut = client.embed(model=MODEL, input=LONG)
    assert cut.prompt_eval_count == LIMIT and len(cut.embeddings[0]) == SIZE
    said = refusal(client, client.embed, model=MODEL, input=["x", LONG], truncate=False)
    assert "'input[1]'" in said and f"at most {LIMIT}" in said
    said = refusal(client, client.embeddings, model=MODEL, prompt=LONG)
    assert "'prompt'" in said and f"at most {LIMIT}" in said, "the older endpoint never cuts"


def test_refusals_name_the_field(client, server):
    assert "'input[1]'" in refusal(client, client.embed, model=MODEL, input=["a", ""])
    assert "'dimensions'" in refusal(client, client.embed, model=MODEL, input="a", dimensions=SIZE // 2)
    assert "options.mirostat" in refusal(client, client.embed, model=MODEL, input="a", options={"mirostat": 2})
    headers = {"Authorization": f"Bearer {KEY}"}
    answer = requests.post(f"{server}/ollama/api/embed", json={"model": MODEL, "input": [1, 2]}, headers=headers)
    assert answer.status_code == 400 and "'input'" in answer.json()["error"]
    missing = requests.post(f"{server}/ollama/api/embed", json={"model": "nobody", "input": "a"}, headers=headers)
    assert missing.status_code == 404 and "nobody" in missing.json()["error"]


def test_no_input_loads_the_model_and_keep_alive_0_unloads_it(client):
    assert client.embed(model=MODEL, input="a", keep_alive=0).embeddings
    assert [model.model for model in client.ps().models] == [], "unloaded once its request ended"
    loaded = client.embed(model=MODEL)
    assert loaded.embeddings == [] and loaded.load_duration > 0 and loaded.prompt_eval_count == 0
    assert [model.model for model in client.ps().models] == [MODEL]
    assert client.embeddings(model=MODEL, keep_alive=0).embedding == []
    assert client.ps().models == []


def test_a_sentence_encoder_cuts_a_long_text_as_sentence_transformers_does_its_closing_token_kept(
    make_app, sentence_xlm_roberta_model
):
    client = make_app(sentence_xlm_roberta_model).test_client()
    text = "the quick brown fox jumps over the lazy dog " * 10  # past its 64 positions
    answer = client.post("/ollama/api/embed", json={"model": "sentence-xlm-roberta", "input": text}).get_json()
    expected = sentence_transformers_vectors(sentence_xlm_roberta_model, [text], "mean_tokens", max_seq_length=64)
    assert answer["prompt_eval_count"] == 64 and np.allclose(answer["embeddings"], expected, rtol=0, atol=1e-6)
    kept = client.post("/ollama/api/embed", json={"model": "sentence-xlm-roberta", "input": text, "truncate": False})
    assert kept.status_code == 400 and "'input[0]' is too long" in kept.get_json()["error"]
