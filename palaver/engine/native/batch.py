"""Continuous batching on the native step: each row owns a sequence of KV pages, and prefill runs in chunks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from palaver.engine.decoding.drafts import Drafter
from palaver.engine.decoding.prefix_cache import PrefixCache
from palaver.engine.decoding.rows import Row
from palaver.engine.native.binding import NativeCache
from palaver.engine.native.stored_turns import StoredTurns

log = logging.getLogger("palaver.engine")

# Prompt tokens computed per step, shared by the rows that are prefilling: decoding rows wait at most one such
# chunk for their next token, and larger chunks gained little prefill speed (docs/engine.md has the measurement).
PREFILL_CHUNK_TOKENS = 128
# Rows draft (drafts.py) only while this few decode and none prefills: one or two people's replies are bound by
# reading the weights, which a step's drafted positions share, while a full batch's extra positions cost compute.
MOST_DRAFTING_ROWS = 2


@dataclass(eq=False)
class RowPages:
    """A row's sequence in the KV cache, and how much of its prompt the cache holds."""

    row: Row
    sequence: int
    fed: int  # prompt tokens already in the cache
    leader: RowPages | None = None  # a row with the same prompt, whose computed positions this one copies
    drafter: Drafter | None = None  # the row's prompt-lookup drafts, where speculative decoding is on

    @property
    def prefilling(self) -> bool:
        return self.fed < len(self.row.prompt_ids)


class NativeBatch:
    """Rows on the native step: admitted while their whole reply fits the KV budget, else waiting in order."""

    def __init__(
        self,
        cache: NativeCache,
        prefix_cache: PrefixCache | None = None,
        speculate: bool = False,
        jump_forward: bool = True,
        stored: StoredTurns | None = None,
    ):
        self.cache = cache
        self.prefix_cache = prefix_cache
        self.stored = stored  # finished turns on disk: read where they share more of a prompt than memory holds
        self.speculate = speculate
        self.jump_forward = jump_forward
        self.forced_tokens = 0  # tokens a grammar forced, taken without a step each
        if prefix_cache is not None:
            prefix_cache.release = cache.free  # an evicted entry's pages go back to the budget
        self.placed: list[RowPages] = []
        self.waiting: list[Row] = []  # admitted by the engine, waiting for room in the KV cache
        self.finished_early: list[Row] = []

    @property
    def rows(self) -> list[Row]:
        return [pages.row for pages in self.placed] + self.waiting

    def add(self, row: Row) -> None:
        """Add one row; see add_many."""
        self.add_many([row])

    def add_many(self, rows: list[Row]) -> None:
        """Queue rows; each starts prefilling as soon as its prompt and longest reply fit the KV budget."""
        self.waiting += rows
        self._admit()

    def _admit(self) -> None:
        # In order: a long prompt waiting for room is not overtaken forever by short ones.
        while self.waiting:
            pages = self._place(self.waiting[0])
            if pages is None:
                return
            self.placed.append(pages)
            self.waiting.pop(0)

    def _place(self, row: Row) -> RowPages | None:
        """Give row a sequence that starts from its longest cached prefix and has room for its whole reply."""
        # n choices of one prompt: the first computes the prompt, and the others copy it (all but its last token).
        leader = next((s for s in self.placed if s.leader is None and s.row.prompt_ids == row.prompt_ids), None)
        shared, key = self.prefix_cache.lookup(row.prompt_ids) if self.prefix_cache and not leader else (0, None)
        sequence = self.cache.new_sequence()
        from_disk = self._read_stored(sequence, row.prompt_ids, shared) if leader is None else 0
        if from_disk:
            shared = from_disk
        elif key is not None:
            assert self.prefix_cache is not None  # a key comes only from the prefix cache
            if shared == len(key):  # the entry is all prefix: the row takes its pages over
                self.cache.free(sequence)
                sequence = self.prefix_cache.take(key)
            elif not self.cache.copy(sequence, self.prefix_cache.entries[key], shared):
                shared = 0
        # The last generated token is never fed back, so the reply needs one position fewer than its length.
        needed = len(row.prompt_ids) - shared + row.max_new_tokens - 1
        while not self.cache.reserve(sequence, needed):
            if self.prefix_cache is None or not self.prefix_cache.evict_oldest():
                self.cache.free(sequence)
                return None
        if self.prefix_cache is not None and leader is None:
            self.prefix_cache.counts["prefilled_tokens"] += len(row.prompt_ids) - shared
            self.prefix_cache.counts["reused_prompt_tokens"] += shared
        drafter = None
        if self.speculate:
            drafter = Drafter()
            drafter.extend(row.prompt_ids)
        return RowPages(row, sequence, shared, leader, drafter)

    def _read_stored(self, sequence: int, prompt_ids: list[int], shared: int) -> int:
        """Fill the empty sequence from the stored turn that shares more of the prompt than shared, where there is
        one and the budget holds it; return how many of the prompt's positions it holds, or 0."""
        found = self.stored.lookup(prompt_ids, shared) if self.stored is not None else None
        if found is None:
            return 0
        assert self.stored is not None
        length, name, tokens = found
        # Pages come whole and in order in the file: the pages that hold the shared prefix are its first bytes.
        wanted = min(tokens, -(-length // self.cache.page_tokens) * self.cache.page_tokens)
        whole, part = self.cache.export_bytes(tokens), self.cache.export_bytes(wanted)
        data = self.stored.read(name, tokens, whole, part)
        if data is None or not self.cache.import_positions(sequence, wanted, data):
            return 0
        self.cache.truncate(sequence, length)
        if self.prefix_cache is not None:
            self.prefix_cache.counts["stored_prompt_tokens"] += length
        return length

    def _follow_leaders(self) -> None:
        """Copy a leader's computed prompt into each row that waits for it, once the leader has computed it."""
        live = {id(pages) for pages in self.placed}
        for pages in self.placed:
            leader = pages.leader
            if leader is None:
                continue
            copied = len(pages.row.prompt_ids) - 1
            if id(leader) not in live:  # the leader ended before its prompt was in: compute it alone
                pages.leader = None
            elif leader.fed >= copied and self.cache.length(leader.sequence) >= copied:
                if self.cache.copy(pages.sequence, leader.sequence, copied):
                    pages.fed = copied
                    if self.prefix_cache is not None:
                        self.prefix_cache.counts["prefilled_tokens"] += 1
                        self.prefix_cache.counts["reused_prompt_tokens"] += copied
                pages.leader = None

    def step(self) -> None:
        """Decode one token for every decoding row (more where its draft holds), and compute the next chunk of the
        prefilling rows' prompts."""
        self._admit()
        self._follow_leaders()
        chosen: list[RowPages] = []
        chunks: list[list[int]] = []
        want: list[int] = []  # 0: no logits; 1: after the chunk's last token; 2: after each of its tokens (a draft)
        room = PREFILL_CHUNK_TOKENS
        drafting = self.speculate and self._few_decoding()
        for pages in self.placed:
            prompt = pages.row.prompt_ids
            if pages.leader is not None:  # waits for its leader's prompt
                continue
            if not pages.prefilling:
                row = pages.row
                forced = self._take_forced(pages) if self.jump_forward else None
                if row.error is not None:  # its grammar broke down on the forced text: the row ends, unstepped
                    continue
                if forced is not None:
                    chosen.append(pages)
                    chunks.append(forced)
                    want.append(0 if row.done else 1)
                    continue
                # The reply's reserved positions bound the draft: the cache never holds the last generated token.
                drafter = pages.drafter if drafting else None
                draft = drafter.draft(row.max_new_tokens - len(row.generated) - 1) if drafter is not None else []
                chosen.append(pages)
                chunks.append([row.generated[-1], *draft])
                want.append(2 if draft else 1)
            elif room > 0:
                chunk = prompt[pages.fed : pages.fed + room]
                room -= len(chunk)
                chosen.append(pages)
                chunks.append(chunk)
                want.append(int(pages.fed + len(chunk) == len(prompt)))
        if not chosen:
            return
        logits = self.cache.step_rows([pages.sequence for pages in chosen], chunks, want)
        for index, pages in enumerate(chosen):
            scores = logits[index]
            if pages.prefilling:
                pages.fed += len(chunks[index])
            if scores is not None:
                self._choose(pages, scores, chunks[index][1:] if want[index] == 2 else [])

    def _take_forced(self, pages: RowPages) -> list[int] | None:
        """Take the tokens the row's grammar forces next; return what the step must feed for them, or None."""
        row = pages.row
        last = row.generated[-1]  # chosen, not yet in the cache
        # Like a draft, bounded by the reply's reserved positions; unlike one, certain: no logits are needed for it.
        taken = row.take_forced(row.forced_tokens(row.max_new_tokens - len(row.generated) - 1))
        if not taken:
            return None
        self.forced_tokens += len(taken)
        if pages.drafter is not None:
            pages.drafter.extend(taken)
        # The cache holds every generated token but the last: a row the forced tokens ended still feeds the rest,
        # so its finished turn is whole for the prefix cache; one that goes on gets its next token's logits.
        return [last, *taken[:-1]] if row.done else [last, *taken]

    def _few_decoding(self) -> bool:
        decoding = [pages for pages in self.placed if pages.leader is None and not pages.prefilling]
        return len(decoding) <= MOST_DRAFTING_ROWS and len(decoding) == len(self.placed)

    def _choose(self, pages: RowPages, scores: np.ndarray, draft: list[int]) -> None:
        """Choose the row's tokens from its logits in order, while each is the drafted one; rewind past the rest."""
        row = pages.row
        kept = 0
        for position, logits in enumerate(scores):
            chosen = len(row.generated)
            row.accept(logits)
            if len(row.generated) == chosen:  # the row failed: nothing more to choose
                break
            if pages.drafter is not None:
                pages.drafter.extend(row.generated[-1:])
            if row.done or position == len(draft) or row.generated[-1] != draft[position]:
                break
            kept += 1
        if draft:
            assert pages.drafter is not None  # only a drafter drafts
            pages.drafter.record(len(draft), kept)
            # The cache holds the prompt and every generated token but the last: the refused positions go.
            self.cache.rewind(pages.sequence, len(row.prompt_ids) + len(row.generated) - 1)

    def embed(self, texts: list[list[int]]) -> np.ndarray | None:
        """Return each text's mean-pooled final hidden states, on pages lent for the call; None while pages are short.

        The prefix cache gives up its oldest entries to make room; the rows' pages wait for their rows to end.
        """
        while (means := self.cache.embed(texts, PREFILL_CHUNK_TOKENS)) is None:
            if self.prefix_cache is None or not self.prefix_cache.evict_oldest():
                return None
        return means

    def remove_done(self) -> list[Row]:
        """Take finished rows out, keeping their caches for the prefix cache or giving their pages back."""
        finished, self.finished_early = self.finished_early, []
        waited = [row.done for row in self.waiting]  # once: a cancel may land between two reads
        finished += [row for row, done in zip(self.waiting, waited) if done]
        self.waiting = [row for row, done in zip(self.waiting, waited) if not done]
        going_on = []
        for pages in self.placed:
            if not pages.row.done:
                going_on.append(pages)
                continue
            finished.append(pages.row)
            self._keep_or_free(pages)
        self.placed = going_on
        if finished:
            self._admit()
        return finished

    def _keep_or_free(self, pages: RowPages) -> None:
        row = pages.row
        # The cache holds the prompt and every generated token but the last.
        tokens = row.prompt_ids + row.generated[:-1]
        complete = row.error is None and not pages.prefilling and self.cache.length(pages.sequence) == len(tokens)
        stored = self.stored
        worth_storing = complete and len(tokens) >= PrefixCache.MIN_REUSE
        if worth_storing and stored is not None:
            size = self.cache.export_bytes(len(tokens))
            stored.save(tokens, size, lambda data: self.cache.export(pages.sequence, len(tokens), data))
        if complete and self.prefix_cache is not None:
            self.cache.truncate(pages.sequence, len(tokens))  # give back the pages reserved for a longer reply
            if self.prefix_cache.store(tokens, pages.sequence):
                return
        self.cache.free(pages.sequence)

    def release(self) -> None:
        """Free every row's sequence: the batch is being replaced."""
        for pages in self.placed:
            self.cache.free(pages.sequence)
        self.placed, self.waiting = [], []
