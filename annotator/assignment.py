"""The annotation queue: tasks, overlap slots, expiring locks, skips, reservations.

Rules (see the annotator workspace issue):
- an item (Task) needs `project.overlap` distinct annotators: one Slot each;
- an annotator never holds two slots of one task (a unique constraint makes sure), and
  asking again while holding a lock returns the same slot (reload-safe);
- a taken slot is a lock that expires after the project's TTL; expired locks go back to the
  pool; a skipped task goes to the back of that annotator's queue;
- only a task the queue handed an annotator (they hold its lock) or a lead reserved for them can be
  submitted, drafted or skipped by them: typing another task's URL (page or API) changes nothing;
- order: slots reserved for this annotator first, then priority, then tasks that already have
  submissions (breadth first), then the project's strategy key (sequential, random, uncertain);
- on PostgreSQL the pick is `SELECT … FOR UPDATE SKIP LOCKED` over a partial index, so two
  annotators asking at once never get the same slot and a lock never hides the rest of the queue.
"""

from collections import defaultdict
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Mod
from django.utils import timezone

from .bulk import bulk_insert
from .models import STRATEGIES, Membership, ModelResponse, Project, Skip, Slot, Task


class QueueError(Exception):
    """A queue rule refused the action; the message is meant for the annotator."""


class StaleSubmit(QueueError):
    pass


class NotHanded(QueueError):
    """The queue never handed this task to the annotator, nor did a lead reserve it for them."""


ALREADY_SUBMITTED = "You already submitted this item."
LOCK_LOST = "Your lock on this item expired and another annotator may have it."
NOT_HANDED = (
    "This item is not assigned to you: the queue did not hand it to you, or your lock on it lapsed and "
    "it went back to the queue. Nothing was saved; take your next item."
)


def lock_ttl(project: Project) -> timedelta:
    return timedelta(minutes=float(project.setting("lock_ttl_minutes")))


# --- building the queue ----------------------------------------------------------------------


MAX_PAIRS_PER_CONTEXT = 3


def context_pairs(members: list[tuple[int, str]], max_pairs: int = MAX_PAIRS_PER_CONTEXT):
    """The compare pairs of one context (conversation + context length): its responses as (id, text
    hash) in id order, paired in that order, the same text twice skipped, at most `max_pairs`. The one
    pairing rule: sync_tasks and ingestion both call it."""
    made = 0
    for i, (a, digest_a) in enumerate(members):
        for b, digest_b in members[i + 1 :]:
            if made >= max_pairs:
                return
            if digest_a == digest_b:
                continue  # the same text twice: nothing to compare
            made += 1
            yield a, b


def sync_tasks(project: Project, max_pairs_per_context: int = MAX_PAIRS_PER_CONTEXT) -> dict:
    """Create label tasks for new responses and compare tasks for new pairs; then fill slots. Idempotent.

    One pass over the project's responses in context order (two streamed queries in all, whatever the
    project's size), not a query per context."""
    created = {"label": 0, "compare": 0}
    fresh = (
        ModelResponse.objects.filter(conversation__project=project)
        .exclude(Exists(Task.objects.filter(kind=Task.Kind.LABEL, response=OuterRef("pk"))))
        .values_list("pk", "conversation__priority")
    )
    batch = []
    for pk, priority in fresh.iterator(chunk_size=5000):
        batch.append(Task(project=project, kind=Task.Kind.LABEL, response_id=pk, priority=priority))
        if len(batch) >= 5000:
            created["label"] += len(bulk_insert(batch))
            batch = []
    created["label"] += len(bulk_insert(batch))

    # Pairs: responses answering the same context, read once in context order and grouped in passing.
    existing = set(
        Task.objects.filter(project=project, kind=Task.Kind.COMPARE).values_list(
            "response_id", "response_b_id"
        )
    )
    responses = (
        ModelResponse.objects.filter(conversation__project=project)
        .order_by("conversation_id", "context_length", "id")
        .values_list("id", "conversation_id", "context_length", "conversation__priority", "response_hash")
    )
    pairs, context, members, priority = [], None, [], 0

    def flush():
        for a, b in context_pairs(members, max_pairs_per_context):
            if (a, b) not in existing:
                pairs.append(
                    Task(
                        project=project,
                        kind=Task.Kind.COMPARE,
                        response_id=a,
                        response_b_id=b,
                        priority=priority,
                    )
                )

    for pk, conversation_id, context_length, conv_priority, digest in responses.iterator(chunk_size=5000):
        if (conversation_id, context_length) != context:
            flush()
            context, members, priority = (conversation_id, context_length), [], conv_priority
        members.append((pk, digest))
        if len(pairs) >= 5000:
            created["compare"] += len(bulk_insert(pairs))
            pairs = []
    flush()
    created["compare"] += len(bulk_insert(pairs))
    created["slots"] = ensure_slots(project)
    return created


def _order_key(strategy: str):
    if strategy == "random":  # a fixed pseudo-random order (Knuth's multiplicative hash of the id)
        return Mod(F("task_id") * 2654435761, 4294967296) / 4294967296.0
    if strategy == "uncertain":  # most uncertain first: higher stored score, smaller key
        score = Subquery(ModelResponse.objects.filter(tasks=OuterRef("task_id")).values("uncertainty")[:1])
        return -Coalesce(score, 0.0)
    return F("task_id") * 1.0


def order_key_value(strategy: str, task_id: int, uncertainty: float | None) -> float:
    """The same key as _order_key() computes in SQL, for slots created in Python."""
    if strategy == "random":
        return (task_id * 2654435761) % 4294967296 / 4294967296.0
    if strategy == "uncertain":
        return -(uncertainty or 0.0)
    return float(task_id)


def new_slot(project, task_id, index, priority, completed, strategy, uncertainty) -> Slot:
    """One of a task's `overlap` slots, placed in the queue by the project's strategy."""
    return Slot(
        project_id=project.pk,
        task_id=task_id,
        index=index,
        priority=priority,
        progress=completed,
        order_key=order_key_value(strategy, task_id, uncertainty),
    )


def queue_responses(project: Project, fresh: list, existed: set, priorities: dict) -> dict:
    """Label and compare tasks, with their slots, for responses just stored (`fresh`, ids ascending), by the
    rules sync_tasks applies to the whole project: a label task each, compare pairs by context_pairs,
    `overlap` slots per task. Its cost follows the batch, not the project (ingestion calls it per request).

    Pairs between older responses are left to sync_tasks, whose job they were; a pair with a new response
    in it cannot exist yet. Only conversations in `existed` (stored before the batch) are read back: the
    responses of the batch's new conversations are all in `fresh`. `priorities`: conversation id ->
    priority."""
    if not fresh:
        return {"label": 0, "compare": 0, "slots": 0}
    new = {r.pk for r in fresh}
    groups = defaultdict(list)  # (conversation, context length) -> [(response id, hash)]
    uncertainty = dict.fromkeys(new)
    known = {r.conversation_id for r in fresh} & existed
    if known:
        for pk, conversation_id, context_length, digest, score in ModelResponse.objects.filter(
            conversation_id__in=known
        ).values_list("pk", "conversation_id", "context_length", "response_hash", "uncertainty"):
            groups[(conversation_id, context_length)].append((pk, digest))
            uncertainty[pk] = score
    for r in fresh:
        if r.conversation_id not in known:
            groups[(r.conversation_id, r.context_length)].append((r.pk, r.response_hash))
    label, compare = [], []
    for (conversation_id, _), members in groups.items():
        members.sort()
        priority = priorities[conversation_id]
        label.extend(
            Task(project_id=project.pk, kind=Task.Kind.LABEL, response_id=pk, priority=priority)
            for pk, _ in members
            if pk in new
        )
        compare.extend(
            Task(
                project_id=project.pk,
                kind=Task.Kind.COMPARE,
                response_id=a,
                response_b_id=b,
                priority=priority,
            )
            for a, b in context_pairs(members)
            if a in new or b in new
        )
    tasks = bulk_insert(label + compare)
    overlap, strategy = project.overlap, project.setting("strategy")
    slots = [
        new_slot(project, task.pk, index, task.priority, 0, strategy, uncertainty[task.response_id])
        for task in tasks
        for index in range(overlap)
    ]
    bulk_insert(slots)
    return {"label": len(label), "compare": len(compare), "slots": len(slots)}


def ensure_slots(project: Project) -> int:
    """Give every task exactly `overlap` slots; surplus slots are removed only while free and unreserved.

    Raising the overlap adds slots to existing tasks; lowering it never touches locked or done work.
    """
    overlap, strategy = project.overlap, project.setting("strategy")
    added = 0
    for index in range(overlap):
        missing = (
            Task.objects.filter(project=project)
            .exclude(Exists(Slot.objects.filter(task=OuterRef("pk"), index=index)))
            .values_list("pk", "priority", "completed", "response__uncertainty")
        )
        batch = []
        for pk, priority, completed, uncertainty in missing.iterator(chunk_size=5000):
            batch.append(new_slot(project, pk, index, priority, completed, strategy, uncertainty))
            if len(batch) >= 5000:
                added += len(bulk_insert(batch))
                batch = []
        added += len(bulk_insert(batch))
    Slot.objects.filter(
        project=project, index__gte=overlap, state=Slot.State.FREE, reserved_for__isnull=True
    ).delete()
    return added


def set_strategy(project: Project, strategy: str):
    if strategy not in STRATEGIES:
        raise QueueError(f"Unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}.")
    if project.setting("strategy") != strategy:
        project.label_settings = {**(project.label_settings or {}), "strategy": strategy}
        project.save(update_fields=["label_settings"])
    Slot.objects.filter(project=project).update(order_key=_order_key(strategy))


def reserve(project: Project, tasks, annotator) -> int:
    """A lead assigns tasks to a named annotator: one free slot each, kept for them."""
    count = 0
    with transaction.atomic():
        for task in tasks:
            if (
                Slot.objects.filter(task=task)
                .filter(Q(annotator=annotator) | Q(reserved_for=annotator))
                .exists()
            ):
                continue
            slot = (
                Slot.objects.select_for_update()
                .filter(task=task, state=Slot.State.FREE, reserved_for__isnull=True)
                .order_by("index")
                .first()
            )
            if slot:
                slot.reserved_for = annotator
                slot.save(update_fields=["reserved_for", "updated_at"])
                count += 1
    return count


MAX_ASSIGN = 5000


def assign(project: Project, annotator, kind: str, external_ids=(), count=0) -> int:
    """A lead hands items to a named annotator of the project: the tasks of these conversations (external
    ids), or else the next `count` (at most MAX_ASSIGN) tasks with a free slot. Returns how many were
    reserved."""
    errors = {}
    if annotator is None or not Membership.objects.filter(project=project, user=annotator).exists():
        errors["annotator"] = ["Choose an annotator of this project."]
    if kind not in Task.Kind.values:
        errors["kind"] = [f"Choose one of {', '.join(Task.Kind.values)}."]
    external_ids = [str(e).strip() for e in external_ids or () if str(e).strip()]
    try:
        count = max(0, min(int(count or 0), MAX_ASSIGN))
    except (TypeError, ValueError, OverflowError):
        errors["count"] = ["A whole number of items."]
        count = 0
    if not errors and not external_ids and not count:
        errors["external_ids"] = ["Give conversation ids or a number of items."]
    if errors:
        raise ValidationError(errors)
    tasks = Task.objects.filter(project=project, kind=kind)
    if external_ids:
        tasks = tasks.filter(response__conversation__external_id__in=external_ids)
    else:
        tasks = (
            tasks.filter(slots__state=Slot.State.FREE, slots__reserved_for__isnull=True)
            .distinct()
            .order_by("-priority", "id")[:count]
        )
    return reserve(project, list(tasks), annotator)


# --- handing out work ----------------------------------------------------------------------


def _lockable(qs):
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True, of=("self",))
    return qs  # SQLite: writes are serialised (BEGIN IMMEDIATE), which is enough


def release_expired(project: Project, now=None) -> int:
    now = now or timezone.now()
    return Slot.objects.filter(project=project, state=Slot.State.LOCKED, locked_until__lt=now).update(
        state=Slot.State.FREE, annotator=None, locked_until=None
    )


def current_slot(project: Project, user, kind: str | None = None) -> Slot | None:
    qs = Slot.objects.filter(
        project=project, annotator=user, state=Slot.State.LOCKED, locked_until__gte=timezone.now()
    )
    if kind:
        qs = qs.filter(task__kind=kind)
    return qs.select_related("task").order_by("id").first()


def next_task(project: Project, user, kind: str | None = None) -> Slot | None:
    """Lock and return the annotator's next slot, or None when nothing is left for them."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                return _next_task(project, user, kind)
        except IntegrityError:
            continue  # the same annotator raced themselves (two tabs): try again
    return None


def _next_task(project, user, kind):
    get_user_model().objects.select_for_update().filter(
        pk=user.pk
    ).exists()  # one request per annotator at a time
    now = timezone.now()
    held = current_slot(project, user, kind)
    if held:
        _lock(held, user, project, now)
        return held
    release_expired(project, now)
    mine = Slot.objects.filter(task_id=OuterRef("task_id"), annotator=user)
    skipped = Skip.objects.filter(task_id=OuterRef("task_id"), annotator=user)
    kind_filter = Q(task__kind=kind) if kind else Q()
    candidates = [
        # 1. slots a lead reserved for this annotator
        Slot.objects.filter(kind_filter, project=project, reserved_for=user, state=Slot.State.FREE)
        .exclude(Exists(mine))
        .order_by("id"),
        # 2. the shared pool, never a task already held or done by this annotator, nor one they skipped
        Slot.objects.filter(kind_filter, project=project, state=Slot.State.FREE, reserved_for__isnull=True)
        .exclude(Exists(mine))
        .exclude(Exists(skipped))
        .order_by("-priority", "-progress", "order_key", "id"),
    ]
    for qs in candidates:
        slot = _lockable(qs).first()
        if slot:
            return _lock(slot, user, project, now)
    # 3. the back of the queue: tasks this annotator skipped, oldest skip first
    skipped_first = (
        Slot.objects.filter(
            kind_filter,
            project=project,
            state=Slot.State.FREE,
            reserved_for__isnull=True,
            task__skips__annotator=user,
        )
        .exclude(Exists(mine))
        .order_by("task__skips__skipped_at", "id")
    )
    slot = _lockable(skipped_first).first()
    return _lock(slot, user, project, now) if slot else None


def _lock(slot: Slot, user, project, now) -> Slot:
    slot.state = Slot.State.LOCKED
    slot.annotator = user
    slot.locked_until = now + lock_ttl(project)
    slot.save(update_fields=["state", "annotator", "locked_until", "updated_at"])
    return slot


def heartbeat(task: Task, user):
    """Renew the annotator's lock while the page is open: the new expiry, or None if it is no longer
    theirs."""
    until = timezone.now() + lock_ttl(task.project)
    renewed = Slot.objects.filter(task=task, annotator=user, state=Slot.State.LOCKED).update(
        locked_until=until
    )
    return until if renewed else None


def handed_slot(task: Task, user) -> Slot | None:
    """The slot of `task` the queue handed `user`: the one they lock (even past its expiry, while nobody
    took it) or filled, else a free one a lead reserved for them. None: the task is not theirs."""
    slots = list(
        Slot.objects.filter(task=task)
        .filter(Q(annotator=user) | Q(reserved_for=user, state=Slot.State.FREE))
        .order_by("index")
    )
    return next((s for s in slots if s.annotator_id == user.pk), slots[0] if slots else None)


def skip(task: Task, user) -> None:
    """Pass on a task the queue handed you: its slot goes back to the pool, the task to the back of your
    queue."""
    with transaction.atomic():
        held = (
            Slot.objects.select_for_update()
            .filter(task=task)
            .filter(Q(annotator=user) | Q(reserved_for=user, state=Slot.State.FREE))
        )
        states = {s.state for s in held}
        if not states or states == {Slot.State.DONE}:
            raise QueueError(ALREADY_SUBMITTED) if states else NotHanded(NOT_HANDED)
        Slot.objects.filter(task=task, annotator=user, state=Slot.State.LOCKED).update(
            state=Slot.State.FREE, annotator=None, locked_until=None
        )
        Skip.objects.update_or_create(task=task, annotator=user, defaults={})


def claim_for_submit(task: Task, user, lapsed_ok: bool = False) -> Slot:
    """The slot this submission fills; call inside a transaction. Refuses stale submits and tasks the
    queue never handed to `user` (typed into a URL).

    lapsed_ok: the caller knows the queue did hand the task over (the annotator's draft of it exists), so
    when their lock lapsed and went back to the pool, a still-free slot may be taken instead.
    """
    # Lock order task -> slots, the same for every submitter of this task: no deadlocks.
    Task.objects.select_for_update().filter(pk=task.pk).exists()
    slot = Slot.objects.select_for_update().filter(task=task, annotator=user).first()
    if slot is not None and slot.state == Slot.State.DONE:
        raise QueueError(ALREADY_SUBMITTED)
    if slot is None:  # never locked by them, or their lock expired and was released
        free = Slot.objects.filter(task=task, state=Slot.State.FREE).order_by("index")
        slot = _lockable(free.filter(reserved_for=user)).first()
        if slot is None and not lapsed_ok:
            raise NotHanded(NOT_HANDED)
        if slot is None:
            slot = _lockable(free.filter(reserved_for__isnull=True)).first()
        if slot is None:
            raise StaleSubmit(
                "Your lock on this item expired and its slot was given to another annotator, "
                "so this submission was not saved over theirs. Your draft is kept; take the next item."
            )
    return slot


def complete(slot: Slot, user) -> None:
    """Mark a claimed slot done and move its task forward in everyone's breadth-first order."""
    Slot.objects.filter(pk=slot.pk).update(
        state=Slot.State.DONE, annotator=user, locked_until=None, updated_at=timezone.now()
    )
    Task.objects.filter(pk=slot.task_id).update(completed=F("completed") + 1)
    done = Task.objects.filter(pk=slot.task_id).values_list("completed", flat=True).first()
    Slot.objects.filter(task_id=slot.task_id).update(progress=done)


QUEUE_COUNT_CAP = 1000


def queue_size_by_kind(project: Project, user, kind: str | None = None, cap: int = QUEUE_COUNT_CAP) -> int:
    """How many tasks this annotator could still get, counted up to `cap` (then shown as "cap+").

    An exact count reads every free slot of the project (seconds at 1M items); walking the
    queue's own index for at most `cap` slots costs milliseconds at any size.
    """
    mine = Slot.objects.filter(task_id=OuterRef("task_id"), annotator=user)
    kind_filter = Q(task__kind=kind) if kind else Q()
    pool = (
        Slot.objects.filter(kind_filter, project=project, state=Slot.State.FREE, reserved_for__isnull=True)
        .exclude(Exists(mine))
        .order_by("-priority", "-progress", "order_key", "id")
        .values_list("task_id", flat=True)[: cap * max(1, project.overlap)]
    )  # a task has up to `overlap` slots
    reserved = (
        Slot.objects.filter(kind_filter, project=project, state=Slot.State.FREE, reserved_for=user)
        .exclude(Exists(mine))
        .values_list("task_id", flat=True)[:cap]
    )
    return min(cap, len(set(pool) | set(reserved)))


def queue_size(project: Project, user) -> int:
    return queue_size_by_kind(project, user)
