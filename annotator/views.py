"""Server-rendered pages. Business rules live in importers/policy/review; views stay thin."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import requires_csrf_token
from django.views.decorators.http import require_POST

from config import errors
from jobs import lifecycle

from . import csv_export, workspace
from .forms import ImportForm
from .models import Conversation, ImportJob, Label, ModelResponse, Role, Split, Status, Task
from .policy import can_manage_project, has_role, project_for, role_in, visible_projects

HOME_COUNT_CAP = 10_000  # the project home's data counts read "10,000+" beyond it


@login_required
def project_list(request):
    projects = visible_projects(request.user).annotate(n_conversations=Count("conversations", distinct=True))
    rows = [(p, role_in(request.user, p)) for p in projects]
    return render(request, "annotator/project_list.html", {"rows": rows})


@login_required
def project_home(request, slug):
    project = project_for(request.user, slug)
    role = role_in(request.user, project)
    progress = workspace.progress(project, request.user)
    # counted up to a cap: an exact COUNT over millions of responses takes seconds on every visit
    counts = {
        "conversations": Conversation.objects.filter(project=project)
        .values("pk")[: HOME_COUNT_CAP + 1]
        .count(),
        "responses": ModelResponse.objects.filter(conversation__project=project)
        .values("pk")[: HOME_COUNT_CAP + 1]
        .count(),
        "cap": HOME_COUNT_CAP,
    }
    imports = (
        ImportJob.objects.filter(project=project)[:5] if has_role(request.user, project, Role.LEAD) else []
    )
    sent_back = (
        Label.objects.filter(
            annotator=request.user, status=Status.REJECTED, response__conversation__project=project
        )
        .select_related("response__conversation")
        .order_by("-updated_at")[:20]
    )
    sent_back_tasks = dict(
        Task.objects.filter(
            kind=Task.Kind.LABEL, response__in=[lb.response_id for lb in sent_back]
        ).values_list("response_id", "pk")
    )
    queues = {kind: p["left"] for kind, p in progress.items()}
    return render(
        request,
        "annotator/project_home.html",
        {
            "project": project,
            "role": role,
            "progress": progress,
            "counts": counts,
            "imports": imports,
            "queues": queues,
            "sent_back": [(lb, sent_back_tasks.get(lb.response_id)) for lb in sent_back],
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "is_lead": has_role(request.user, project, Role.LEAD),
        },
    )


@login_required
def import_create(request, slug):
    project = project_for(request.user, slug, Role.ADMIN, action="import conversations")
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        with transaction.atomic():
            job = ImportJob.objects.create(
                project=project,
                created_by=request.user,
                file=upload,
                original_name=upload.name[:255],
                size_bytes=upload.size,
                default_split=form.cleaned_data["default_split"],
                dialect=form.cleaned_data["dialect"],
                answers_file=form.cleaned_data["answers_file"] or "",
            )
            lifecycle.enqueue(job)
        return redirect("annotator:import-detail", slug=project.slug, pk=job.pk)
    return render(request, "annotator/import_form.html", {"project": project, "form": form})


def _project_import(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD, action="see imports")
    return project, get_object_or_404(ImportJob, project=project, pk=pk)


@login_required
def import_detail(request, slug, pk):
    project, job = _project_import(request, slug, pk)
    issues = job.issues.order_by("line", "id")[:200]
    template = (
        "annotator/_import_progress.html"
        if request.headers.get("HX-Request")
        else "annotator/import_detail.html"
    )
    context = {
        "project": project,
        "job": job,
        "issues": issues,
        "can_cancel": can_manage_project(request.user, project),
    }
    return render(request, template, context)


@login_required
def import_report(request, slug, pk):
    _, job = _project_import(request, slug, pk)
    return csv_export.import_report(job)


@login_required
@require_POST
def import_cancel(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN, action="cancel an import")
    lifecycle.cancel(get_object_or_404(ImportJob, project=project, pk=pk))
    return redirect("annotator:import-detail", slug=slug, pk=pk)


@login_required
def conversation_list(request, slug):
    project = project_for(request.user, slug)
    qs = Conversation.objects.filter(project=project).only(
        "id", "external_id", "split", "priority", "created_at"
    )
    split = request.GET.get("split")
    if split in Split.values:
        qs = qs.filter(split=split)
    page = Paginator(qs.order_by("-priority", "id"), 50).get_page(request.GET.get("page"))
    return render(
        request, "annotator/conversation_list.html", {"project": project, "page": page, "split": split}
    )


@login_required
def conversation_detail(request, slug, pk):
    project = project_for(request.user, slug)
    conversation = get_object_or_404(Conversation, project=project, pk=pk)
    responses = conversation.responses.select_related("model_version").order_by("context_length", "id")
    return render(
        request,
        "annotator/conversation_detail.html",
        {
            "project": project,
            "conversation": conversation,
            "responses": responses,
        },
    )


# --- error pages (studio/urls.py names these as handler403 / handler404) ---------------------------


def _error_page(request, status: int, template: str, message: str):
    """A styled error page that says what happened and links back: to the project the URL names when
    the viewer can see it (with its navigation), else to the project list."""
    user = getattr(request, "user", None)
    match = getattr(request, "resolver_match", None)
    slug = match.kwargs.get("slug") if match else None
    project = None
    if slug and user is not None and user.is_authenticated:
        project = visible_projects(user).filter(slug=slug).first()
    context = {
        "project": project,
        "role": role_in(user, project) if project else None,
        "message": message,
    }
    return render(request, template, context, status=status)


@requires_csrf_token
def permission_denied(request, exception=None):
    message = str(exception or "")
    if errors.is_api(request):
        return errors.api_error(403, message)
    return _error_page(request, 403, "403.html", message)


@requires_csrf_token
def page_not_found(request, exception=None):
    if errors.is_api(request):
        return errors.api_error(404)
    # Http404's own text names models and query internals: the page says it in plain words instead.
    return _error_page(request, 404, "404.html", "")
