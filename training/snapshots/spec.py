"""The snapshot request: ``clean_spec`` checks and normalises kind, layout, note, filters and
audit settings (every error names its field; used by the form, the API and tests), and
``describe_filters`` puts a spec in words.

``filters.routing`` (SFT and DPO): "taxonomy", the default, sends each correction where its
categories' fix route says; "all" takes every correction (routing.py).
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError

from annotator.models import (
    ModelVersion,
    Project,
    Split,
    TaxonomyCategory,
)

from ..models import DatasetSnapshot, OnlineRound
from . import audit as audit_mod
from . import routing
from .layouts import DEFAULT_LAYOUT, LAYOUTS

Kind = DatasetSnapshot.Kind


DPO_SOURCES = ("preferences", "corrections")  # the default; "online" (pairs of online DPO rounds) on request


ALL_DPO_SOURCES = (*DPO_SOURCES, "online")


EVAL_SPLITS = (Split.EVAL, Split.HOLDOUT)


def _as_bool(value, field, errors) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "on", "1", 1):
        return True
    if value in ("false", "off", "0", 0, "", None):
        return False
    errors[field] = "must be true or false"
    return False


def _as_ids(value, field, errors, allowed: set[int], what: str) -> list[int]:
    if value in (None, ""):
        return []
    if not isinstance(value, (list, tuple)):
        errors[field] = "must be a list of ids"
        return []
    ids = []
    for v in value:
        try:
            ids.append(int(v))
        except (TypeError, ValueError):
            errors[field] = f"{v!r} is not an id"
            return []
    unknown = sorted(set(ids) - allowed)
    if unknown:
        errors[field] = f"no {what} with id {', '.join(map(str, unknown))} in this project"
        return []
    return sorted(set(ids))


def _as_date(value, field, errors) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        errors[field] = f"{value!r} is not a date (YYYY-MM-DD)"
        return None


def _as_int(value, field, errors, default: int, minimum: int) -> int:
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        errors[field] = "must be a whole number"
        return default
    if isinstance(value, bool) or n < minimum:
        errors[field] = f"must be at least {minimum}"
        return default
    return n


ROUTING_CHOICES = {
    routing.TAXONOMY: "each correction goes where its categories' fix route says (SFT, DPO, both or neither)",
    routing.ALL: "every correction, whatever its categories",
}


def _routing(kind: str, value, f: dict, errors: dict) -> None:
    """filters.routing: for SFT and DPO, "taxonomy" (the default) or "all"; an eval snapshot takes
    every held-out correction, so it has none."""
    if kind not in routing.ROUTED_KINDS:
        if value not in (None, ""):
            errors["filters.routing"] = (
                "only for SFT and DPO snapshots: an eval snapshot takes every held-out correction"
            )
        return
    value = routing.TAXONOMY if value in (None, "") else value
    if not isinstance(value, str) or value not in routing.MODES:
        errors["filters.routing"] = (
            f"must be {routing.TAXONOMY!r} (each correction goes where its categories' fix route says) "
            f"or {routing.ALL!r} (every correction), not {value!r}"
        )
        value = routing.TAXONOMY
    f["routing"] = value


def clean_spec(project: Project, data: dict) -> dict:
    """Validate and normalise a snapshot request.

    ``data``: kind, layout, note, filters {include_submitted, splits, categories,
    model_versions, date_from, date_to, include_reasonable, sources, routing}, audit {checks
    {key: block|warn|off}, min_target_chars, max_tokens, tokenizer}. Unknown keys are
    refused (a typo must not silently widen a dataset). Raises ValidationError whose keys
    are the fields ("filters.categories", "audit.checks.leakage" …).
    """
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": "must be an object"})
    unknown = set(data) - {"kind", "layout", "note", "filters", "audit"}
    if unknown:
        errors["non_field_errors"] = f"unknown field(s): {', '.join(sorted(unknown))}"
    kind = data.get("kind")
    if kind not in Kind.values:
        raise ValidationError({"kind": f"must be one of {', '.join(Kind.values)} (got {kind!r})"})
    layout = data.get("layout") or DEFAULT_LAYOUT[kind]
    if layout not in LAYOUTS[kind]:
        errors["layout"] = f"for {kind} snapshots one of {', '.join(LAYOUTS[kind])} (got {layout!r})"
    note = data.get("note") or ""
    if not isinstance(note, str):
        errors["note"] = "must be text"

    raw = data.get("filters") or {}
    if not isinstance(raw, dict):
        raise ValidationError({"filters": "must be an object"})
    known = {
        "include_submitted",
        "splits",
        "categories",
        "model_versions",
        "date_from",
        "date_to",
        "include_reasonable",
        "sources",
        "online_rounds",
        "routing",
    }
    if set(raw) - known:
        errors["filters"] = f"unknown filter(s): {', '.join(sorted(set(raw) - known))}"
    f = {
        "include_submitted": _as_bool(
            raw.get("include_submitted", False), "filters.include_submitted", errors
        )
    }
    default_splits = list(EVAL_SPLITS) if kind == Kind.EVAL else [Split.TRAIN]
    splits = raw.get("splits") or default_splits
    if isinstance(splits, str):
        splits = [splits]
    if not isinstance(splits, (list, tuple)) or set(splits) - set(Split.values):
        errors["filters.splits"] = f"must be a list of {', '.join(Split.values)}"
        splits = default_splits
    elif kind == Kind.EVAL and set(splits) - set(EVAL_SPLITS):
        errors["filters.splits"] = "an eval snapshot takes held-out items only: eval and/or holdout"
    f["splits"] = sorted(set(splits))
    categories = dict(TaxonomyCategory.objects.filter(project=project).values_list("pk", "parent_id"))
    f["categories"] = _as_ids(
        raw.get("categories"), "filters.categories", errors, set(categories), "category"
    )
    versions = set(ModelVersion.objects.filter(project=project).values_list("pk", flat=True))
    f["model_versions"] = _as_ids(
        raw.get("model_versions"), "filters.model_versions", errors, versions, "model version"
    )
    f["date_from"] = _as_date(raw.get("date_from"), "filters.date_from", errors)
    f["date_to"] = _as_date(raw.get("date_to"), "filters.date_to", errors)
    if f["date_from"] and f["date_to"] and f["date_from"] > f["date_to"]:
        errors["filters.date_to"] = "must not be before date_from"
    if kind == Kind.DPO:
        sources = raw.get("sources") or list(DPO_SOURCES)
        if isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, (list, tuple)) or not sources or set(sources) - set(ALL_DPO_SOURCES):
            errors["filters.sources"] = f"must be a non-empty list of {', '.join(ALL_DPO_SOURCES)}"
            sources = list(DPO_SOURCES)
        f["sources"] = [s for s in ALL_DPO_SOURCES if s in sources]
        if "online" in f["sources"]:
            rounds = set(OnlineRound.objects.filter(run__project=project).values_list("pk", flat=True))
            f["online_rounds"] = _as_ids(
                raw.get("online_rounds"), "filters.online_rounds", errors, rounds, "online round"
            )
            if not f["online_rounds"] and "filters.online_rounds" not in errors:
                errors["filters.online_rounds"] = "pairs from online rounds need the round ids"
        elif raw.get("online_rounds"):
            errors["filters.online_rounds"] = "only with the source online"
    else:
        f["include_reasonable"] = _as_bool(
            raw.get("include_reasonable", False), "filters.include_reasonable", errors
        )
    _routing(kind, raw.get("routing"), f, errors)

    raw_audit = data.get("audit") or {}
    if not isinstance(raw_audit, dict):
        raise ValidationError({"audit": "must be an object"})
    if set(raw_audit) - {"checks", "min_target_chars", "max_tokens", "tokenizer"}:
        errors["audit"] = "unknown setting(s): " + ", ".join(
            sorted(set(raw_audit) - {"checks", "min_target_chars", "max_tokens", "tokenizer"})
        )
    modes = audit_mod.default_modes(kind)
    raw_checks = raw_audit.get("checks") or {}
    if not isinstance(raw_checks, dict):
        errors["audit.checks"] = "must be an object: {check: block|warn|off}"
        raw_checks = {}
    for key, mode in raw_checks.items():
        if key not in modes:
            errors[f"audit.checks.{key}"] = f"no such check for {kind} snapshots; checks: {', '.join(modes)}"
        elif mode not in audit_mod.MODES:
            errors[f"audit.checks.{key}"] = f"must be one of {', '.join(audit_mod.MODES)}"
        else:
            modes[key] = mode
    tokenizer = raw_audit.get("tokenizer")
    if tokenizer in ("", None):
        tokenizer = None
    else:
        mv = ModelVersion.objects.filter(
            project=project,
            pk=int(tokenizer)
            if str(tokenizer).isascii() and str(tokenizer).isdigit() and len(str(tokenizer)) < 19
            else None,
        ).first()
        if mv is None:
            errors["audit.tokenizer"] = f"no model version with id {tokenizer!r} in this project"
        elif not mv.path:
            errors["audit.tokenizer"] = (
                f"model version {mv.name!r} has no local folder to load a tokenizer from"
            )
        tokenizer = mv.pk if mv else None
    audit_config = {
        "checks": modes,
        "min_target_chars": _as_int(
            raw_audit.get("min_target_chars"), "audit.min_target_chars", errors, 10, 0
        ),
        "max_tokens": _as_int(raw_audit.get("max_tokens"), "audit.max_tokens", errors, 4096, 1),
        "tokenizer": tokenizer,
    }
    if errors:
        raise ValidationError(errors)
    return {"kind": kind, "layout": layout, "note": note.strip(), "filters": f, "audit_config": audit_config}


def describe_filters(kind: str, f: dict, names: dict | None = None) -> list[str]:
    """The filter spec in words, for pages and "no rows" messages."""
    names = names or {}
    parts = [
        "approved and submitted work" if f.get("include_submitted") else "approved work only",
        "split " + " + ".join(f.get("splits", [])),
    ]
    if f.get("categories"):
        parts.append("categories: " + ", ".join(names.get(("cat", c), f"#{c}") for c in f["categories"]))
    if f.get("model_versions"):
        parts.append(
            "model versions: " + ", ".join(names.get(("mv", m), f"#{m}") for m in f["model_versions"])
        )
    if f.get("date_from") or f.get("date_to"):
        parts.append(f"labelled {f.get('date_from') or '…'} to {f.get('date_to') or '…'}")
    if kind == Kind.DPO:
        parts.append("pairs from " + " and ".join(f.get("sources", [])))
        if f.get("online_rounds"):
            parts.append("online rounds " + ", ".join(f"#{r}" for r in f["online_rounds"]))
    elif f.get("include_reasonable"):
        parts.append("plus approved reasonable responses")
    mode = routing.mode_of(kind, f)
    if mode == routing.TAXONOMY:
        parts.append("corrections routed by their categories' fix (routing: taxonomy)")
    elif mode == routing.ALL:
        parts.append("every correction, whatever its categories' fix (routing: all)")
    return parts


def filter_names(project_id: int) -> dict:
    names = {
        ("cat", pk): n
        for pk, n in TaxonomyCategory.objects.filter(project_id=project_id).values_list("pk", "name")
    }
    names.update(
        {
            ("mv", pk): n
            for pk, n in ModelVersion.objects.filter(project_id=project_id).values_list("pk", "name")
        }
    )
    return names
