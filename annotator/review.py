"""Lead review of labels and preferences, and gold decisions on disagreements: one function per action,
used by pages, API and commands alike."""

from django.core.exceptions import ValidationError
from django.db import transaction

from config.db import retry_on_conflict

from .labelling import category_ids
from .models import Adjudication, Label, Preference, Review, Status, Task
from .rollups.signals import batched


@retry_on_conflict  # outside the transaction: a deadlock victim runs again from the start
@transaction.atomic
def apply_review(reviewer, target: Label | Preference, decision: str, comment: str = "") -> Review:
    """Approve or reject a submitted label/preference. Rejecting sends it back to its annotator."""
    if decision not in Review.Decision.values:
        raise ValidationError({"decision": "Choose approve or reject."})
    target = type(target).objects.select_for_update().get(pk=target.pk)
    if target.status not in (Status.SUBMITTED, Status.APPROVED, Status.REJECTED):
        raise ValidationError(
            {"status": f"Only submitted work can be reviewed (this one is {target.status})."}
        )
    if decision == Review.Decision.REJECT and not comment.strip():
        raise ValidationError({"comment": "Say why it is rejected: the annotator sees this comment."})
    with batched():  # the new status and the review: one roll-up pass
        target.status = Status.APPROVED if decision == Review.Decision.APPROVE else Status.REJECTED
        target.save(update_fields=["status", "updated_at"])
        kwargs = {"label": target} if isinstance(target, Label) else {"preference": target}
        return Review.objects.create(reviewer=reviewer, decision=decision, comment=comment, **kwargs)


@transaction.atomic
def adjudicate(
    lead, task: Task, verdict: str = "", choice: str = "", categories=(), note: str = ""
) -> Adjudication:
    """Record (or change) the lead's gold decision on an item: the verdict of a label task or the choice of a
    compare task, with the categories that apply."""
    errors = {}
    if task.kind == Task.Kind.LABEL and verdict not in Label.Verdict.values:
        errors["verdict"] = ["Choose the gold verdict."]
    if task.kind == Task.Kind.COMPARE and choice not in Preference.Choice.values:
        errors["choice"] = ["Choose the gold preference."]
    try:
        ids = category_ids(task.project_id, categories, strict=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    adj, _ = Adjudication.objects.update_or_create(
        task=task,
        defaults={
            "lead": lead,
            "verdict": verdict if task.kind == Task.Kind.LABEL else "",
            "choice": choice if task.kind == Task.Kind.COMPARE else "",
            "note": str(note or "")[:20000],
        },
    )
    adj.categories.set(ids)
    return adj
