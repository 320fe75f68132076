"""Pages of the pairwise judge: reports, external judges, suggestions."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError as BrokerError

from annotator.models import Role
from annotator.policy import has_role, project_for
from inference.endpoints import check_endpoint_url

from .forms import JobChoices
from .models import (
    DatasetSnapshot,
    JudgeEvaluation,
    JudgeSuggestion,
    JudgeVerdictSuggestion,
    ModelVersion,
    judges_of,
)
from .tasks import evaluate_judge, suggest_with_judge


@login_required
def judges(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    judges = list(judges_of(project).select_related("parent"))
    latest = {}  # each judge's newest evaluation, in one query
    for ev in JudgeEvaluation.objects.filter(judge__in=judges).select_related("job").order_by("-id"):
        latest.setdefault(ev.judge_id, ev)

    def counts(model, unsure: Q):  # {judge: (suggestions, disputed, unsure)}, one grouped query per kind
        return {
            r["judge"]: (r["n"], r["d"], r["u"])
            for r in model.objects.filter(project=project)
            .values("judge")
            .annotate(n=Count("id"), d=Count("id", filter=Q(disagrees=True)), u=Count("id", filter=unsure))
            .order_by()
        }

    pairs = counts(JudgeSuggestion, Q(verdict=JudgeSuggestion.Verdict.UNSURE))
    single = counts(JudgeVerdictSuggestion, Q(suggested=JudgeVerdictSuggestion.Suggested.UNSURE))
    rows = []
    for judge in judges:
        (n, d, u), (vn, vd, vu) = pairs.get(judge.pk, (0, 0, 0)), single.get(judge.pk, (0, 0, 0))
        ev = latest.get(judge.pk)
        rows.append(
            {
                "judge": judge,
                "ev": ev,
                "unsure": ev.pairs - ev.decided if ev and ev.decided is not None else None,
                "suggestions": n,
                "disagree": d,
                "suggestions_unsure": u,
                "verdicts": vn,
                "verdicts_disagree": vd,
                "verdicts_unsure": vu,
            }
        )
    disputed = (
        JudgeSuggestion.objects.filter(project=project, disagrees=True)
        .select_related("judge", "response_a__conversation", "response_b")
        .order_by("-id")[:50]
    )
    disputed_verdicts = (
        JudgeVerdictSuggestion.objects.filter(project=project, disagrees=True)
        .select_related("judge", "response__conversation")
        .order_by("-id")[:50]
    )
    chart = [{"judge": r["judge"].name, "bins": r["ev"].details.get("bins", [])} for r in rows if r["ev"]]
    first = None  # with no judge yet: what training a first one would use, or what it still lacks
    if not rows:
        choices = JobChoices(project)
        first = {
            "base": choices.start_version("judge"),
            "snapshot": choices.train_snapshot("judge"),
            "missing": choices.defaults("judge")["missing"],
        }
    return render(
        request,
        "training/judges.html",
        {
            "project": project,
            "rows": rows,
            "disputed": disputed,
            "disputed_verdicts": disputed_verdicts,
            "chart": chart,
            "first": first,
            "can_run": has_role(request.user, project, Role.LEAD),
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "pair_snapshots": DatasetSnapshot.objects.filter(
                project=project, kind="dpo", status="ready"
            ).order_by("-id"),
        },
    )


def _queue(request, task, *args, done: str) -> None:
    try:
        task.delay(*args)
    except BrokerError as exc:
        messages.error(
            request, f"Could not reach the task queue ({exc}); nothing was queued. Try again later."
        )
    else:
        messages.success(request, done)


@login_required
@require_POST
def judge_evaluate(request, slug, pk):
    """Measure a judge on the human pairs of a DPO snapshot (e.g. one built from eval/holdout items)."""
    project = project_for(request.user, slug, Role.LEAD)
    judge = get_object_or_404(judges_of(project), pk=pk)
    snap = DatasetSnapshot.objects.filter(
        project=project, kind="dpo", status="ready", pk=request.POST.get("snapshot") or 0
    ).first()
    if snap is None:
        messages.error(request, "Choose a ready DPO snapshot of human preferences to measure the judge on.")
    else:
        _queue(
            request,
            evaluate_judge,
            judge.pk,
            snap.pk,
            done=(
                f"{judge.name} is judging the pairs of {snap.name}; the report appears here when it is done."
            ),
        )
    return redirect("training-jobs:judges", slug=slug)


@login_required
@require_POST
def judge_external(request, slug):
    """Register an OpenAI-compatible endpoint as a judge (admins)."""
    project = project_for(request.user, slug, Role.ADMIN)
    name, url, model = (request.POST.get(k, "").strip() for k in ("name", "base_url", "model"))
    problems = []
    if not name:
        problems.append("a name")
    if not url.startswith(("http://", "https://")):
        problems.append("a base URL starting with http:// or https://")
    else:
        try:
            check_endpoint_url(url, settings.MODEL_ENDPOINT_ALLOWED_HOSTS)
        except ValueError as exc:
            problems.append(f"a base URL the server may call ({exc})")
    if ModelVersion.objects.filter(project=project, name=name).exists():
        problems.append(f"a name not yet used ({name!r} is taken)")
    if problems:
        messages.error(request, "The external judge needs " + ", ".join(problems) + ".")
    else:
        ModelVersion.objects.create(
            project=project,
            name=name,
            origin=ModelVersion.Origin.EXTERNAL,
            created_by=request.user,
            notes="external pairwise judge",
            metadata={"judge": True, "base_url": url, "model": model or name},
        )
        messages.success(
            request, f"{name} registered as a judge; measure it on held-out pairs before trusting it."
        )
    return redirect("training-jobs:judges", slug=slug)


@login_required
@require_POST
def judge_suggest(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    judge = get_object_or_404(judges_of(project), pk=pk)
    _queue(
        request,
        suggest_with_judge,
        project.pk,
        judge.pk,
        done=f"{judge.name} is judging the open comparisons and responses; disputed ones move up the queue.",
    )
    return redirect("training-jobs:judges", slug=slug)
