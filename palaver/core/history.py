"""Which of a conversation's turns a prompt keeps: the newest, the oldest left out in whole blocks."""

from __future__ import annotations

from collections.abc import Sequence

from palaver.core.types import Message

# User turns left out together. Dropping in blocks, not a turn at a time, keeps the prompt's start the same for
# several turns in a row, so the prefix cache reuses the conversation's cached keys and values.
TRUNCATION_BLOCK = 4


def block_for(most: int | None) -> int:
    """Return the user turns left out together: TRUNCATION_BLOCK, or fewer (a power of two) for a short history."""
    block = TRUNCATION_BLOCK
    while most is not None and block > 1 and block * 8 > most:  # at most a quarter of the turns most allows
        block //= 2
    return block


def history_starts(turns: Sequence[Message], most: int | None = None) -> list[int]:
    """Return where a prompt's turns (system messages aside) may start, fewest left out first.

    A start is the first turn, each block's first user turn, the last user turn or the last turn: kept history starts
    on a user turn, as chat formats expect. With most, only starts that keep at most most messages before the last
    are returned, and the last turn always is.
    """
    block = block_for(most)
    users = [index for index in range(1, len(turns)) if turns[index].role == "user"]
    starts = sorted({0, *users[block - 1 :: block], *users[-1:], len(turns) - 1} - {-1})
    if most is not None:
        starts = [start for start in starts if len(turns) - 1 - start <= most] or starts[-1:]
    return starts


def kept_history(messages: list[Message], most: int) -> tuple[list[Message], int]:
    """Return messages cut, in blocks, to at most most before the last (system ones stay), and how many went."""
    system = [message for message in messages if message.role == "system"]
    turns = [message for message in messages if message.role != "system"]
    start = history_starts(turns, most)[0]
    return system + turns[start:], start


def read_from(turns: int, most: int) -> int:
    """Return the first of a stored conversation's turns to read for a prompt that keeps at most most of them.

    It starts a block, at least most // 2 turns back: more than the prompt may keep, so history_starts still
    decides what it keeps, and in the same blocks, while what a turn reads does not grow with the conversation.
    """
    first = max(0, turns - most // 2)
    return first - first % TRUNCATION_BLOCK
