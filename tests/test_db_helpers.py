"""config/db.py: a submit or review that PostgreSQL aborts as a deadlock victim runs again and counts once;
a job that grows tables fast keeps the planner's row estimates current."""

from unittest import mock

import psycopg
import pytest
from django.db import OperationalError, transaction

from annotator import assignment
from annotator.labelling import submit_label, submit_preference
from annotator.models import Label, Preference, Role, Slot, Status, TaxonomyCategory
from annotator.review import apply_review
from annotator.rollups import store
from config.db import retry_on_conflict

from .conftest import make_conversation

# outside the test's own transaction: only the outermost call retries
pytestmark = pytest.mark.django_db(transaction=True)


def deadlock(sqlstate_error=psycopg.errors.DeadlockDetected):
    """The error Django raises when PostgreSQL picks this transaction as the deadlock victim."""
    try:
        raise sqlstate_error("deadlock detected")
    except psycopg.Error as cause:
        err = OperationalError(str(cause))
        err.__cause__ = cause
        return err


def fail_once(real, error):
    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    return run, calls


@pytest.fixture
def queue(project, members):
    project.overlap = 1
    project.save()
    make_conversation(project, 0, n_responses=2)
    assignment.sync_tasks(project)
    return project


def test_a_label_submit_aborted_as_deadlock_victim_runs_again_and_counts_once(queue, members):
    user = members[Role.ANNOTATOR]
    leaf = TaxonomyCategory.objects.filter(project=queue, parent__isnull=False).first()
    slot = assignment.next_task(queue, user, "label")
    # the first attempt fails at its last step, after the label and its roll-up counts were written
    failing, calls = fail_once(assignment.complete, deadlock())
    with mock.patch.object(assignment, "complete", failing):
        label = submit_label(slot.task, user, {"verdict": "unreasonable", "categories": [leaf.pk]})
    assert len(calls) == 2
    assert Label.objects.filter(response=slot.task.response, annotator=user).count() == 1
    assert label.status == Status.SUBMITTED and list(label.categories.values_list("pk", flat=True)) == [
        leaf.pk
    ]
    assert Slot.objects.get(pk=slot.pk).state == Slot.State.DONE
    incremental = store.snapshot(queue)
    assert incremental["LabelDay"]  # counted ...
    store.rebuild(queue)
    assert store.snapshot(queue) == incremental  # ... once: the aborted attempt's increments were rolled back


def test_a_comparison_and_a_review_run_again_too(queue, members):
    user, lead = members[Role.ANNOTATOR], members[Role.LEAD]
    slot = assignment.next_task(queue, user, "compare")
    failing, calls = fail_once(assignment.complete, deadlock(psycopg.errors.SerializationFailure))
    with mock.patch.object(assignment, "complete", failing):
        pref = submit_preference(slot.task, user, {"choice": "a"})
    assert len(calls) == 2 and Preference.objects.filter(annotator=user).count() == 1
    real_save = Preference.save
    failing_save, save_calls = fail_once(real_save, deadlock())
    with mock.patch.object(Preference, "save", lambda self, *a, **k: failing_save(self, *a, **k)):
        apply_review(lead, pref, "approve")
    pref.refresh_from_db()
    assert pref.status == Status.APPROVED and pref.reviews.count() == 1
    incremental = store.snapshot(queue)
    store.rebuild(queue)
    assert store.snapshot(queue) == incremental


def test_other_errors_and_inner_calls_are_not_retried():
    calls = []

    @retry_on_conflict
    def broken():
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError):
        broken()
    assert calls == [1]

    @retry_on_conflict
    def victim():
        calls.append(2)
        raise deadlock()

    with pytest.raises(OperationalError), transaction.atomic():
        victim()  # inside a transaction the error belongs to the enclosing one
    assert calls == [1, 2]
    with pytest.raises(OperationalError):
        victim()  # on its own: three attempts, then the error
    assert calls == [1, 2, 2, 2, 2]


def test_table_stats_analyse_a_table_each_time_a_job_doubles_it(project):
    """PostgreSQL only: the planner's row estimate follows a table a long job grows (see TableStats)."""
    from django.db import connection

    from annotator.models import Conversation
    from config.db import TableStats

    from .conftest import make_conversation

    if connection.vendor != "postgresql":
        pytest.skip("ANALYZE and pg_class estimates are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE annotator_conversation")  # start from an exact estimate
    stats = TableStats(Conversation, floor=20)
    assert stats.known == Conversation.objects.count() == 0
    for i in range(19):
        make_conversation(project, f"s-{i}")
    assert stats.grew(19) is False  # below the floor: nothing to do yet
    make_conversation(project, "s-19")
    assert stats.grew(1) is True and stats.known == Conversation.objects.count() == 20
    for i in range(20, 39):
        make_conversation(project, f"s-{i}")
    assert stats.grew(19) is False  # 19 more on 20: not doubled yet
    with transaction.atomic():
        make_conversation(project, "s-39")
        assert stats.grew(1) is False  # never inside the caller's transaction
    assert stats.grew(0) is True and stats.known == 40
