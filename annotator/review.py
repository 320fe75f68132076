"""Lead review of labels and preferences, and gold decisions on disagreements: one function per action,
used by pages, API and commands alike. The review queue (what waits, narrowed by QueueFilters) and its
bulk approval live here too, so the review page and the REST endpoint share them."""

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

from django.apps import apps
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import dateformat, timezone

from config.db import retry_on_conflict

from .dashboards.lookups import CategoryTree
from .labelling import MAX_ID, category_ids
from .models import (
    Adjudication,
    AgreementItem,
    Label,
    Membership,
    Preference,
    Review,
    Status,
    Task,
    status_mask,
)
from .policy import can_review
from .rollups.contributions import contributions, refresh_items
from .rollups.signals import batched
from .rollups.store import apply, diff, lock_units


class WorkChanged(ValidationError):
    """The work under review changed since the reviewer saw it (answered 409)."""

    status_code = 409


def _stamp(submitted_at) -> str:
    """A submit time as 'seconds.microseconds' (the review form's template writes it with the same format)."""
    return dateformat.format(submitted_at, "U.u") if submitted_at else ""


def version(work: Label | Preference) -> str:
    """Which submission of a work a reviewer is looking at: its submit time (the review form sends it back
    as `seen`)."""
    return _stamp(work.submitted_at)


def list_version(rows) -> str:
    """Which submissions a list of work holds, from (id, submitted_at) pairs: the lead's bulk confirmation
    sends it back as `seen`, so an item an annotator changed since (same id, submitted again) is caught."""
    pairs = sorted((pk, _stamp(t)) for pk, t in rows)
    return hashlib.sha256(repr(pairs).encode()).hexdigest()[:32]


@retry_on_conflict  # outside the transaction: a deadlock victim runs again from the start
@transaction.atomic
def apply_review(
    reviewer, target: Label | Preference, decision: str, comment: str = "", seen: str | None = None
) -> Review:
    """Approve or reject a submitted label/preference. Rejecting sends it back to its annotator.

    `seen`: the work's version() as the reviewer saw it; an annotator may change submitted work until it
    is reviewed, so a review of a version the reviewer never saw is refused (WorkChanged)."""
    if decision not in Review.Decision.values:
        raise ValidationError({"decision": "Choose approve or reject."})
    target = type(target).objects.select_for_update().get(pk=target.pk)
    if seen is not None and seen != version(target):
        raise WorkChanged(
            {
                "seen": "The annotator changed this item after you opened it: look at it again before "
                "reviewing."
            }
        )
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


# --- the review queue and bulk approval -----------------------------------------------------------

WHATS = ("labels", "preferences")
BULK_LIMIT = 1000  # one bulk approval covers at most this many items: the lead confirms a list they can see
COUNTED = (Status.SUBMITTED, Status.APPROVED)  # what a disagreement is judged on (as the disagreements page)
LabelCategory = Label.categories.through
TRUE, FALSE = ("1", "on", "true", "yes"), ("", "0", "off", "false", "no")


class ListChanged(ValidationError):
    """The filtered list is not the one the lead confirmed (an item left or joined it since)."""

    status_code = 409


def _shown(raw, limit: int = 40) -> str:
    text = str(raw)
    return repr(text if len(text) <= limit else text[:limit] + "…")


@dataclass(frozen=True)
class QueueFilters:
    """What a lead narrowed the review queue to: the same on the page, its bulk approval and the API."""

    what: str = "labels"  # labels | preferences
    annotator: str = ""  # username
    annotator_id: int | None = None
    category: int | None = None  # labels only: this category or any below it
    under: tuple[int, ...] = ()
    verdict: str = ""  # labels: reasonable | unreasonable; preferences: the choice (a, b, tie, both_bad)
    disagreement: bool = False  # only items whose submitted or approved judgements disagree

    @classmethod
    def parse(cls, project, params) -> "QueueFilters":
        """From request.GET / request.data. A bad value is a ValidationError naming the parameter."""
        errors: dict[str, str] = {}

        def one(name) -> str:
            value = params.get(name, "")
            value = "" if value is None else value
            if not isinstance(value, (str, int, bool)):
                errors[name] = "Send a single value."
                return ""
            if "\x00" in str(value):
                errors[name] = "A NUL character is not allowed."
                return ""
            return str(value).strip()

        what = one("what") or "labels"
        if what not in WHATS:
            errors["what"] = f"Choose labels or preferences (not {_shown(what)})."
            what = "labels"
        annotator, annotator_id = one("annotator"), None
        if annotator:
            annotator_id = (
                Membership.objects.filter(project=project, user__username=annotator)
                .values_list("user_id", flat=True)
                .first()
            )
            if annotator_id is None:
                errors["annotator"] = f"No member of this project is called {_shown(annotator)}."
        category, under = None, ()
        raw = one("category")
        if raw and what == "labels":
            number = int(raw) if re.fullmatch(r"[0-9]{1,18}", raw) else None
            tree = CategoryTree.load(project)
            if number not in tree.nodes:
                errors["category"] = f"{_shown(raw)} is not a category of this project."
            else:
                category, under = number, tuple(tree.subtree(number))
        verdict = one("verdict")
        choices = Label.Verdict.values if what == "labels" else Preference.Choice.values
        if verdict and verdict not in choices:
            errors["verdict"] = f"Choose one of {', '.join(choices)} (not {_shown(verdict)})."
        flag = one("disagreement").lower()
        if flag not in TRUE + FALSE:
            errors["disagreement"] = f"Send 1 or 0 (not {_shown(flag)})."
        if errors:
            raise ValidationError(errors)
        return cls(what, annotator, annotator_id, category, under, verdict, flag in TRUE)

    def params(self) -> dict[str, str]:
        """The query parameters that give these filters back (empty ones left out)."""
        out = {
            "what": self.what,
            "annotator": self.annotator,
            "category": str(self.category or ""),
            "verdict": self.verdict,
            "disagreement": "1" if self.disagreement else "",
        }
        return {k: v for k, v in out.items() if v}

    @property
    def narrowed(self) -> bool:
        return bool(self.annotator_id or self.under or self.verdict or self.disagreement)


def review_queue(project, f: QueueFilters):
    """The submitted labels (or preferences) of a project that wait for review, oldest submission first.

    Every filter is a condition on an indexed column of the queue's own rows (label_project_status_time,
    label_annotator_status), an IN over the category links, or a per-row probe of an index (_probe): for
    "disagreement" the split responses the roll-ups keep (AgreementItem: the response's submitted and
    approved labels disagree on the verdict, as on the disagreements page), for comparisons the pair's
    other preferences. Walking the list (next, previous, a capped count) never reads the whole table."""
    if f.what == "preferences":
        qs = Preference.objects.filter(status=Status.SUBMITTED, response_a__conversation__project=project)
        if f.verdict:
            qs = qs.filter(choice=f.verdict)
        if f.disagreement:  # another submitted or approved choice on the same pair
            other = Preference.objects.filter(
                response_a=OuterRef("response_a"), response_b=OuterRef("response_b"), status__in=COUNTED
            ).filter(~Q(choice=OuterRef("choice")))
            qs = _probe(qs, other)
    else:
        qs = Label.objects.filter(project=project, status=Status.SUBMITTED)
        if f.verdict:
            qs = qs.filter(verdict=f.verdict)
        if f.under:
            qs = qs.filter(
                pk__in=LabelCategory.objects.filter(taxonomycategory_id__in=f.under).values("label_id")
            )
        if f.disagreement:  # its response is split, as the roll-ups keep it (AgreementItem)
            split = AgreementItem.objects.filter(
                project=project, statuses=status_mask(COUNTED), response=OuterRef("response_id")
            )
            qs = _probe(qs, split)
    if f.annotator_id:
        qs = qs.filter(annotator_id=f.annotator_id)
    return qs.order_by(F("submitted_at").asc(nulls_last=True), "id")


def _probe(qs, related):
    """Keep the rows for which `related` (correlated to the row) has a match.

    A scalar subquery rather than EXISTS on purpose: PostgreSQL turns an EXISTS into a semi-join and, on
    a narrow list, may hash the whole related table first (O(all labels)); a scalar subquery is probed
    per row through its index (the AgreementItem key, the response_a index), so finding the next item
    costs a few probes and a capped count costs one probe per row of the list."""
    return qs.alias(_related=Subquery(related.values("pk")[:1])).filter(_related__isnull=False)


def _as_ids(raw) -> list[int]:
    if isinstance(raw, str):
        raw = [part for part in raw.replace(",", " ").split() if part]
    if not isinstance(raw, (list, tuple)):
        raise ValidationError({"ids": "Send the ids of the items you confirmed, as a list."})
    ids = []
    for value in raw:
        try:
            number = int(value) if not isinstance(value, (bool, float)) else 0
        except (TypeError, ValueError):
            number = 0
        if not 1 <= number <= MAX_ID:
            raise ValidationError({"ids": f"{_shown(value)} is not an item id."})
        ids.append(number)
    return ids


@retry_on_conflict
@transaction.atomic
def approve_many(reviewer, project, f: QueueFilters, ids, comment: str = "", seen: str | None = None) -> int:
    """Approve every item of a filtered review list at once, if it is still exactly the list the lead
    confirmed (`ids`, and `seen`: its list_version() as listed): an item reviewed elsewhere, newly
    submitted or changed by its annotator since makes it refuse (ListChanged), so nothing is approved
    unseen. Leads of the project only; rows of other projects are never read.

    A fixed number of statements for the whole list (one update, one insert of reviews, their history
    rows, one roll-up pass), as apply_review does per item."""
    if not can_review(reviewer, project):
        raise PermissionDenied("Approving needs the lead role in this project.")
    wanted = set(_as_ids(ids))
    if not wanted:
        raise ValidationError({"ids": "Nothing to approve: confirm a list with at least one item."})
    if len(wanted) > BULK_LIMIT:
        raise ValidationError({"ids": f"At most {BULK_LIMIT} items at once: narrow the filters."})
    model = Preference if f.what == "preferences" else Label
    qs = review_queue(project, f)
    if connection.features.has_select_for_update_of:
        qs = qs.select_for_update(of=("self",))
    items = list(qs[: BULK_LIMIT + 1])
    if {item.pk for item in items} != wanted:
        holds = str(len(items)) if len(items) <= BULK_LIMIT else f"over {BULK_LIMIT}"
        raise ListChanged(
            {
                "ids": f"The list changed since you confirmed it: it now holds {holds} items, "
                f"you confirmed {len(wanted)}. Look at it again before approving."
            }
        )
    if seen is not None and seen != list_version((i.pk, i.submitted_at) for i in items):
        raise ListChanged(
            {
                "seen": "An annotator changed an item of this list since you confirmed it. Look at it "
                "again before approving."
            }
        )
    if isinstance(items[0], Label):
        units = {("label", i.pk) for i in items} | {("response", i.response_id) for i in items}
    else:
        units = {("preference", i.pk) for i in items} | {
            ("prefpair", (i.response_a_id, i.response_b_id)) for i in items
        }
    now = timezone.now()
    lock_units(units)
    before = contributions(units)
    model.objects.filter(pk__in=wanted).update(status=Status.APPROVED, updated_at=now)
    for item in items:
        item.status, item.updated_at = Status.APPROVED, now
    _history(model, items, reviewer, now)
    target = "label" if model is Label else "preference"
    reviews = Review.objects.bulk_create(
        [
            Review(reviewer=reviewer, decision=Review.Decision.APPROVE, comment=comment, **{target: i})
            for i in items
        ]
    )
    Review.history.bulk_history_create(reviews, default_user=reviewer, default_date=now)
    apply(diff(contributions(units), before))
    refresh_items(pk for kind, pk in units if kind == "response")
    return len(items)


def _history(model, items, user, when):
    """The history rows a save() would have written: one per item (a label's with its categories)."""
    rows = model.history.bulk_history_create(items, update=True, default_user=user, default_date=when) or []
    if model is Label and rows:
        links = defaultdict(list)
        for link in LabelCategory.objects.filter(label_id__in=[i.pk for i in items]).order_by("id"):
            links[link.label_id].append(link)
        HistoricalLink = apps.get_model("annotator", "HistoricalLabel_categories")
        HistoricalLink.objects.bulk_create(
            [
                HistoricalLink(
                    history=row,
                    id=link.id,
                    label_id=link.label_id,
                    taxonomycategory_id=link.taxonomycategory_id,
                )
                for row in rows
                for link in links[row.id]
            ]
        )
