"""REST API for projects, conversations, responses, taxonomy, labels and the rest.

Visibility and write rules are per project (see ProjectScopedViewSet). Annotators see
only their own labels, corrections and preferences; leads and admins see all of their projects'.
"""

from django.db import transaction
from django.db.models import Q
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, parsers, viewsets
from rest_framework import serializers as rf
from rest_framework.decorators import action
from rest_framework.response import Response

from config.rest import BoundedJSONParser
from jobs import lifecycle

from . import members, review
from . import serializers as s
from .api_base import ProjectScopedViewSet
from .csv_export import import_report
from .models import (
    Conversation,
    Correction,
    ImportJob,
    Label,
    Membership,
    ModelResponse,
    ModelVersion,
    Preference,
    Project,
    Review,
    Role,
    TaxonomyCategory,
)
from .policy import (
    can_create_projects,
    can_edit_taxonomy,
    can_manage_members,
    can_manage_project,
    can_review,
    projects_with_role,
    visible_projects,
)


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = s.ProjectSerializer
    lookup_field = "slug"
    filterset_fields = ["slug"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Project.objects.none()
        return visible_projects(self.request.user).order_by("id")

    def perform_create(self, serializer):
        if not can_create_projects(self.request.user):
            raise exceptions.PermissionDenied("Only staff users can create projects.")
        serializer.save()

    def perform_update(self, serializer):
        if not can_manage_project(self.request.user, serializer.instance):
            raise exceptions.PermissionDenied("Changing a project needs the admin role in it.")
        serializer.save()

    def perform_destroy(self, instance):
        if not can_manage_project(self.request.user, instance):
            raise exceptions.PermissionDenied("Deleting a project needs the admin role in it.")
        instance.delete()


class MembershipViewSet(ProjectScopedViewSet):
    serializer_class = s.MembershipSerializer
    base_queryset = Membership.objects.select_related("user", "project")
    read_role = Role.LEAD
    filterset_fields = {"project__slug": ["exact"], "role": ["exact"], "user__username": ["exact"]}

    def check_write(self, project):
        if not can_manage_members(self.request.user, project):
            raise exceptions.PermissionDenied(
                f"Managing members needs the admin role in project {project.slug!r}."
            )

    def perform_update(self, serializer):
        self.check_write(self.project_of(serializer.instance))
        members.check_change(serializer.instance, serializer.validated_data)  # 400 by field (config.rest)
        super().perform_update(serializer)

    def perform_destroy(self, instance):
        self.check_write(self.project_of(instance))
        members.check_removal(instance)
        super().perform_destroy(instance)


class ModelVersionViewSet(ProjectScopedViewSet):
    serializer_class = s.ModelVersionSerializer
    base_queryset = ModelVersion.objects.select_related("project")
    filterset_fields = {
        "project__slug": ["exact"],
        "origin": ["exact"],
        "stage": ["exact"],
        "name": ["exact"],
    }


class ConversationViewSet(ProjectScopedViewSet):
    serializer_class = s.ConversationSerializer
    base_queryset = Conversation.objects.select_related("project")
    filterset_fields = {
        "project__slug": ["exact"],
        "split": ["exact"],
        "external_id": ["exact"],
        "priority": ["exact", "gte", "lte"],
        "created_at": ["gte", "lte"],
    }


class ModelResponseViewSet(ProjectScopedViewSet):
    serializer_class = s.ModelResponseSerializer
    base_queryset = ModelResponse.objects.all()
    project_path = "conversation__project"
    filterset_fields = {
        "conversation": ["exact"],
        "model_version": ["exact"],
        "conversation__project__slug": ["exact"],
        "created_at": ["gte", "lte"],
    }


class TaxonomyCategoryViewSet(ProjectScopedViewSet):
    serializer_class = s.TaxonomyCategorySerializer
    base_queryset = TaxonomyCategory.objects.select_related("project")
    filterset_fields = {"project__slug": ["exact"], "parent": ["exact", "isnull"], "active": ["exact"]}

    def check_write(self, project):
        if not can_edit_taxonomy(self.request.user, project):
            raise exceptions.PermissionDenied(
                f"Editing the taxonomy needs the lead role in project {project.slug!r}."
            )


class OwnWorkViewSet(viewsets.ReadOnlyModelViewSet):
    """Labels, corrections, preferences, read-only: they are written only through the annotator
    queue (pages or annotator/queue_api.py), which enforces claims, overlap, locks and the label
    rules. Annotators see their own; leads and admins see all of their projects'."""

    owner_path = "annotator"
    project_path = ""
    base_queryset = None

    def get_queryset(self):
        user = self.request.user
        qs = self.base_queryset.all()
        if getattr(self, "swagger_fake_view", False) or user.is_superuser:
            return qs
        lead_projects = projects_with_role(user, Role.LEAD).values("pk")
        return qs.filter(Q(**{self.owner_path: user}) | Q(**{f"{self.project_path}__in": lead_projects}))


class LabelViewSet(OwnWorkViewSet):
    """Labels, read-only: they are written through the queue endpoints (claims, overlap, rules)."""

    serializer_class = s.LabelSerializer
    base_queryset = Label.objects.select_related("annotator").prefetch_related("categories")
    project_path = "response__conversation__project"
    filterset_fields = {
        "status": ["exact"],
        "verdict": ["exact"],
        "annotator__username": ["exact"],
        "response": ["exact"],
        "response__conversation__project__slug": ["exact"],
        "categories": ["exact"],
        "submitted_at": ["gte", "lte"],
    }


class CorrectionViewSet(OwnWorkViewSet):
    """Corrections, read-only: a correction is part of a label submitted through the queue."""

    serializer_class = s.CorrectionSerializer
    base_queryset = Correction.objects.all()
    project_path = "label__response__conversation__project"
    owner_path = "label__annotator"
    filterset_fields = {"label": ["exact"], "label__response__conversation__project__slug": ["exact"]}


class PreferenceViewSet(OwnWorkViewSet):
    """Preferences, read-only: they are written through the queue endpoints (compare tasks)."""

    serializer_class = s.PreferenceSerializer
    base_queryset = Preference.objects.select_related("annotator")
    project_path = "response_a__conversation__project"
    filterset_fields = {
        "status": ["exact"],
        "choice": ["exact"],
        "annotator__username": ["exact"],
        "response_a__conversation__project__slug": ["exact"],
    }


class ReviewListSerializer(rf.Serializer):
    """Which review list (the filters of the review page)."""

    project = rf.SlugField(help_text="The project's slug.")
    what = rf.ChoiceField(choices=review.WHATS, default="labels", required=False)
    annotator = rf.CharField(required=False, help_text="Only this annotator's work (username).")
    category = rf.IntegerField(required=False, help_text="Labels in this category or one below it.")
    verdict = rf.CharField(
        required=False, help_text="Labels: reasonable or unreasonable; preferences: a, b, tie or both_bad."
    )
    disagreement = rf.BooleanField(
        required=False, help_text="Only items whose submitted or approved judgements disagree."
    )


class BulkApproveSerializer(ReviewListSerializer):
    ids = rf.ListField(child=rf.IntegerField(), help_text="The ids a GET of the same list returned.")
    seen = rf.CharField(
        required=False,
        help_text="The `seen` that GET returned: if an annotator changed a listed item since, nothing is "
        "approved (409).",
    )


class ReviewViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Leads review; annotators can read the reviews of their own work (to see why it came back)."""

    serializer_class = s.ReviewSerializer
    filterset_fields = {"decision": ["exact"], "label": ["exact"], "preference": ["exact"]}

    def get_queryset(self):
        user = self.request.user
        qs = Review.objects.select_related("reviewer")
        if getattr(self, "swagger_fake_view", False) or user.is_superuser:
            return qs
        lead_projects = projects_with_role(user, Role.LEAD).values("pk")
        return qs.filter(
            Q(label__annotator=user)
            | Q(preference__annotator=user)
            | Q(label__response__conversation__project__in=lead_projects)
            | Q(preference__response_a__conversation__project__in=lead_projects)
        )

    @extend_schema(
        parameters=[ReviewListSerializer],
        request=BulkApproveSerializer,
        responses={
            (200, "application/json"): inline_serializer(
                "BulkApproveResult",
                {
                    "count": rf.IntegerField(
                        help_text="GET: how many items the list holds (up to the limit)."
                    ),
                    "more": rf.BooleanField(help_text="GET: the list holds more than `limit` items."),
                    "limit": rf.IntegerField(),
                    "ids": rf.ListField(child=rf.IntegerField(), help_text="GET: the items, oldest first."),
                    "seen": rf.CharField(help_text="GET: the version of these items, to POST back."),
                    "approved": rf.IntegerField(help_text="POST: how many were approved."),
                },
            ),
            409: inline_serializer("BulkApproveChanged", {"ids": rf.CharField(), "seen": rf.CharField()}),
        },
    )
    @action(detail=False, methods=["get", "post"], url_path="bulk-approve")
    def bulk_approve(self, request):
        """Approve a filtered review list at once (leads of the project only). GET lists the ids that wait
        for review under the filters; POST them back as `ids` (and `seen`) with the same filters to approve
        exactly those. If the list changed in between (an item reviewed elsewhere, a new submission, an
        item its annotator changed), nothing is approved: 409, GET it again. The same rule as the review
        page (annotator.review.approve_many)."""
        params = request.query_params if request.method == "GET" else request.data
        if not hasattr(params, "get"):
            raise exceptions.ValidationError({"non_field_errors": ["Send an object of filters and ids."]})
        slug = params.get("project")
        project = visible_projects(request.user).filter(slug=str(slug or "")[:100]).first()
        if project is None:
            raise exceptions.ValidationError(
                {"project": ["Name a project you are a member of, by its slug."]}
            )
        if not can_review(request.user, project):
            raise exceptions.PermissionDenied("Approving needs the lead role in this project.")
        f = review.QueueFilters.parse(project, params)
        if request.method == "GET":
            rows = list(
                review.review_queue(project, f).values_list("pk", "submitted_at")[: review.BULK_LIMIT + 1]
            )
            limit = review.BULK_LIMIT
            return Response(
                {
                    "count": min(len(rows), limit),
                    "more": len(rows) > limit,
                    "limit": limit,
                    "ids": [pk for pk, _ in rows[:limit]],
                    "seen": review.list_version(rows[:limit]),
                }
            )
        seen = params.get("seen")
        try:
            approved = review.approve_many(
                request.user, project, f, params.get("ids"), seen=None if seen is None else str(seen)
            )
        except review.ListChanged as exc:
            return Response(exc.message_dict, status=409)
        return Response({"approved": approved})


class ImportJobViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Upload a JSONL file; a worker imports it. Poll the job for progress; fetch its issues."""

    serializer_class = s.ImportJobSerializer
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, BoundedJSONParser]
    filterset_fields = {"project__slug": ["exact"], "status": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ImportJob.objects.none()
        return ImportJob.objects.filter(
            project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
        )

    def perform_create(self, serializer):
        project = serializer.validated_data["project"]
        if not can_manage_project(self.request.user, project):
            raise exceptions.PermissionDenied("Importing needs the admin role in this project.")
        upload = serializer.validated_data["file"]
        with transaction.atomic():
            job = serializer.save(
                created_by=self.request.user, original_name=upload.name[:255], size_bytes=upload.size
            )
            lifecycle.enqueue(job)

    @extend_schema(responses=s.ImportIssueSerializer(many=True))
    @action(detail=True, methods=["get"])
    def issues(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(job.issues.all().order_by("-id"))
        return self.get_paginated_response(s.ImportIssueSerializer(page, many=True).data)

    @extend_schema(responses={(200, "text/csv"): bytes})
    @action(detail=True, methods=["get"])
    def report(self, request, pk=None):
        return import_report(self.get_object())

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        if not can_manage_project(request.user, job.project):
            raise exceptions.PermissionDenied("Cancelling an import needs the admin role.")
        lifecycle.cancel(job)
        return Response({"cancel_requested": True, "status": job.status})
