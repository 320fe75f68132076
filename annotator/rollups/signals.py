"""Signal handlers that keep the roll-ups current on every ORM write, and `batched()`."""

import contextlib
import contextvars
from collections import Counter

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save

from ..models import (
    Adjudication,
    Conversation,
    Label,
    ModelResponse,
    Preference,
    Project,
    Review,
    Skip,
    Task,
    TaxonomyCategory,
)
from .contributions import LabelCategory, contributions, refresh_items
from .store import apply, diff, lock_units, rebuild

# --- signal handlers ----------------------------------------------------------------------------


def units_of(instance) -> set[tuple[str, int]]:
    """The units a write to this object can change."""
    if isinstance(instance, Label):
        return {("label", instance.pk), ("response", instance.response_id)}
    if isinstance(instance, Review):
        return {("label", instance.label_id)} if instance.label_id else set()
    if isinstance(instance, Adjudication):
        response = Task.objects.filter(pk=instance.task_id, kind=Task.Kind.LABEL).values("response_id")
        return {
            ("label", pk)
            for pk in Label.objects.filter(response_id__in=response).values_list("pk", flat=True)
        }
    if isinstance(instance, Preference):
        pairs = {(instance.response_a_id, instance.response_b_id)}
        if instance.pk:  # a changed pair leaves its old unit too
            pairs |= set(
                Preference.objects.filter(pk=instance.pk).values_list("response_a_id", "response_b_id")
            )
        return {("preference", instance.pk)} | {("prefpair", pair) for pair in pairs if None not in pair}
    if isinstance(instance, Skip):
        return {("skip", instance.pk)}
    if isinstance(instance, Conversation):
        responses = list(
            ModelResponse.objects.filter(conversation_id=instance.pk).values_list("pk", flat=True)
        )
        return (
            {("response", pk) for pk in responses}
            | {
                ("label", pk)
                for pk in Label.objects.filter(response_id__in=responses).values_list("pk", flat=True)
            }
            | {
                ("preference", pk)
                for pk in Preference.objects.filter(response_a_id__in=responses).values_list("pk", flat=True)
            }
            | {
                ("prefpair", pair)
                for pair in Preference.objects.filter(response_a_id__in=responses).values_list(
                    "response_a_id", "response_b_id"
                )
            }
            | {
                ("skip", pk)
                for pk in Skip.objects.filter(task__response_id__in=responses).values_list("pk", flat=True)
            }
        )
    return set()


class _Batch:
    """Writes inside `batched()`: each unit's counts before its first write, applied once at the end."""

    def __init__(self):
        self.before: Counter = Counter()
        self.units: set = set()

    def touch(self, units):
        """Before a write: remember the counts of the units not seen yet in this batch."""
        fresh = {u for u in units if u not in self.units and u[1] is not None}
        if fresh:
            lock_units(fresh)
            self.before.update(contributions(fresh))
            self.units |= fresh

    def written(self, units):
        """After a write: units first seen now are new objects (nothing to count before them)."""
        self.units |= {u for u in units if u[1] is not None}


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("rollup_batch", default=None)


@contextlib.contextmanager
def batched():
    """Apply the roll-up changes of several writes to the same objects once, at the end (inside a
    transaction): a label saved and then given its categories is counted in one pass instead of two."""
    if _batch.get() is not None:  # nested: the outer batch applies
        yield
        return
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
    lock_units(batch.units)
    apply(diff(contributions(batch.units), batch.before))
    refresh_items(pk for kind, pk in batch.units if kind == "response")


def _pre_save(sender, instance, raw=False, **kwargs):
    if raw:
        return
    if isinstance(instance, Conversation):  # only a change of split moves counts
        old = Conversation.objects.filter(pk=instance.pk).values_list("split", flat=True).first()
        if old is None or old == instance.split:
            return
    units = units_of(instance)
    batch = _batch.get()
    if batch is not None:
        batch.touch(units)
        instance._rollup_batched = True
        return
    lock_units(units)
    instance._rollup_before = (units, contributions(units))


def _post_save(sender, instance, raw=False, **kwargs):
    if instance.__dict__.pop("_rollup_batched", False):
        _batch.get().written(units_of(instance))
        return
    saved = instance.__dict__.pop("_rollup_before", None)
    if saved is None:
        return
    units, before = saved
    units = units | units_of(instance)  # a new object has its id now
    lock_units(units)
    apply(diff(contributions(units), before))
    refresh_items(pk for kind, pk in units if kind == "response" and pk is not None)


def _deleting_project(origin) -> bool:
    """A project being deleted takes its roll-up rows with it (CASCADE): nothing to subtract."""
    return isinstance(origin, Project) or getattr(origin, "model", None) is Project


def _pre_delete(sender, instance, origin=None, **kwargs):
    """Remember the counts of the units this object touches, once per delete call.

    One delete can cascade to labels, their reviews and a gold decision; every post_delete below
    recomputes its own units and applies the change since the last one, so the order in which
    Django deletes them does not matter and nothing is subtracted twice.
    """
    if _deleting_project(origin):
        return
    batch = _batch.get()
    if batch is not None:  # counted with the batch's other writes, at its end
        batch.touch(units_of(instance))
        return
    holder = origin if origin is not None else instance
    applied = holder.__dict__.setdefault("_rollup_applied", {})
    units = units_of(instance)
    lock_units(units)
    for unit in units:
        if unit not in applied:
            applied[unit] = contributions([unit])
    instance._rollup_delete = (applied, units)


def _post_delete(sender, instance, **kwargs):
    saved = instance.__dict__.pop("_rollup_delete", None)
    if saved is None:
        return
    applied, units = saved
    delta: Counter = Counter()
    for unit in units:
        now = contributions([unit])
        delta.update(diff(now, applied[unit]))
        applied[unit] = now
    apply(delta)
    refresh_items(pk for kind, pk in units if kind == "response" and pk is not None)


def _categories_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action.startswith("pre_"):
        if reverse:  # category.labels.add(...): the labels are in pk_set (all of the category's on clear)
            ids = list(pk_set) if pk_set is not None else list(instance.labels.values_list("pk", flat=True))
        else:
            ids = [instance.pk]
        units = {("label", pk) for pk in ids}
        # a label's categories also count in its response's agreement unit
        units |= {
            ("response", pk) for pk in Label.objects.filter(pk__in=ids).values_list("response_id", flat=True)
        }
        batch = _batch.get()
        if batch is not None:
            batch.touch(units)
            return
        lock_units(units)
        instance._rollup_m2m = (units, contributions(units))
    elif action.startswith("post_") and "_rollup_m2m" in instance.__dict__:
        units, before = instance.__dict__.pop("_rollup_m2m")
        apply(diff(contributions(units), before))


def _category_pre_save(sender, instance, raw=False, **kwargs):
    if instance.pk and not raw:
        old = TaxonomyCategory.objects.filter(pk=instance.pk).values_list("parent_id", flat=True).first()
        instance._rollup_moved = old != instance.parent_id


def _category_post_save(sender, instance, raw=False, **kwargs):
    # a new category has no labels yet; a moved one changes what its ancestors count "under"
    if instance.__dict__.pop("_rollup_moved", False):
        rebuild(instance.project, categories_only=True)


def _category_post_delete(sender, instance, origin=None, **kwargs):
    # deleting a category removes its label links without m2m signals: recount the project's categories
    if _deleting_project(origin) or (isinstance(origin, TaxonomyCategory) and origin.pk != instance.pk):
        return  # the project goes too, or this is a child of the deleted category (its parent recounts)
    project = Project.objects.filter(pk=instance.project_id).first()
    if project is not None:
        rebuild(project, categories_only=True)


def connect():
    """Connect the handlers (AnnotatorConfig.ready): every ORM write keeps the roll-ups current."""
    for model in (Label, Review, Adjudication, Preference, Skip, Conversation):
        name = model.__name__.lower()
        pre_save.connect(_pre_save, sender=model, dispatch_uid=f"rollup_{name}_pre_save")
        post_save.connect(_post_save, sender=model, dispatch_uid=f"rollup_{name}_post_save")
        if model is not Conversation:  # a conversation's rows go with its labels, preferences and skips
            pre_delete.connect(_pre_delete, sender=model, dispatch_uid=f"rollup_{name}_pre_delete")
            post_delete.connect(_post_delete, sender=model, dispatch_uid=f"rollup_{name}_post_delete")
    m2m_changed.connect(_categories_changed, sender=LabelCategory, dispatch_uid="rollup_label_categories")
    pre_save.connect(_category_pre_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_pre_save")
    post_save.connect(_category_post_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_save")
    post_delete.connect(
        _category_post_delete, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_delete"
    )
