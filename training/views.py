"""Dataset snapshot pages. Rules live in training/snapshots/; the API calls the same functions."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotator.models import Conversation, Role
from annotator.policy import has_role, project_for, role_in
from jobs import lifecycle

from .api import snapshot_bundle_download, snapshot_download
from .forms import SnapshotForm
from .models import DatasetSnapshot
from .snapshots.build import save_snapshot
from .snapshots.bundle import BundleError, read_info
from .snapshots.dpo_sources import SKIP_REASONS
from .snapshots.layouts import LAYOUTS, llamafactory_dataset_info
from .snapshots.selection import count_matching
from .snapshots.spec import DPO_SOURCES, describe_filters, filter_names
from .snapshots.storage import preview

SOURCE_LABELS = {
    "correction": "corrections",
    "reasonable": "reasonable responses",
    "preference": "preferences",
    "both_bad": "“both bad” vs. a correction",
}


def _snapshot(request, slug, pk, role=Role.LEAD):
    project = project_for(request.user, slug, role)
    return project, get_object_or_404(
        DatasetSnapshot.objects.select_related("project", "created_by"), project=project, pk=pk
    )


@login_required
def snapshot_list(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    qs = DatasetSnapshot.objects.filter(project=project).select_related("created_by").defer("stats", "audit")
    kind = request.GET.get("kind")
    if kind in DatasetSnapshot.Kind.values:
        qs = qs.filter(kind=kind)
    page = Paginator(qs.order_by("-id"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "training/snapshot_list.html",
        {
            "project": project,
            "page": page,
            "kind": kind,
            "kinds": DatasetSnapshot.Kind.choices,
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "role": role_in(request.user, project),
        },
    )


@login_required
def snapshot_create(request, slug):
    project = project_for(request.user, slug, Role.ADMIN)
    initial = {}
    source = request.GET.get("from")
    if request.method == "GET" and source and source.isdecimal():  # not isdigit: int("²") fails
        initial = _initial_from(DatasetSnapshot.objects.filter(project=project, pk=source).first())
    form = SnapshotForm(project, request.POST or None, initial=initial or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            snapshot = save_snapshot(project, request.user, form.spec)
        messages.success(request, f"{snapshot.name} is queued; a worker builds it now.")
        return redirect("training:dataset-detail", slug=project.slug, pk=snapshot.pk)
    return render(
        request,
        "training/snapshot_form.html",
        {"project": project, "form": form, "is_admin": True, "role": role_in(request.user, project)},
    )


def _initial_from(snapshot: DatasetSnapshot | None) -> dict:
    """The create form pre-filled from an earlier snapshot ("build again with changes")."""
    if snapshot is None:
        return {}
    f, a = snapshot.filters, snapshot.audit_config
    initial = {
        "kind": snapshot.kind,
        "layout": snapshot.layout,
        "include_submitted": f.get("include_submitted"),
        "splits": f.get("splits"),
        "categories": [str(c) for c in f.get("categories", [])],
        "model_versions": [str(m) for m in f.get("model_versions", [])],
        "date_from": f.get("date_from"),
        "date_to": f.get("date_to"),
        "include_reasonable": f.get("include_reasonable", False),
        "sources": f.get("sources", list(DPO_SOURCES)),
        # a snapshot made before routing existed took every correction
        "routing": f.get("routing") or ("all" if snapshot.kind != DatasetSnapshot.Kind.EVAL else "taxonomy"),
        "min_target_chars": a.get("min_target_chars"),
        "max_tokens": a.get("max_tokens"),
        "tokenizer": str(a["tokenizer"]) if a.get("tokenizer") else "",
    }
    initial.update({f"check_{k}": v for k, v in a.get("checks", {}).items()})
    return initial


@login_required
@require_POST
def snapshot_count(request, slug):
    """The live count on the create form (an htmx fragment)."""
    project = project_for(request.user, slug, Role.ADMIN)
    form = SnapshotForm(project, request.POST)
    count, errors = None, []
    if form.is_valid():
        spec = form.spec
        count = count_matching(project.pk, spec["kind"], spec["filters"])
        count["kind"] = spec["kind"]
    else:
        errors = [
            f"{form[f].label if f in form.fields else ''}: {e}".lstrip(": ")
            for f, errs in form.errors.items()
            for e in errs
        ]
    return render(request, "training/_count.html", {"count": count, "errors": errors})


@login_required
def snapshot_detail(request, slug, pk):
    project, snapshot = _snapshot(request, slug, pk)
    context = {
        "project": project,
        "s": snapshot,
        "is_admin": has_role(request.user, project, Role.ADMIN),
        "role": role_in(request.user, project),
        "stalled": snapshot.stalled,
        "can_retry": snapshot.resumable,
    }
    if request.headers.get("HX-Request") and not snapshot.finished:
        return render(request, "training/_progress.html", context)
    if request.headers.get("HX-Request"):
        response = render(request, "training/_progress.html", context)
        response["HX-Refresh"] = "true"  # the build finished: show the whole page (stats, audit, preview)
        return response
    names = filter_names(project.pk)
    same = []
    if snapshot.sha256:
        same = list(
            DatasetSnapshot.objects.filter(project=project, sha256=snapshot.sha256)
            .exclude(pk=snapshot.pk)
            .only("pk", "kind", "version")
        )
    stats = snapshot.stats or {}
    rows = preview(snapshot)
    external_ids = dict(  # the preview links each row's conversation by its external id, as everywhere
        Conversation.objects.filter(
            project=project, pk__in={r["conversation_id"] for r in rows if r.get("conversation_id")}
        ).values_list("pk", "external_id")
    )
    context.update(
        {
            "filters_words": describe_filters(snapshot.kind, snapshot.filters, names),
            "layout_text": LAYOUTS.get(snapshot.kind, {}).get(snapshot.layout, ""),
            "preview": [
                {
                    **row,
                    "target_list": [row["target"]],
                    "rejected_list": [row["rejected"]] if row.get("rejected") else [],
                    "external_id": external_ids.get(row.get("conversation_id"), ""),
                }
                for row in rows
            ],
            "same_content": same,
            "categories": _bars(stats.get("rows_by_category", {})),
            "sources": _bars(
                {SOURCE_LABELS.get(k, k): n for k, n in stats.get("rows_by_source", {}).items()}
            ),
            "versions": _bars(stats.get("rows_by_model_version", {})),
            "skipped": [  # the build's reason keys, in words (an unknown key as it is)
                (n, SKIP_REASONS.get(k, k.replace("_", " "))) for k, n in (stats.get("skipped") or {}).items()
            ],
            "histogram": stats.get("token_histogram"),
            "checks": (snapshot.audit or {}).get("checks", []),
            "lf_info": llamafactory_dataset_info(snapshot) if snapshot.layout == "llamafactory" else "",
            "bundle": read_info(snapshot),
            "token_rows": [
                (label, stats.get(key))
                for label, key in (
                    ("prompt", "prompt_tokens"),
                    ("target / chosen", "target_tokens"),
                    ("rejected", "rejected_tokens"),
                )
                if stats.get(key)
            ],
        }
    )
    return render(request, "training/snapshot_detail.html", context)


def _bars(counts: dict) -> list[tuple[str, int, float]]:
    top = max(counts.values(), default=0)
    return [(name, n, 100 * n / top if top else 0) for name, n in counts.items()]


@login_required
def snapshot_audit(request, slug, pk):
    project, snapshot = _snapshot(request, slug, pk)
    return render(
        request,
        "training/snapshot_audit.html",
        {
            "project": project,
            "s": snapshot,
            "report": snapshot.audit or {},
            "role": role_in(request.user, project),
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "config": json.dumps(snapshot.audit_config, indent=2),
        },
    )


def _ready_snapshot(request, slug, pk):
    project, snapshot = _snapshot(request, slug, pk)
    if snapshot.status != DatasetSnapshot.State.READY:
        raise Http404("Only a ready snapshot has a file.")
    return project, snapshot


@login_required
def snapshot_file(request, slug, pk):
    _, snapshot = _ready_snapshot(request, slug, pk)
    return snapshot_download(snapshot)


@login_required
def snapshot_bundle(request, slug, pk):
    """The .tar.gz bundle (JSONL, Parquet, dataset card, manifest …), made now if the build did not."""
    project, snapshot = _ready_snapshot(request, slug, pk)
    try:
        return snapshot_bundle_download(snapshot)
    except BundleError as exc:
        messages.error(request, f"The bundle could not be made: {exc}")
        return redirect("training:dataset-detail", slug=project.slug, pk=snapshot.pk)


@login_required
@require_POST
def snapshot_delete(request, slug, pk):
    project, snapshot = _snapshot(request, slug, pk, Role.ADMIN)
    name = snapshot.name
    snapshot.delete()
    messages.success(request, f"{name} and its file were deleted.")
    return redirect("training:dataset-list", slug=project.slug)


@login_required
@require_POST
def snapshot_retry(request, slug, pk):
    project, snapshot = _snapshot(request, slug, pk, Role.ADMIN)
    try:
        lifecycle.resume(snapshot)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training:dataset-detail", slug=project.slug, pk=snapshot.pk)
