"""A thinking model's reasoning read apart from its answer, however the reply's text is cut into pieces."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palaver.core.reasoning import ReasoningSplitter

REPLY = "<think>\nsome thought\n</think>\n\nthe answer"


def split(pieces: list[str], inside: bool = False) -> tuple[str, str]:
    """Feed pieces to a splitter, then finish it; return the reasoning and the answer."""
    splitter = ReasoningSplitter(inside)
    steps = [splitter.feed(piece) for piece in pieces] + [splitter.finish()]
    return "".join(r for r, _ in steps), "".join(a for _, a in steps)


def pieces_of(text: str, cuts: list[int]) -> list[str]:
    """Cut text at the given places."""
    points = [0, *sorted({cut % (len(text) + 1) for cut in cuts}), len(text)]
    return [text[start:end] for start, end in zip(points, points[1:])]


@given(cuts=st.lists(st.integers(0, 1000), max_size=12))
def test_the_tags_are_found_wherever_the_pieces_cut_them(cuts):
    reasoning, answer = split(pieces_of(REPLY, cuts))
    assert reasoning == "some thought" and answer == "\n\nthe answer"


@pytest.mark.parametrize("at", range(len(REPLY) + 1))
def test_every_single_cut_point_gives_the_same_parts(at):
    assert split([REPLY[:at], REPLY[at:]]) == ("some thought", "\n\nthe answer")


@given(cuts=st.lists(st.integers(0, 1000), max_size=8), text=st.text(alphabet="ab <>/thinkg\n", max_size=40))
def test_nothing_is_lost_or_made_up(cuts, text):
    reasoning, answer = split(pieces_of(text, cuts))
    assert (reasoning, answer) == split([text]), "the parts do not depend on the pieces"
    if not text.lstrip().startswith("<think>"):
        assert (reasoning, answer) == ("", text), "a reply that does not open its thinking is all answer"


def test_text_is_held_back_only_while_it_could_start_a_tag():
    splitter = ReasoningSplitter()
    assert splitter.feed("  <thi") == ("", "")  # it may yet open the thinking
    assert splitter.feed("nk>a long") == ("a long", "")
    assert splitter.feed(" thought </th") == (" thought", "")  # the end of the thinking may follow
    assert splitter.feed("at") == (" </that", "")
    assert splitter.feed("</think>The") == ("", "The") and not splitter.thinking
    assert splitter.feed(" <think>x</think>") == ("", " <think>x</think>"), "the answer is never read for tags"
    assert ReasoningSplitter().feed("<b>bold</b>") == ("", "<b>bold</b>"), "no tag: the answer goes on at once"


def test_a_reply_cut_off_inside_its_thinking_is_all_reasoning():
    reasoning, answer = split(["<think>\nstill going\n</thi"])
    assert reasoning == "still going\n</thi" and answer == ""


def test_a_prompt_that_opened_the_thinking_starts_the_reply_inside_it():
    assert split(["\nfrom the start\n</think>", "the answer"], inside=True) == ("from the start", "the answer")
    assert split(["<think>twice</think>x"], inside=True) == ("twice", "x"), "a repeated tag is dropped"
    assert split(["cut off"], inside=True) == ("cut off", "")
    splitter = ReasoningSplitter(inside=True)
    assert splitter.in_reasoning and not ReasoningSplitter().in_reasoning
