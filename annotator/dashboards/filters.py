"""What a lead narrowed the dashboards to (Filters: parsed from a query string, written back into
links), the date windows, and the roll-up reads every page shares (which counter cells a filter picks)."""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from django.db.models import F, Q, Sum
from django.utils import timezone

from ..models import (
    Label,
    Split,
    Status,
)
from ..rollups.contributions import NO_DAY

LabelCategory = Label.categories.through
UNREASONABLE = Label.Verdict.UNREASONABLE
REASONABLE = Label.Verdict.REASONABLE
COUNTED_STATUSES = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)
DEFAULT_STATUSES = (Status.SUBMITTED, Status.APPROVED)
TIME_CAP_S = 1800  # time-per-item histogram: one-second bins up to 30 minutes, the rest in the last bin
MIN_PAIR_ITEMS = 10  # below this many shared items a kappa is shown but flagged as too few
DISAGREEMENT_ITEMS = 50
BOOTSTRAP_SAMPLES = 1000
MAX_ID = 2**63 - 1  # the largest primary key any backend stores; a bigger "id" names nothing
# a date filter outside these days is clamped to them: no label is older, and the day after the end
# still exists (0001-01-01 is the roll-ups' "no day"; 9999-12-31 has no next day)
EARLIEST_DAY = dt.date(1970, 1, 1)
LATEST_DAY = dt.date(2999, 12, 31)
MAX_BUCKETS = 400  # time-series rows: a longer span moves to the next larger bucket (day, week, month, year)
BUCKETS = ("day", "week", "month", "year")


def as_id(raw) -> int | None:
    """A query parameter as a primary key, or None when it cannot be one (not a number, < 1, too big)."""
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= MAX_ID else None


def _shown(raw, limit: int = 40) -> str:
    """A bad value echoed back in a message, cut short (it may be a megabyte of junk)."""
    text = str(raw)
    return text if len(text) <= limit else text[:limit] + "…"


# --- filters ------------------------------------------------------------------------------------


class FilterError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Filters:
    """What a lead narrowed the dashboards to. Parsed from a query string, written back into links."""

    models: tuple[int, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None  # inclusive
    annotator: int | None = None
    split: str = ""
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    bucket: str = "auto"  # day | week | month | year | auto (a span of more than MAX_BUCKETS moves up)
    category: int | None = None  # scope: badcases in this category's subtree (and drill-down in the tree)

    @classmethod
    def parse(cls, params: Mapping, strict: bool = False) -> "Filters":
        """From request.GET (or a dict). Bad values raise FilterError when strict, else are dropped."""
        errors: dict[str, str] = {}

        def many(name):
            values = params.getlist(name) if hasattr(params, "getlist") else [params.get(name)]
            return [p.strip() for v in values if v for p in str(v).split(",") if p.strip()]

        def one_int(name):
            raw = params.get(name)
            if raw in (None, ""):
                return None
            value = as_id(raw)
            if value is None:
                errors[name] = f"{_shown(raw)!r} is not an id."
            return value

        def one_date(name):
            raw = params.get(name)
            if not raw:
                return None
            try:
                day = dt.date.fromisoformat(str(raw))
            except ValueError:
                errors[name] = f"{_shown(raw)!r} is not a date (YYYY-MM-DD)."
                return None
            return min(max(day, EARLIEST_DAY), LATEST_DAY)

        models = []
        for raw in many("model"):
            value = as_id(raw)
            if value is None:
                errors["model"] = f"{_shown(raw)!r} is not a model version id."
            else:
                models.append(value)
        statuses = many("status")
        if statuses == ["all"]:
            statuses = list(COUNTED_STATUSES)
        bad = [s for s in statuses if s not in COUNTED_STATUSES]
        if bad:
            errors["status"] = f"{_shown(', '.join(bad))}: choose from {', '.join(COUNTED_STATUSES)} or all."
            statuses = [s for s in statuses if s in COUNTED_STATUSES]
        split = params.get("split") or ""
        if split and split not in Split.values:
            errors["split"] = f"{_shown(split)!r}: choose from {', '.join(Split.values)}."
            split = ""
        bucket = params.get("bucket") or "auto"
        if bucket not in (*BUCKETS, "auto"):
            errors["bucket"] = f"choose {', '.join(BUCKETS)} or auto."
            bucket = "auto"
        f = cls(
            models=tuple(sorted(set(models))),
            date_from=one_date("from"),
            date_to=one_date("to"),
            annotator=one_int("annotator"),
            split=split,
            statuses=tuple(s for s in COUNTED_STATUSES if s in statuses) or DEFAULT_STATUSES,
            bucket=bucket,
            category=one_int("category"),
        )
        if f.date_from and f.date_to and f.date_from > f.date_to:
            errors["to"] = "The end date is before the start date."
        if errors and strict:
            raise FilterError(errors)
        return f

    def params(self, **overrides) -> dict:
        """Query parameters that reproduce these filters (defaults left out), with overrides applied."""
        f = replace(self, **{k: v for k, v in overrides.items() if k in self.__dataclass_fields__})
        out = {}
        if f.models:
            out["model"] = ",".join(str(m) for m in f.models)
        if f.date_from:
            out["from"] = f.date_from.isoformat()
        if f.date_to:
            out["to"] = f.date_to.isoformat()
        if f.annotator:
            out["annotator"] = f.annotator
        if f.split:
            out["split"] = f.split
        if f.statuses != DEFAULT_STATUSES:
            out["status"] = ",".join(f.statuses)
        if f.bucket != "auto":
            out["bucket"] = f.bucket
        if f.category:
            out["category"] = f.category
        extra = {
            k: v for k, v in overrides.items() if k not in self.__dataclass_fields__ and v not in (None, "")
        }
        out.update(extra)
        return out

    def query(self, **overrides) -> str:
        return urlencode(self.params(**overrides))

    def key(self) -> str:
        return self.query() or "-"

    def describe(self) -> dict:
        return {
            "models": list(self.models),
            "from": self.date_from,
            "to": self.date_to,
            "annotator": self.annotator,
            "split": self.split or None,
            "statuses": list(self.statuses),
            "bucket": self.bucket,
            "category": self.category,
        }


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _window(f: Filters, field: str) -> Q:
    """A timestamp inside the date filter's local days (what local_day files under those days)."""
    q = Q()
    if f.date_from:
        q &= Q(**{f"{field}__gte": _day_start(f.date_from)})
    if f.date_to:
        q &= Q(**{f"{field}__lt": _day_start(f.date_to + dt.timedelta(days=1))})
    return q


def label_q(project, f: Filters, prefix: str = "", annotator: bool = True) -> Q:
    """The Q selecting a project's counted labels under the filters; `prefix` reaches Label through a join."""
    q = Q(**{f"{prefix}project_id": project.pk, f"{prefix}status__in": f.statuses})
    if f.models:
        q &= Q(**{f"{prefix}model_version_id__in": f.models})
    q &= _window(f, f"{prefix}submitted_at")
    if f.annotator and annotator:
        q &= Q(**{f"{prefix}annotator_id": f.annotator})
    if f.split:
        q &= Q(**{f"{prefix}response__conversation__split": f.split})
    return q


def rollup_cells(f: Filters, statuses=None) -> list[str]:
    """The roll-up counter columns (split_status) the split and status filters select."""
    splits = [f.split] if f.split else list(Split.values)
    return [f"{sp}_{st}" for sp in splits for st in (statuses or f.statuses)]


def rollup_sum(cells: list[str], *prefixes: str):
    """SUM over the selected counter columns of one or more prefixes (n, bad, timed, ms ...)."""
    expr = None
    for prefix in prefixes:
        for c in cells:
            expr = F(f"{prefix}_{c}") if expr is None else expr + F(f"{prefix}_{c}")
    return Sum(expr)


def rollup_counted(qs, cells: list[str], prefix: str = "n"):
    """Leave out roll-up rows whose selected counters are all zero (decremented away or other cells)."""
    expr = None
    for c in cells:
        expr = F(f"{prefix}_{c}") if expr is None else expr + F(f"{prefix}_{c}")
    return qs.alias(_counted=expr).filter(_counted__gt=0)


def rollup_days(f: Filters, field: str = "day") -> Q:
    q = Q()
    if f.date_from:
        q &= Q(**{f"{field}__gte": f.date_from})
    if f.date_to:
        q &= Q(**{f"{field}__lte": f.date_to, f"{field}__gt": NO_DAY})
    return q


def _version(mv):
    return mv or None  # the roll-ups file "no model version" under 0


def _rollup_day(day):
    day = _as_date(day)
    return None if day == NO_DAY else day


def preference_q(project, f: Filters, prefix: str = "", annotator: bool = True) -> Q:
    q = Q(**{f"{prefix}response_a__conversation__project_id": project.pk, f"{prefix}status__in": f.statuses})
    if f.models:
        q &= Q(**{f"{prefix}response_a__model_version_id__in": f.models}) | Q(
            **{f"{prefix}response_b__model_version_id__in": f.models}
        )
    q &= _window(f, f"{prefix}submitted_at")
    if f.annotator and annotator:
        q &= Q(**{f"{prefix}annotator_id": f.annotator})
    if f.split:
        q &= Q(**{f"{prefix}response_a__conversation__split": f.split})
    return q


def _as_date(value) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):  # SQLite returns TruncDate as text in nested SQL
        return dt.date.fromisoformat(value[:10])
    return value
