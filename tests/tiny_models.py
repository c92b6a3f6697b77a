"""Build tiny random-weight models of the real architectures, with tokenizers made offline."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    BlenderbotConfig,
    BlenderbotForConditionalGeneration,
    BlenderbotSmallConfig,
    BlenderbotSmallForConditionalGeneration,
    BlenderbotSmallTokenizer,
    BlenderbotTokenizerFast,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaTokenizerFast,
)

CORPUS = [
    "hello there how are you doing today",
    "i am fine thanks and you",
    "what is your name",
    "the quick brown fox jumps over the lazy dog",
    "tell me a story about a cat",
    "palaver is a chat server",
    "0123456789 !?.,'\"-:;()[]{}<>/",
] * 20

# A ChatML template like SmolLM2's, so the chat-template family is exercised the same way.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HTML_REPLY_TOKENS = ["<script>", "alert(1)", "</script>"]
# A reply in Markdown that also carries every payload the page must show as text or drop: one piece a token.
MARKDOWN_REPLY_PIECES = [
    "Some **bold** text and a list:\n\n",
    "- first item\n",
    "- second item\n\n",
    "| name | value |\n",
    "|---|---|\n",
    "| <img src=x onerror=alert(2)> | <script>alert(3)</script> |\n\n",
    "```python\n",
    "print('<script>alert(4)</script>')\n",
    "```\n\n",
    "[run](javascript:alert(5)) [page](data:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==) "
    "[docs](https://example.com/docs)\n\n",
    '<script>alert(7)</script><img src=x onerror=alert(8)> <a href="javascript:alert(9)">raw link</a>\n',
]

# A template that renders tools, calls and results as Qwen 2.5's does, in the format replies are read in.
TOOLS_TEMPLATE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Call one as <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% for call in message.tool_calls %}<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def byte_level_bpe(special_tokens: list[str], vocab_size: int = 400) -> Tokenizer:
    """Train a small byte-level BPE tokenizer on a fixed corpus."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def save(model, tokenizer, path: Path) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_dialogpt(path: Path) -> Path:
    """GPT-2 with no chat template: the DialoGPT architecture."""
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=byte_level_bpe(["<|endoftext|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return save(GPT2LMHeadModel(config), tokenizer, path)


def build_chat_llama(path: Path, max_positions: int = 512, width: int = 32, rope: dict | None = None) -> Path:
    """A Llama causal model whose tokenizer carries a ChatML chat template (width 256: rows of K-quant blocks).

    rope: rotary parameters such as Llama 3's scaling; the model then ties its head to its embedding, as GGUF does.
    """
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(specials),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2 if width == 32 else 4,
        num_key_value_heads=1 if width == 32 else 2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **({"rope_parameters": rope, "tie_word_embeddings": True} if rope else {}),
    )
    return save(LlamaForCausalLM(config), tokenizer, path)


def llama3_rope_factors(config) -> list[float]:
    """Return the rotary frequency factors llama.cpp's converter writes as rope_freqs for Llama 3's scaling."""
    import math

    rope = config.rope_parameters
    dim = config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    factors = []
    for freq in freqs.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return factors


def build_blenderbot(path: Path) -> Path:
    """Blenderbot (encoder-decoder) with a short, 64-position input limit."""
    bpe = byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tokenizer = BlenderbotTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    torch.manual_seed(0)
    config = BlenderbotConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    return save(BlenderbotForConditionalGeneration(config), tokenizer, path)


def build_blenderbot_small(path: Path) -> Path:
    """BlenderbotSmall, whose tokenizer is word-level BPE over lowercase text."""
    path.mkdir(parents=True, exist_ok=True)
    specials = ["__null__", "__start__", "__end__", "__unk__"]
    symbols = list(string.ascii_lowercase + string.digits + "!?.,'-:;()") + ["__newln__"]
    vocab = specials + [s + "@@" for s in symbols] + symbols
    (path / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = BlenderbotSmallTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    torch.manual_seed(0)
    config = BlenderbotSmallConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    return save(BlenderbotSmallForConditionalGeneration(config), tokenizer, path)


def build_html_replier(path: Path) -> Path:
    """A GPT-2 whose weights make it answer '<script>alert(1)</script>' to anything."""
    return build_fixed_replier(path, HTML_REPLY_TOKENS)


def build_fixed_replier(path: Path, pieces: list[str]) -> Path:
    """A GPT-2 whose weights make it answer the pieces, in order, to anything; each piece must be distinct."""
    assert len(set(pieces)) == len(pieces), "the next piece depends only on the current one"
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=byte_level_bpe(["<|endoftext|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.add_tokens(pieces)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,  # room for long messages: the positions are silenced anyway
        n_embd=64,
        n_layer=1,
        n_head=1,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    chain = [tokenizer.eos_token_id] + tokenizer.convert_tokens_to_ids(pieces) + [tokenizer.eos_token_id]
    with torch.no_grad():
        # Silence the block and positions, so each next token depends only on the current one.
        for parameter in [*model.transformer.h.parameters(), model.transformer.wpe.weight]:
            parameter.zero_()
        for block in model.transformer.h:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        normalized = torch.nn.functional.layer_norm(model.transformer.wte.weight, (config.n_embd,))
        for current, following in zip(chain, chain[1:]):
            model.lm_head.weight[following] += 10 * normalized[current]
    return save(model, tokenizer, path)


# A template that thinks as Qwen3's does: replies open with <think> unless enable_thinking is false, which writes an
# empty thinking into the prompt; earlier replies' thinking is left out.
THINKING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') if message.role == 'assistant' "
    "else message.content %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
THINKING_TAGS = ["<think>", "</think>"]
# The thinking model's reply, one token a piece, each spelt as the byte-level vocabulary spells it.
THINKING_PIECES = ["\u010asome\u0120thought\u010a", "\u010a\u010a", "the\u0120answer"]
THINKING_THOUGHT, THINKING_ANSWER = "some thought", "the answer"


def build_thinking_llama(path: Path) -> Path:
    """A Llama that thinks as Qwen3 does, whatever it is asked: '<think>\\nsome thought\\n</think>\\n\\nthe answer'.

    Its think tags are tokens of their own, not special (as in Qwen3's vocabulary), and '\\n\\n' one token, so
    that a prompt whose thinking is turned off (ending '</think>\\n\\n') is answered without thinking.
    """
    document = json.loads(byte_level_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *THINKING_TAGS]).to_str())
    for added in document["added_tokens"]:
        added["special"] = added["content"] not in THINKING_TAGS
    vocab = document["model"]["vocab"]
    for piece in THINKING_PIECES:
        vocab[piece] = len(vocab)
    newline = "\u010a"
    merges = document["model"]["merges"]
    merges.append([newline, newline] if merges and isinstance(merges[0], list) else f"{newline} {newline}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(document)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = THINKING_TEMPLATE
    newlines = tokenizer.convert_tokens_to_ids([newline])
    chain = newlines + tokenizer.convert_tokens_to_ids([THINKING_TAGS[0], THINKING_PIECES[0], THINKING_TAGS[1]])
    chain += tokenizer.convert_tokens_to_ids(THINKING_PIECES[1:]) + [tokenizer.eos_token_id]
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Silence attention and the MLP, so each next token depends only on the current one, as in the replier.
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        normalized = embeddings / embeddings.pow(2).mean(-1, keepdim=True).sqrt()  # as the final RMSNorm leaves it
        for current, following in zip(chain, chain[1:]):
            model.lm_head.weight[following] += 10 * normalized[current] / config.hidden_size
    return save(model, tokenizer, path)


# The GGUF types each tensor of the tiny GGUF gets: every kind the kernel serves, mixed as real files mix them.
GGUF_TYPES = {
    "token_embd": "Q8_0",
    "attn_q": "Q4_0",
    "attn_k": "Q4_1",
    "attn_v": "Q8_0",
    "attn_output": "Q4_1",
    "ffn_gate": "Q4_0",
    "ffn_up": "Q4_1",
    "ffn_down": "Q8_0",
}
# Every other type the kernel serves, as a Q4_K_M or Q5_K_M file mixes them (rows of 256 weights and more).
K_QUANT_TYPES = {
    "token_embd": "Q6_K",
    "attn_q": "Q4_K",
    "attn_k": "Q5_K",
    "attn_v": "Q6_K",
    "attn_output": "Q5_0",
    "ffn_gate": "Q5_1",
    "ffn_up": "F16",
    "ffn_down": "BF16",
}
# Where a K-quant keeps its float16 scales in a super-block, and the scale written there.
K_QUANT_SCALES = {"Q4_K": {0: 0.002, 2: 0.001}, "Q5_K": {0: 0.001, 2: 0.0005}, "Q6_K": {208: 0.0004}}
K_QUANT_SCALES |= {"Q2_K": {80: 0.002, 82: 0.001}, "Q3_K": {108: 0.0005}}
# The 2- and 3-bit K-quants, as Q2_K and Q3_K_M files mix them (the rest float32).
LOW_BIT_TYPES = {"attn_q": "Q2_K", "attn_k": "Q3_K", "attn_v": "Q3_K", "ffn_gate": "Q2_K", "ffn_down": "Q3_K"}
LLAMA_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
}


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_TOKEN_ARGS = ["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"]
XLM_R_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def wordpiece() -> Tokenizer:
    """Train a small lowercasing WordPiece tokenizer, as BERT's, that puts [CLS] and [SEP] around a text."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=BERT_SPECIALS))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def save_sentence_modules(path: Path, pooling: str, width: int, max_seq_length: int) -> Path:
    """Write sentence-transformers' files beside a saved encoder: its modules, pooling, and a normalisation."""
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    listed = [
        {"idx": index, "name": str(index), "path": folder, "type": f"sentence_transformers.models.{kind}"}
        for index, (folder, kind) in enumerate(modules)
    ]
    (path / "modules.json").write_text(json.dumps(listed, indent=2))
    (path / "1_Pooling").mkdir()
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens"]
    config = {"word_embedding_dimension": width} | {f"pooling_mode_{mode}": mode == pooling for mode in modes}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    sentence = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (path / "sentence_bert_config.json").write_text(json.dumps(sentence))
    return path


def build_sentence_bert(path: Path, pooling: str = "cls_token") -> Path:
    """A BertModel (two layers, 64 positions) as sentence-transformers saves it: pooled by pooling, 48 tokens."""
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece(), **dict(zip(BERT_TOKEN_ARGS, BERT_SPECIALS)))
    torch.manual_seed(5)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    save(BertModel(config), tokenizer, path)
    return save_sentence_modules(path, pooling, config.hidden_size, max_seq_length=48)


def build_sentence_xlm_roberta(path: Path) -> Path:
    """An XLMRobertaModel (a Unigram vocabulary, 66 positions of which 2 are kept for padding), mean-pooled."""
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=150, special_tokens=XLM_R_SPECIALS, unk_token="<unk>")
    unigram.train_from_iterator(CORPUS, trainer)
    unigram.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    names = ["bos_token", "pad_token", "eos_token", "unk_token", "mask_token"]
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=unigram, cls_token="<s>", sep_token="</s>", **dict(zip(names, XLM_R_SPECIALS))
    )
    torch.manual_seed(6)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    save(XLMRobertaModel(config), tokenizer, path)
    return save_sentence_modules(path, "mean_tokens", config.hidden_size, max_seq_length=512)


def k_quant_blocks(kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Return valid K-quant rows of a matrix's shape: random weights and 6-bit scales under small float16 scales.

    gguf-py cannot quantise to K-quants, so the file holds random weights of the right size rather than the
    model's own; the native step and gguf-py's de-quantisation are compared on the same bytes either way.
    """
    import gguf

    rng = np.random.default_rng(len(kind) * shape[0] + shape[1])
    per_block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    units = shape[0] * shape[1] // per_block
    raw = rng.integers(0, 256, (units, block_bytes), dtype=np.uint8)
    for offset, scale in K_QUANT_SCALES[kind].items():
        raw[:, offset : offset + 2] = np.full(units, scale, dtype=np.float16).view(np.uint8).reshape(units, 2)
    return raw.reshape(shape[0], -1)


def chat_model_of(config_class, model_class, path: Path, seed: int, **shape):
    """Return a tiny random model of a family with the chat Llama's tokenizer and template, and that tokenizer."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(build_chat_llama(path))
    torch.manual_seed(seed)
    config = config_class(
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    return model_class(config), tokenizer


def build_chat_qwen2(path: Path) -> Path:
    """A tiny Qwen2 (Q/K/V biases, a tied head) with the chat Llama's tokenizer and template."""
    model, tokenizer = chat_model_of(
        Qwen2Config,
        Qwen2ForCausalLM,
        path,
        1,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1000000.0,
    )
    with torch.no_grad():  # random biases large enough to matter
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0.0, 0.5)
    return save(model, tokenizer, path)


def build_chat_qwen3(path: Path) -> Path:
    """A tiny Qwen3 (RMSNorm on each query and key head, heads wider than hidden / heads) with the chat tokenizer."""
    model, tokenizer = chat_model_of(
        Qwen3Config,
        Qwen3ForCausalLM,
        path,
        2,
        hidden_size=128,
        intermediate_size=256,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=128,
    )
    with torch.no_grad():  # head norms that differ from ones, so that leaving them out would show
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    return save(model, tokenizer, path)


SPM_SPECIALS = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
SPM_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def sentencepiece_vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Return a SentencePiece-style vocabulary as GGUF keeps one: tokens, scores (merge order) and token types.

    Specials, the 256 byte tokens, then every prefix of each corpus word spelt with its leading "▁", shortest
    first, so the merges recovered from the scores rebuild every word.
    """
    pieces: list[str] = ["\u2581"]
    for word in dict.fromkeys(" ".join(CORPUS).split()):
        spelt = "\u2581" + word
        for end in range(1, len(spelt) + 1):
            for start in range(0, end):
                piece = spelt[start:end]
                if piece not in pieces:
                    pieces.append(piece)
    pieces.sort(key=len)
    tokens = SPM_SPECIALS + [f"<0x{byte:02X}>" for byte in range(256)] + pieces
    scores = [0.0] * (len(SPM_SPECIALS) + 256) + [-float(index) for index in range(len(pieces))]
    kinds = [2] + [3] * (len(SPM_SPECIALS) - 1) + [6] * 256 + [1] * len(pieces)  # unknown, control, byte, normal
    return tokens, scores, kinds


def sentencepiece_model(config_class, model_class, path: Path, seed: int, **tied) -> Path:
    """Save a tiny random model whose vocabulary is the SentencePiece one (ids 0, 1, 2: unknown, start, end)."""
    tokens, _, _ = sentencepiece_vocabulary()
    torch.manual_seed(seed)
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
    config = config_class(
        vocab_size=len(tokens),
        num_hidden_layers=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **shape,
        **tied,
    )
    model_class(config).save_pretrained(path)
    return path


def build_sentencepiece_llama(path: Path) -> Path:
    """A tiny Llama whose vocabulary is a SentencePiece one (as Llama 2 and TinyLlama files hold), its head tied."""
    return sentencepiece_model(LlamaConfig, LlamaForCausalLM, path, 3, tie_word_embeddings=True)


def build_sentencepiece_phi3(path: Path, longrope: bool = False) -> Path:
    """A tiny Phi-3 (joined Q/K/V and gate/up projections, an untied head) with a SentencePiece vocabulary.

    longrope: as Phi-3.5 and Phi-4-mini, LongRoPE's short and long factors over the first half of each head, from
    an original context of 64 positions.
    """
    if not longrope:
        return sentencepiece_model(Phi3Config, Phi3ForCausalLM, path, 4)
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "original_max_position_embeddings": 64,
        "short_factor": [1.0, 1.2, 2.0, 3.5],
        "long_factor": [1.5, 3.0, 9.0, 25.0],
    }
    return sentencepiece_model(
        Phi3Config, Phi3ForCausalLM, path, 6, rope_parameters=rope, original_max_position_embeddings=64
    )


def build_sentencepiece_gemma3(path: Path) -> Path:
    """A tiny Gemma 3: (1 + w) norms, four a layer, GELU, scaled embeddings, five sliding layers to one global."""
    tokens, _, _ = sentencepiece_vocabulary()
    torch.manual_seed(5)
    config = Gemma3TextConfig(
        vocab_size=len(tokens),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=256,  # as every Gemma 3 has; llama.cpp scales queries by it (transformers by query_pre_attn_scalar)
        query_pre_attn_scalar=256,
        sliding_window=8,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # Gemma's norms start at zero (a scale of one): make each of them matter
        for name, weights in model.named_parameters():
            if name.endswith("norm.weight"):
                weights.uniform_(-0.5, 0.5)
    model.save_pretrained(path)
    return path


# Phi-3's modules, as llama.cpp's converter names them: its projections come joined.
PHI3_TO_GGUF = {
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


# Gemma 3's modules: two more norms a layer, and the one before the MLP is llama.cpp's ffn_norm.
GEMMA3_TO_GGUF = {
    **{hf: gguf for hf, gguf in LLAMA_TO_GGUF.items() if gguf != "ffn_norm"},
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def build_gguf_llama(
    llama_dir: Path,
    path: Path,
    types: dict[str, str] | None = None,
    pre: str | None = None,
    template: bool | str = True,
    add_bos: bool | None = None,
    head: bool = False,
) -> Path:
    """Write a tiny Llama, Qwen2/3, Phi-3 or Gemma 3 as a GGUF file the way llama.cpp's converter does.

    template: a byte-level BPE file's chat template (True: the tokenizer's own, False: none); add_bos: its
    add_bos_token flag, if any. head: write the model's own output head, as a file whose head is untied does.

    Llama's Q and K rows are permuted into rotary pairs, as the converter does; Qwen2's are not, and its biases
    are written as float32 vectors.
    """
    types = GGUF_TYPES if types is None else types
    import gguf
    from gguf.quants import quantize

    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    config = model.config
    architecture = "gemma3" if config.model_type == "gemma3_text" else config.model_type
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name(f"tiny-chat-{architecture}")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = config.rope_parameters if architecture != "gemma3" else {}
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    if architecture == "gemma3":  # as llama.cpp's Gemma3Model writes it: each layer kind's rotary base, the window
        writer.add_rope_freq_base(config.rope_parameters["full_attention"]["rope_theta"])
        writer.add_rope_freq_base_swa(config.rope_parameters["sliding_attention"]["rope_theta"])
        writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    if (llama_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(llama_dir)
        state = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
        tokens = [token for token, _ in sorted(state["vocab"].items(), key=lambda item: item[1])]
        special = set(tokenizer.all_special_tokens)
        # Added tokens that are not special (Qwen3's think tags) are user-defined, as llama.cpp's converter writes them.
        user_defined = {token.content for token in tokenizer.added_tokens_decoder.values() if not token.special}
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre or ("qwen2" if architecture.startswith("qwen") else "default"))
        writer.add_token_list(tokens)
        kinds = [3 if token in special else 4 if token in user_defined else 1 for token in tokens]
        writer.add_token_types(kinds)  # 3: control, 4: user-defined, 1: normal
        writer.add_token_merges([" ".join(pair) if isinstance(pair, list) else pair for pair in state["merges"]])
        writer.add_bos_token_id(tokenizer.bos_token_id)
        writer.add_eos_token_id(tokenizer.eos_token_id)
        writer.add_pad_token_id(tokenizer.pad_token_id)
        if template:
            writer.add_chat_template(tokenizer.chat_template if template is True else template)
        if add_bos is not None:
            writer.add_add_bos_token(add_bos)
    else:  # a SentencePiece vocabulary, as llama.cpp's converter writes one from tokenizer.model
        tokens, scores, kinds = sentencepiece_vocabulary()
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(kinds)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_chat_template(SPM_TEMPLATE)
        if architecture == "gemma3":
            writer.add_add_space_prefix(False)

    def add(name: str, weights: torch.Tensor, kind: str | None) -> None:
        array = weights.detach().float().numpy()
        if kind is None:
            writer.add_tensor(name, array)
        elif kind in K_QUANT_SCALES:
            writer.add_tensor(name, k_quant_blocks(kind, array.shape), raw_dtype=gguf.GGMLQuantizationType[kind])
        else:
            qtype = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)

    def permute(weights: torch.Tensor, heads: int) -> torch.Tensor:  # llama.cpp's convert_hf_to_gguf.py
        return (
            weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )

    add("token_embd.weight", model.model.embed_tokens.weight, types.get("token_embd"))
    if architecture == "phi3" or head:  # its head is its own; the tiny chat Llamas are written tied, as SmolLM2's is
        add("output.weight", model.lm_head.weight, types.get("token_embd"))
    if rope.get("rope_type") == "longrope":  # as llama.cpp's Phi3MiniModel writes it
        original = rope["original_max_position_embeddings"]
        scale = config.max_position_embeddings / original
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)))
        add("rope_factors_long.weight", torch.tensor(rope["long_factor"]), None)
        add("rope_factors_short.weight", torch.tensor(rope["short_factor"]), None)
    if (config.rope_parameters or {}).get("rope_type") == "llama3":
        add("rope_freqs.weight", torch.tensor(llama3_rope_factors(config)), None)
    shift = 1.0 if architecture == "gemma3" else 0.0  # llama.cpp stores Gemma's (1 + w) norms as 1 + w
    add("output_norm.weight", model.model.norm.weight + shift, None)
    names = {"phi3": PHI3_TO_GGUF, "gemma3": GEMMA3_TO_GGUF}.get(architecture, LLAMA_TO_GGUF)
    for index, layer in enumerate(model.model.layers):
        for hf_name, gguf_name in names.items():
            if not hasattr(layer.self_attn, "q_norm") and hf_name.endswith("_norm"):
                continue  # Qwen3's head norms: other architectures have none
            module = layer.get_submodule(hf_name)
            weights = module.weight
            if gguf_name == "attn_q" and architecture == "llama":  # Qwen's rows stay in rotary halves
                weights = permute(weights, config.num_attention_heads)
            elif gguf_name == "attn_k" and architecture == "llama":
                weights = permute(weights, config.num_key_value_heads)
            elif gguf_name.endswith("norm"):
                weights = weights + shift
            add(f"blk.{index}.{gguf_name}.weight", weights, types.get(gguf_name))
            if getattr(module, "bias", None) is not None and module.bias.dim() == 1 and gguf_name.startswith("attn_"):
                add(f"blk.{index}.{gguf_name}.bias", module.bias, None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
