"""Groups on real SQLite and PostgreSQL: deleting one takes its memberships and its quota with it."""

from palaver.storage.quotas import Quota, QuotaStore


def test_deleting_a_group_deletes_its_members_and_quota_but_not_the_people(people, clock):
    store = QuotaStore(people.engine, clock)
    ada = people.create("ada", "passphrase one")
    group = store.groups.create("class")
    store.groups.add(group.id, ada.id)
    store.set(group.subject, Quota(tokens_per_day=100))
    assert store.groups.delete(group.id) and not store.groups.delete(group.id)
    assert store.of(group.subject) is None and store.groups.of(ada.id) == [] and people.get(ada.id) == ada
