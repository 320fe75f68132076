"""Server-rendered pages. Business rules live in importers/policy/review; views stay thin."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from jobs import lifecycle

from . import assignment, csv_export
from .forms import ImportForm
from .models import Conversation, ImportJob, Label, ModelResponse, Role, Split, Status, Task
from .policy import has_role, project_for, role_in, visible_projects


@login_required
def project_list(request):
    projects = visible_projects(request.user).annotate(n_conversations=Count("conversations", distinct=True))
    rows = [(p, role_in(request.user, p)) for p in projects]
    return render(request, "annotator/project_list.html", {"rows": rows})


@login_required
def project_home(request, slug):
    project = project_for(request.user, slug)
    role = role_in(request.user, project)
    my_labels = Label.objects.filter(annotator=request.user, response__conversation__project=project)
    mine = my_labels.aggregate(
        total=Count("id"),
        submitted=Count("id", filter=Q(status=Status.SUBMITTED)),
        approved=Count("id", filter=Q(status=Status.APPROVED)),
        rejected=Count("id", filter=Q(status=Status.REJECTED)),
        drafts=Count("id", filter=Q(status=Status.DRAFT)),
    )
    counts = {
        "conversations": Conversation.objects.filter(project=project).count(),
        "responses": ModelResponse.objects.filter(conversation__project=project).count(),
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
    queues = {
        "label": assignment.queue_size_by_kind(project, request.user, Task.Kind.LABEL),
        "compare": assignment.queue_size_by_kind(project, request.user, Task.Kind.COMPARE),
    }
    return render(
        request,
        "annotator/project_home.html",
        {
            "project": project,
            "role": role,
            "mine": mine,
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
    project = project_for(request.user, slug, Role.ADMIN)
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
    project = project_for(request.user, slug, Role.LEAD)
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
    return render(request, template, {"project": project, "job": job, "issues": issues})


@login_required
def import_report(request, slug, pk):
    _, job = _project_import(request, slug, pk)
    return csv_export.import_report(job)


@login_required
@require_POST
def import_cancel(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
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
