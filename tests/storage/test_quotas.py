"""Quotas on real SQLite and PostgreSQL: set and cleared per person and group; a person's own, else the strictest."""

import pytest

from palaver.core.errors import InvalidRequest
from palaver.storage.quotas import Quota, QuotaStore, strictest


@pytest.fixture
def quota_store(people, clock):
    return QuotaStore(people.engine, clock)


def test_a_persons_own_quota_wins_kind_by_kind_else_the_strictest_of_their_groups(people, quota_store):
    ada, grace = people.create("ada", "passphrase one"), people.create("grace", "passphrase two")
    assert quota_store.effective(ada.id) == Quota()
    students, night = quota_store.groups.create("students"), quota_store.groups.create("night")
    for group in (students, night):
        assert quota_store.groups.add(group.id, ada.id)
    quota_store.set(students.subject, Quota(tokens_per_day=5000, requests_per_minute=10, models=("a", "b")))
    quota_store.set(night.subject, Quota(tokens_per_day=2000, tokens_per_month=90000, models=("b", "c")))
    quota_store.set(f"person:{ada.id}", Quota(requests_per_minute=30))
    assert quota_store.effective(ada.id) == Quota(2000, 90000, 30, ("b",))
    assert quota_store.effective(grace.id) == Quota(), "the groups bind their members alone"
    quota_store.set(f"person:{ada.id}", Quota(tokens_per_day=50000, models=()))
    assert quota_store.effective(ada.id) == Quota(50000, 90000, 10, ()), "an empty list of models allows none"
    quota_store.set(f"person:{ada.id}", Quota())
    assert quota_store.of(f"person:{ada.id}") is None, "an empty quota clears it"
    assert quota_store.groups.remove(night.id, ada.id) and not quota_store.groups.remove(night.id, ada.id)
    assert quota_store.effective(ada.id) == Quota(5000, None, 10, ("a", "b"))
    assert quota_store.groups.delete(students.id)
    assert quota_store.effective(ada.id) == Quota() and set(quota_store.everything()) == {night.subject}


def test_groups_are_renamed_listed_and_refuse_a_name_taken_or_empty(people, quota_store):
    ada = people.create("ada", "passphrase one")
    team = quota_store.groups.create("  the   team ")
    assert team.name == "the team" and quota_store.groups.rename(team.id, "staff")
    quota_store.groups.create("interns")
    assert quota_store.groups.add(team.id, ada.id) and quota_store.groups.add(team.id, ada.id)
    assert not quota_store.groups.add(team.id, "nobody") and not quota_store.groups.add("none", ada.id)
    assert [(g.name, g.members) for g in quota_store.groups.everything()] == [("interns", ()), ("staff", (ada.id,))]
    assert quota_store.groups.of(ada.id) == [team.id] and quota_store.groups.get(team.id).name == "staff"
    with pytest.raises(InvalidRequest) as taken:
        quota_store.groups.rename(team.id, "interns")
    assert taken.value.code == "group_taken"
    with pytest.raises(InvalidRequest):
        quota_store.groups.create("   ")
    with pytest.raises(InvalidRequest) as negative:
        quota_store.set(f"group:{team.id}", Quota(tokens_per_day=-1))
    assert negative.value.param == "tokens_per_day"
    assert people.delete(ada.id) and quota_store.groups.get(team.id).members == ()


def test_the_strictest_of_no_groups_is_no_limit():
    assert strictest(None, []) == Quota()
    assert strictest(None, [Quota(models=("a",)), Quota()]) == Quota(models=("a",))
