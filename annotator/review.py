"""Lead review of labels and preferences: one function used by pages and API alike."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.db import retry_on_conflict

from . import rollups
from .models import Label, Preference, Review, Status


@retry_on_conflict  # outside the transaction: a deadlock victim runs again from the start
@transaction.atomic
def apply_review(reviewer, target: Label | Preference, decision: str, comment: str = "") -> Review:
    """Approve or reject a submitted label/preference. Rejecting sends it back to its annotator."""
    target = type(target).objects.select_for_update().get(pk=target.pk)
    if target.status not in (Status.SUBMITTED, Status.APPROVED, Status.REJECTED):
        raise ValidationError({"status": f"Only submitted work can be reviewed (this one is {target.status})."})
    if decision == Review.Decision.REJECT and not comment.strip():
        raise ValidationError({"comment": "Say why it is rejected: the annotator sees this comment."})
    with rollups.batched():  # the new status and the review: one roll-up pass
        target.status = Status.APPROVED if decision == Review.Decision.APPROVE else Status.REJECTED
        target.save(update_fields=["status", "updated_at"])
        kwargs = {"label": target} if isinstance(target, Label) else {"preference": target}
        return Review.objects.create(reviewer=reviewer, decision=decision, comment=comment, **kwargs)


def mark_submitted(target: Label | Preference):
    target.status = Status.SUBMITTED
    target.submitted_at = timezone.now()
