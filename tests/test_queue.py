"""The annotation queue: overlap, locks, expiry, skips, reservations, order, concurrency."""

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotator import assignment
from annotator.labelling import save_label_draft, submit_label
from annotator.models import Membership, Project, Slot, Task
from annotator.taxonomy import seed_default_taxonomy

from .conftest import TOOLS, make_conversation


def build(project, n, overlap=2, n_responses=1):
    project.overlap = overlap
    project.save()
    for i in range(n):
        make_conversation(project, i, n_responses=n_responses)
    return assignment.sync_tasks(project)


def finish(slot, user):
    from django.db import transaction

    with transaction.atomic():
        claimed = assignment.claim_for_submit(slot.task, user)
        assignment.complete(claimed, user)


@pytest.mark.django_db
class TestRules:
    def test_sync_is_idempotent_and_makes_overlap_slots(self, project):
        made = build(project, 5, overlap=2, n_responses=2)
        assert made == {"label": 10, "compare": 5, "slots": 30}
        assert assignment.sync_tasks(project) == {"label": 0, "compare": 0, "slots": 0}

    def test_reload_returns_the_same_slot_and_renews_it(self, project, make_user):
        build(project, 3)
        ann = make_user("a1")
        first = assignment.next_task(project, ann)
        again = assignment.next_task(project, ann)
        assert first.pk == again.pk and again.locked_until >= first.locked_until

    def test_overlap_distinct_annotators_and_never_twice(self, project, make_user):
        build(project, 2, overlap=2)
        a, b, c = make_user("a"), make_user("b"), make_user("c")
        seen = {}
        for user in (a, b):
            while (slot := assignment.next_task(project, user)) is not None:
                seen.setdefault(slot.task_id, []).append(user.username)
                finish(slot, user)
        assert all(sorted(v) == ["a", "b"] for v in seen.values()) and len(seen) == 2
        assert assignment.next_task(project, c) is None  # every item has its 2 annotators

    def test_breadth_first_finishes_started_items(self, project, make_user):
        build(project, 3, overlap=2)
        a, b = make_user("a"), make_user("b")
        first = assignment.next_task(project, a)
        finish(first, a)
        assert assignment.next_task(project, b).task_id == first.task_id

    def test_priority_comes_first(self, project, make_user):
        build(project, 3, overlap=1)
        urgent = Task.objects.order_by("-id").first()
        Task.objects.filter(pk=urgent.pk).update(priority=9)
        Slot.objects.filter(task=urgent).update(priority=9)
        assert assignment.next_task(project, make_user("a")).task_id == urgent.pk

    def test_expired_lock_returns_to_the_queue(self, project, make_user):
        build(project, 1, overlap=1)
        a, b = make_user("a"), make_user("b")
        slot = assignment.next_task(project, a)
        assert assignment.next_task(project, b) is None  # held
        Slot.objects.filter(pk=slot.pk).update(locked_until=timezone.now() - timedelta(seconds=1))
        taken = assignment.next_task(project, b)
        assert taken.pk == slot.pk and taken.annotator == b

    def test_a_lock_does_not_hide_the_rest_of_the_queue(self, project, make_user):
        build(project, 2, overlap=1)
        a, b = make_user("a"), make_user("b")
        assert assignment.next_task(project, a).task_id != assignment.next_task(project, b).task_id

    def test_skip_sends_the_item_to_the_back(self, project, make_user):
        build(project, 3, overlap=1)
        a = make_user("a")
        first = assignment.next_task(project, a)
        assignment.skip(first.task, a)
        order = []
        while (slot := assignment.next_task(project, a)) is not None:
            order.append(slot.task_id)
            finish(slot, a)
        assert order[-1] == first.task_id and len(order) == 3

    def test_reserved_items_come_first_and_only_for_them(self, project, make_user):
        build(project, 4, overlap=1)
        a, b = make_user("a"), make_user("b")
        last = Task.objects.order_by("-id").first()
        assert assignment.reserve(project, [last], b) == 1
        assert assignment.next_task(project, b).task_id == last.pk
        got = []
        while (slot := assignment.next_task(project, a)) is not None:
            got.append(slot.task_id)
            finish(slot, a)
        assert last.pk not in got and len(got) == 3

    def test_raising_and_lowering_overlap_keeps_the_stream(self, project, make_user):
        build(project, 3, overlap=1)
        a, b = make_user("a"), make_user("b")
        finish(assignment.next_task(project, a), a)
        held = assignment.next_task(project, a)
        project.overlap = 2
        project.save()
        assert assignment.ensure_slots(project) == 3
        assert assignment.next_task(project, b) is not None
        project.overlap = 1
        project.save()
        assignment.ensure_slots(project)
        held.refresh_from_db()
        assert held.state == Slot.State.LOCKED  # lowering never drops work in progress
        assert Slot.objects.filter(state=Slot.State.DONE).count() == 1

    def test_stale_submit_is_refused(self, project, make_user):
        seed_default_taxonomy(project)
        build(project, 1, overlap=1)
        a, b = make_user("a"), make_user("b")
        slot = assignment.next_task(project, a)
        save_label_draft(slot.task, a, {"note": "typed before the lock lapsed"})  # the page autosaves
        Slot.objects.filter(pk=slot.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
        assignment.next_task(project, b)  # b takes the expired slot
        with pytest.raises(assignment.StaleSubmit):
            submit_label(slot.task, a, {"verdict": "reasonable"})
        slot.refresh_from_db()
        assert slot.annotator == b and slot.state == Slot.State.LOCKED

    def test_expired_but_untaken_lock_can_still_be_submitted(self, project, make_user):
        build(project, 1, overlap=1)
        a = make_user("a")
        slot = assignment.next_task(project, a)
        save_label_draft(
            slot.task, a, {"verdict": "reasonable"}
        )  # the page autosaves: proof it was handed to a
        Slot.objects.filter(pk=slot.pk).update(locked_until=timezone.now() - timedelta(minutes=1))
        assignment.release_expired(project)
        label = submit_label(slot.task, a, {"verdict": "reasonable"})
        assert label.status == "submitted"
        assert Slot.objects.get(task=slot.task).state == Slot.State.DONE

    def test_strategies_change_the_order(self, project, make_user):
        build(project, 6, overlap=1)
        a = make_user("a")
        assignment.set_strategy(project, "random")
        random_first = assignment.next_task(project, a).task_id
        assignment.skip(Task.objects.get(pk=random_first), a)
        keys = list(Slot.objects.order_by("order_key").values_list("task_id", flat=True))
        assert keys != sorted(keys)  # a shuffled but fixed order
        with pytest.raises(assignment.QueueError):
            assignment.set_strategy(project, "alphabetical")

    def test_next_task_queries_do_not_grow_with_the_queue(
        self, project, make_user, django_assert_max_num_queries
    ):
        build(project, 30, overlap=2)
        a = make_user("a")
        with django_assert_max_num_queries(10):
            assignment.next_task(project, a)


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_annotators_drain_the_queue(make_user):
    """20 threads, each with its own connection, drain the queue (overlap 2): 600 items on PostgreSQL (1,200
    submissions at once), 300 on SQLite; benchmarks/queue_bench.py runs the same checks at 10,000."""
    project = Project.objects.create(name="Race", slug="race", tools=TOOLS, overlap=2)
    n_items = 600 if connection.vendor == "postgresql" else 300
    build(project, n_items, overlap=2)
    users = [make_user(f"ann{i}") for i in range(20)]
    for u in users:
        Membership.objects.create(user=u, project=project)
    done: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(user):
        try:
            while (slot := assignment.next_task(project, user)) is not None:
                finish(slot, user)
                with lock:
                    done.append((slot.task_id, user.pk))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[:3]
    per_task = Counter(task for task, _ in done)
    assert len(per_task) == n_items and set(per_task.values()) == {2}
    assert len(set(done)) == len(done)  # nobody labelled an item twice
    assert Slot.objects.exclude(state=Slot.State.DONE).count() == 0  # no lost slot
    assert all(t.completed == 2 for t in Task.objects.filter(project=project))


@pytest.mark.django_db
def test_queue_size_is_capped_and_exact_below_the_cap(project, make_user):
    build(project, 5, overlap=2)
    a = make_user("a")
    assert assignment.queue_size_by_kind(project, a, "label") == 5
    assert assignment.queue_size_by_kind(project, a, "label", cap=3) == 3
    finish(assignment.next_task(project, a), a)
    assert assignment.queue_size_by_kind(project, a, "label") == 4
