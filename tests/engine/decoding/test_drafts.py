"""Prompt-lookup drafts: what followed the latest earlier occurrence of a row's last tokens, while drafting pays."""

from palaver.engine.decoding.drafts import DRAFT_TOKENS, TRIAL_TOKENS, Drafter


def drafter_of(tokens):
    drafter = Drafter()
    drafter.extend(tokens)
    return drafter


def test_a_draft_is_what_followed_the_latest_earlier_occurrence_of_the_longest_suffix():
    # "5 6 7" occurred twice before; the latest earlier one was followed by 40 41.
    drafter = drafter_of([5, 6, 7, 8, 9, 1, 5, 6, 7, 40, 41, 2, 5, 6, 7])
    assert drafter.draft(10) == [40, 41, 2, 5, 6, 7]
    assert drafter.draft(2) == [40, 41], "no more than the row's reserved positions allow"
    assert drafter.draft(0) == []


def test_a_shorter_suffix_is_tried_when_the_longer_never_occurred_and_one_token_never_drafts():
    assert drafter_of([3, 4, 50, 51, 9, 3, 4]).draft(4) == [50, 51, 9, 3]
    assert drafter_of([3, 60, 61, 3]).draft(4) == [], "a single repeated token predicts too little"
    assert drafter_of([1, 2, 3]).draft(4) == [], "nothing repeats"


def test_a_draft_is_at_most_draft_tokens_long_and_grows_with_the_tokens_chosen():
    drafter = drafter_of(list(range(1, 40)) + [1, 2, 3])
    assert drafter.draft(100) == list(range(4, 4 + DRAFT_TOKENS))
    drafter.extend([4])
    assert drafter.draft(100)[0] == 5


def test_a_row_whose_drafts_are_refused_stops_drafting_after_its_trial():
    drafter = drafter_of([7, 8, 9, 10, 7, 8])
    drafter.record(TRIAL_TOKENS - 1, 0)
    assert drafter.draft(4), "still on trial"
    drafter.record(1, 0)
    assert drafter.draft(4) == [], "refused throughout its trial: drafts no more"
    drafter.record(0, TRIAL_TOKENS)
    assert drafter.draft(4), "a row whose drafts hold keeps drafting"
