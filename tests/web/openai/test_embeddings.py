"""POST /v1/embeddings, driven by the official openai client against one real server on the tiny native model."""

import base64
import math
import struct

import numpy as np
import openai
import pytest
import requests
from helpers import sentence_transformers_vectors
from servers import start_server

MODEL = "chat-llama"
KEY = "key-one"
SIZE = 32  # the tiny chat Llama's hidden size
LIMIT = 512  # and its context


@pytest.fixture(scope="module")
def server(gguf_chat_model, tmp_path_factory):
    with start_server(gguf_chat_model, tmp_path_factory.mktemp("embeddings"), api_keys=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


def test_the_openai_client_gets_a_unit_vector_per_input_as_floats_or_base64_alike(client, server):
    plain = client.embeddings.create(model=MODEL, input="hello there", encoding_format="float")
    assert plain.object == "list" and plain.model == MODEL
    [item] = plain.data
    assert item.object == "embedding" and item.index == 0 and len(item.embedding) == SIZE
    assert math.isclose(math.fsum(x * x for x in item.embedding), 1.0, rel_tol=1e-6)
    counted = requests.post(
        server + "/tokenize", json={"prompt": "hello there"}, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ).json()["count"]
    assert plain.usage.prompt_tokens == plain.usage.total_tokens == counted, "the text is read as a raw prompt is"
    decoded = client.embeddings.create(model=MODEL, input="hello there")  # the client asks for base64, decodes it
    assert decoded.data[0].embedding == item.embedding
    raw = client.embeddings.create(model=MODEL, input="hello there", encoding_format="base64").data[0].embedding
    assert list(struct.unpack(f"<{SIZE}f", base64.b64decode(raw))) == item.embedding, "little-endian float32"
    listed = client.embeddings.create(model=MODEL, input=["a b", "hello there", "a b"], dimensions=SIZE, user="u1")
    vectors = [entry.embedding for entry in listed.data]
    assert [entry.index for entry in listed.data] == [0, 1, 2] and vectors[0] == vectors[2] != vectors[1]
    assert vectors[1] == item.embedding, "a text's vector is the same alone and beside others"
    ids = client.embeddings.create(model=MODEL, input=[[1, 2, 3], [4, 5]], encoding_format="float")
    assert ids.usage.prompt_tokens == 5 and len(ids.data) == 2
    one = client.embeddings.create(model=MODEL, input=[1, 2, 3], encoding_format="float")
    assert one.data[0].embedding == ids.data[0].embedding, "a list of ids is one input"


@pytest.mark.parametrize(
    ("body", "param", "said"),
    [
        ({"input": "x"}, "model", "'model' is required"),
        ({"model": MODEL, "input": "x", "dimensions": 16}, "dimensions", f"must be {SIZE}"),
        ({"model": MODEL, "input": [[1, 2, 10**6]]}, "input[0][2]", "a token id from 0 to"),
        ({"model": MODEL, "input": ["a", ""]}, "input[1]", "is empty"),
        ({"model": MODEL, "input": [[1], []]}, "input[1]", "is empty"),
        ({"model": MODEL, "input": []}, "input", "of 1 to 2048 inputs"),
        ({"model": MODEL, "input": ["a"] * 2049}, "input", "of 1 to 2048 inputs"),
        ({"model": MODEL, "input": ["a", [1]]}, "input", "all of one kind"),
        ({"model": MODEL, "input": [1, 2.5]}, "input", "a list of token ids"),
        ({"model": MODEL, "input": ["x", "a " * 2000]}, "input[1]", f"it embeds at most {LIMIT}"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", "one of float, base64"),
        ({"model": "nobody", "input": "x"}, "model", "does not exist"),
    ],
)
def test_a_refusal_names_the_field_and_its_bound(server, body, param, said):
    answer = requests.post(server + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    error = answer.json()["error"]
    assert answer.status_code in (400, 404) and error["param"] == param and said in error["message"], error


def test_embeddings_need_a_key_as_generations_do(server):
    answer = requests.post(server + "/v1/embeddings", json={"model": MODEL, "input": "x"}, timeout=30)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"


def test_inputs_are_rows_of_the_clients_share_and_their_tokens_come_out_of_its_budget(make_app, gguf_chat_model):
    client = make_app(gguf_chat_model, client_share=2, token_rate_limit="30/minute").test_client()
    refused = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b", "c"]})
    error = refused.get_json()["error"]
    assert refused.status_code == 400 and error["param"] == "input" and "PALAVER_CLIENT_SHARE" in error["message"]
    refused.close()  # sent: its place comes back
    text = "a b c d e f g h i j k l m n o"
    first = client.post("/v1/embeddings", json={"model": MODEL, "input": [text, "b"]})
    tokens = first.get_json()["usage"]["prompt_tokens"]
    assert first.status_code == 200 and 15 < tokens <= 30, tokens
    first.close()
    second = client.post("/v1/embeddings", json={"model": MODEL, "input": [text]})
    assert second.status_code == 429 and second.get_json()["error"]["code"] == "rate_limit_exceeded"


def test_a_sentence_encoder_serves_sentence_transformers_vectors_and_refuses_what_it_cannot_read(
    make_app, sentence_bert_model
):
    client = make_app(sentence_bert_model).test_client()
    texts = ["hello there how are you", "the quick brown fox", "a cat"]
    listed = client.post("/v1/embeddings", json={"model": "sentence-bert", "input": texts, "encoding_format": "float"})
    vectors = np.array([item["embedding"] for item in listed.get_json()["data"]], dtype=np.float32)
    expected = sentence_transformers_vectors(sentence_bert_model, texts, "cls_token")  # its own pooling: CLS
    assert np.allclose(vectors, expected, rtol=0, atol=1e-6) and np.allclose((vectors**2).sum(axis=1), 1.0)
    alone = client.post(
        "/v1/embeddings", json={"model": "sentence-bert", "input": texts[1], "encoding_format": "float"}
    )
    assert alone.get_json()["data"][0]["embedding"] == listed.get_json()["data"][1]["embedding"], "the same bits"
    long = client.post("/v1/embeddings", json={"model": "sentence-bert", "input": ["a", "cat " * 60]})
    assert long.status_code == 400 and long.get_json()["error"]["param"] == "input[1]"
    assert "it embeds at most 48" in long.get_json()["error"]["message"], "sentence-transformers' max_seq_length"
