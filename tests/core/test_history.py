"""The one history policy: the oldest turns left out in blocks, by the context (the family) and a turn count."""

import pytest

from palaver.core.history import TRUNCATION_BLOCK, block_for, history_starts, kept_history, read_from
from palaver.core.types import Message


def conversation(turns: int) -> list[Message]:
    """Return turns user and assistant messages in turn, ending on a user message when turns is odd."""
    return [Message("user" if index % 2 == 0 else "assistant", f"message {index}") for index in range(turns)]


def test_starts_are_the_first_turn_whole_blocks_of_user_turns_and_the_last_turns():
    starts = history_starts(conversation(21))
    assert starts == [0, 8, 16, 20], "every fourth user turn, then the last one (the new message)"
    assert history_starts(conversation(5)) == [0, 4]
    assert history_starts([]) == [0], "nothing to leave out"


def test_a_turn_count_keeps_the_fewest_dropped_starts_within_it_and_at_least_the_last_turn():
    turns = conversation(41)
    assert history_starts(turns, 39)[0] == 8 and history_starts(turns, 40)[0] == 0, "the new message, and 40 more"
    assert history_starts(turns, 0) == [40], "no history at all: the new message alone"
    assert history_starts(conversation(5), 2)[0] == 2, "a short history drops a turn at a time: two messages kept"


def test_blocks_are_a_quarter_of_a_short_history_and_four_user_turns_past_it():
    assert [block_for(most) for most in (None, 40, 32, 31, 16, 8, 2, 0)] == [4, 4, 4, 2, 2, 1, 1, 1]


def test_a_prompt_past_its_count_keeps_its_start_for_a_block_of_turns():
    firsts = [history_starts(conversation(2 * turn + 1), 40)[0] for turn in range(20, 60)]
    changes = sum(1 for before, after in zip(firsts, firsts[1:]) if before != after)
    assert changes <= len(firsts) // TRUNCATION_BLOCK + 1, f"the start moves a block at a time: {firsts}"


@pytest.mark.parametrize("most", [0, 1, 2, 7, 10, 16, 31, 40])
def test_reading_from_read_from_keeps_what_reading_everything_would(most):
    for turns in range(0, 60):
        whole = conversation(2 * turns + 1)  # the stored turns, then the new message
        first = read_from(turns, most)
        assert first % TRUNCATION_BLOCK == 0 and turns - first >= min(turns, most // 2)
        read = whole[2 * first :]
        assert 2 * first + history_starts(read, most)[0] == history_starts(whole, most)[0], (turns, most)


def test_kept_history_keeps_system_messages_and_counts_what_went():
    messages = [Message("system", "be brief"), *conversation(11)]
    kept, dropped = kept_history(messages, 4)
    assert kept[0].role == "system" and len(kept) - 2 <= 4 and dropped == 11 - (len(kept) - 1)
    assert kept[1].role == "user" and kept[-1].content == "message 10"
