"""Continuous batching: requests join a running batch at the next step and leave it the moment they end."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.decoding.rows import Row
from palaver.engine.torch.kv_cache import grow_in_place
from palaver.engine.torch.lean_decoder import LlamaDecoder
from palaver.engine.torch.pooling import mean_hidden_states

log = logging.getLogger("palaver.engine")


class CausalBatch:
    """Rows of a decoder-only model sharing one left-padded KV cache."""

    def __init__(self, model, prefix_cache: PrefixCache | None = None, decoder: LlamaDecoder | None = None):
        self.model = model
        self.decoder = decoder  # a faster decode step for the model, where there is one
        self.prefix_cache = prefix_cache
        self.rows: list[Row] = []
        self.finished_early: list[Row] = []  # rows whose first token already ended them
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, cached length]: 1 for real tokens, 0 for padding

    def add(self, row: Row) -> None:
        """Add one row; see add_many."""
        self.add_many([row])

    @torch.inference_mode()
    def add_many(self, rows: list[Row]) -> None:
        """Prefill joining rows: from a cached prefix where one exists, the rest together in one padded pass."""
        fresh, cached = [], []
        for row in rows:
            reused, key = self.prefix_cache.lookup(row.prompt_ids) if self.prefix_cache else (0, None)
            if key is None:
                fresh.append(row)
            else:
                assert self.prefix_cache is not None  # a key comes only from the prefix cache
                layers = [(k[:, :, :reused], v[:, :, :reused]) for k, v in self.prefix_cache.entries[key]]
                cached.append((row, reused, layers))
        if cached:
            self._prefill_from_prefixes(cached)
        if fresh:
            self._prefill_together(fresh)

    def _prefill_from_prefixes(self, joining: list[tuple[Row, int, list[tuple[torch.Tensor, torch.Tensor]]]]) -> None:
        """Compute only the new tokens of rows whose prompts start with a cached prefix, together in one pass.

        Each row's columns are [padding][cached prefix][padding][new tokens]: prefixes are left-padded to one
        width and new tokens right-aligned, so every row's last position is its prompt's last token.
        """
        assert self.prefix_cache is not None  # only rows that hit the prefix cache come here
        rows = [row for row, _, _ in joining]
        prefix_width = max(reused for _, reused, _ in joining)
        new_width = max(len(row.prompt_ids) - reused for row, reused, _ in joining)
        cache = DynamicCache()
        for index in range(len(joining[0][2])):
            keys = [pad_left(layers[index][0], prefix_width - reused) for _, reused, layers in joining]
            values = [pad_left(layers[index][1], prefix_width - reused) for _, reused, layers in joining]
            cache.update(torch.cat(keys), torch.cat(values), index)
        input_ids, mask, positions = [], [], []
        for row, reused, _ in joining:
            new = row.prompt_ids[reused:]
            gap = new_width - len(new)
            input_ids.append([0] * gap + new)
            mask.append([0] * (prefix_width - reused) + [1] * reused + [0] * gap + [1] * len(new))
            positions.append([reused] * gap + list(range(reused, len(row.prompt_ids))))
        mask_tensor = torch.tensor(mask)
        output = self.model(
            input_ids=torch.tensor(input_ids),
            attention_mask=mask_tensor,
            position_ids=torch.tensor(positions),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.prefix_cache.counts["prefilled_tokens"] += sum(len(row.prompt_ids) - reused for row, reused, _ in joining)
        self.prefix_cache.counts["reused_prompt_tokens"] += sum(reused for _, reused, _ in joining)
        self._join(rows, output, mask_tensor)

    def _prefill_together(self, rows: list[Row]) -> None:
        width = max(len(row.prompt_ids) for row in rows)
        mask = torch.tensor([[0] * (width - len(row.prompt_ids)) + [1] * len(row.prompt_ids) for row in rows])
        input_ids = torch.tensor([[0] * (width - len(row.prompt_ids)) + row.prompt_ids for row in rows])
        # Only the last position's logits are needed: a whole prompt's would be prompt length × vocabulary.
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        if self.prefix_cache is not None:
            self.prefix_cache.counts["prefilled_tokens"] += sum(len(row.prompt_ids) for row in rows)
        self._join(rows, output, mask)

    def _join(self, rows: list[Row], output, mask: torch.Tensor) -> None:
        """Choose the prefilled rows' first tokens and merge the caches of those that go on."""
        last = output.logits[:, -1].float().numpy()
        for index, row in enumerate(rows):
            row.accept(last[index])
        # Read each row's state once: a cancel from another thread may land between two reads.
        done = [row.done for row in rows]
        for index, row in enumerate(rows):
            if done[index] and row.error is None and self.prefix_cache is not None:  # its prompt is still reusable
                self._remember(row.prompt_ids, output.past_key_values, mask, index)
        joining = [i for i, row in enumerate(rows) if not done[i]]
        self.finished_early += [row for i, row in enumerate(rows) if done[i]]
        if joining:
            going_on = torch.tensor(joining)
            for layer in output.past_key_values.layers:
                layer.keys, layer.values = layer.keys[going_on], layer.values[going_on]
            self._merge(output.past_key_values, mask[going_on])
            self.rows += [rows[i] for i in joining]

    @torch.inference_mode()
    def step(self) -> None:
        """Decode one token for every row in one forward pass."""
        if not self.rows:
            return
        assert self.mask is not None  # rows in the batch have a cache and a mask
        input_ids = torch.tensor([[row.generated[-1]] for row in self.rows])
        positions = torch.tensor([[len(row.prompt_ids) + len(row.generated) - 1] for row in self.rows])
        mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=self.mask.dtype)], dim=1)
        if self.decoder is not None:
            logits = self.decoder.step(input_ids, positions, mask, self.cache)
        else:
            logits = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
            ).logits[:, -1]
        self.mask = mask
        scores = logits.float().numpy()
        for index, row in enumerate(self.rows):
            row.accept(scores[index])

    def remove_done(self) -> list[Row]:
        """Take finished rows out of the batch and free their cache."""
        done = [row.done for row in self.rows]  # once: a cancel may land between two reads
        finished = self.finished_early + [row for row, ended in zip(self.rows, done) if ended]
        self.finished_early = []
        if self.prefix_cache is not None and self.mask is not None:
            for index, row in enumerate(self.rows):
                if done[index] and row.error is None:  # the cache holds the prompt and every token but the last
                    self._remember(row.prompt_ids + row.generated[:-1], self.cache, self.mask, index)
        if finished:
            keep = [i for i, ended in enumerate(done) if not ended]
            self.rows = [self.rows[i] for i in keep]
            if not keep:
                self.cache, self.mask = None, None
            else:
                assert self.cache is not None and self.mask is not None  # rows were in the batch
                kept = torch.tensor(keep)
                first = int((self.mask[kept].sum(0) > 0).nonzero()[0])  # drop columns that are padding everywhere
                self.mask = self.mask[kept, first:]
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[kept, :, first:], layer.values[kept, :, first:]
        return finished

    def release(self) -> None:
        """Drop every row and the batch's cache: the batch is being replaced."""
        self.rows, self.finished_early = [], []
        self.cache, self.mask = None, None

    def embed(self, texts: list[list[int]]) -> np.ndarray:
        """Return each text's final hidden states, mean-pooled; the torch path keeps no memory budget to wait on."""
        return mean_hidden_states(self.model, texts, encoder_decoder=False)

    def _remember(self, token_ids: list[int], cache, mask: torch.Tensor, index: int) -> None:
        """Store one row's cache (the positions its mask marks real, which may have gaps) for reuse."""
        assert self.prefix_cache is not None  # callers remember only when there is a prefix cache
        real = mask[index].nonzero().flatten()
        if len(real) != len(token_ids):  # never expected: a cache that does not match its tokens is not kept
            log.error("a row's cache holds %d positions for %d tokens", len(real), len(token_ids))
            return
        row = slice(index, index + 1)
        self.prefix_cache.store(
            token_ids, [(layer.keys[row, :, real], layer.values[row, :, real]) for layer in cache.layers]
        )

    def _merge(self, cache, mask: torch.Tensor) -> None:
        """Left-pad the batch's cache or the newcomers', whichever is shorter, and stack them."""
        if self.cache is None:
            grow_in_place(cache)
            self.cache, self.mask = cache, mask
            return
        current, length = self.mask.shape[1], mask.shape[1]
        width = max(current, length)
        for layer, new in zip(self.cache.layers, cache.layers):
            layer.keys = torch.cat([pad_left(layer.keys, width - current), pad_left(new.keys, width - length)])
            layer.values = torch.cat([pad_left(layer.values, width - current), pad_left(new.values, width - length)])
        self.mask = torch.cat([F.pad(self.mask, (width - current, 0)), F.pad(mask, (width - length, 0))])


class Seq2SeqBatch:
    """Rows of an encoder-decoder model: encoded once on joining, decoded together each step."""

    def __init__(self, model, decoder_start_id: int, pad_id: int):
        self.model = model
        self.decoder_start_id = decoder_start_id
        self.pad_id = pad_id
        self.rows: list[Row] = []
        self.finished_early: list[Row] = []  # never used: a row's first token comes with a step
        self.encoded: list[torch.Tensor] = []

    def add_many(self, rows: list[Row]) -> None:
        """Add rows one by one; encoding each alone keeps its positions exact."""
        for row in rows:
            self.add(row)

    @torch.inference_mode()
    def add(self, row: Row) -> None:
        """Encode the row's prompt alone; its first token comes with the next step."""
        self.encoded.append(self.model.get_encoder()(input_ids=torch.tensor([row.prompt_ids])).last_hidden_state[0])
        self.rows.append(row)

    @torch.inference_mode()
    def step(self) -> None:
        """Decode one token for every row; right padding keeps each row's positions its own."""
        if not self.rows:
            return
        encoder_states = torch.nn.utils.rnn.pad_sequence(self.encoded, batch_first=True)
        encoder_mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(e), dtype=torch.long) for e in self.encoded], batch_first=True
        )
        decoded = [[self.decoder_start_id, *row.generated] for row in self.rows]
        decoder_ids = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(d) for d in decoded], batch_first=True, padding_value=self.pad_id
        )
        output = self.model(
            encoder_outputs=(encoder_states,),
            attention_mask=encoder_mask,
            decoder_input_ids=decoder_ids,
            use_cache=False,
        )
        ends = torch.tensor([len(d) - 1 for d in decoded])
        scores = output.logits[torch.arange(len(decoded)), ends].float().numpy()
        for index, row in enumerate(self.rows):
            row.accept(scores[index])

    def remove_done(self) -> list[Row]:
        """Take finished rows out of the batch."""
        done = [row.done for row in self.rows]  # once: a cancel may land between two reads
        finished = [row for row, ended in zip(self.rows, done) if ended]
        kept = [(row, encoded) for row, encoded, ended in zip(self.rows, self.encoded, done) if not ended]
        self.rows = [row for row, _ in kept]
        self.encoded = [encoded for _, encoded in kept]
        return finished

    def release(self) -> None:
        """Drop every row and its encoder states: the batch is being replaced."""
        self.rows, self.encoded = [], []

    def embed(self, texts: list[list[int]]) -> np.ndarray:
        """Return each text's encoder states, mean-pooled: the encoder is what reads a text."""
        return mean_hidden_states(self.model, texts, encoder_decoder=True)


def pad_left(states: torch.Tensor, amount: int) -> torch.Tensor:
    """Pad a [batch, heads, length, dim] cache tensor with zeros at the start of its length."""
    return F.pad(states, (0, 0, amount, 0)) if amount else states
