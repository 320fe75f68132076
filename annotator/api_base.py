"""Shared REST plumbing: per-project permission checks."""

from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from jobs import lifecycle

from .models import Project, Role
from .policy import can_run_pipeline, has_role, projects_with_role


class ProjectScopedViewSet(viewsets.ModelViewSet):
    """A viewset over objects that belong to a project.

    - list/retrieve: objects of projects where the user holds at least `read_role`
      (others do not exist for them: 404);
    - create/update/delete: the user needs `write_role` in the object's project (403);
    - update: an object stays in its project (400). Moving it would take its references (labels,
      parents, a member's role) along into a project where the mover's rights were never checked.
    References to other objects must lie in the same project: `SameProjectMixin` checks that
    in the serializer.
    """

    project_path = "project"
    read_role = Role.ANNOTATOR
    write_role = Role.ADMIN
    base_queryset = None

    def get_base_queryset(self):
        return self.base_queryset.all()

    def get_queryset(self):
        qs = self.get_base_queryset()
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return qs.none()
        user = self.request.user
        if not user.is_superuser:
            qs = qs.filter(
                **{f"{self.project_path}__in": projects_with_role(user, self.read_role).values("pk")}
            )
        return qs

    def project_of(self, obj) -> Project:
        for part in self.project_path.split("__"):
            obj = getattr(obj, part)
        return obj

    def check_write(self, project):
        if not has_role(self.request.user, project, self.write_role):
            raise exceptions.PermissionDenied(
                f"This needs the {self.write_role} role in project {project.slug!r}."
            )

    def project_from_data(self, serializer) -> Project:
        parts = self.project_path.split("__")
        obj = serializer.validated_data.get(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part)
        return obj

    def perform_create(self, serializer):
        self.check_write(self.project_from_data(serializer))
        serializer.save()

    def perform_update(self, serializer):
        project = self.project_of(serializer.instance)
        self.check_write(project)
        self.check_not_moved(serializer, project)
        serializer.save()

    def check_not_moved(self, serializer, project):
        field = self.project_path.split("__")[0]
        if field in serializer.validated_data and self.project_from_data(serializer).pk != project.pk:
            raise exceptions.ValidationError({field: ["cannot be moved to another project"]})

    def perform_destroy(self, instance):
        self.check_write(self.project_of(instance))
        instance.delete()


class JobActionsMixin:
    """POST …/cancel/ and …/resume/ on a worker job (training job, online run): the admin role in
    the job's project, then the one lifecycle (jobs.lifecycle). A kind whose cancel does more (an
    online run also cancels its round's training job) names its own `cancel_job`."""

    cancel_job = staticmethod(lifecycle.cancel)

    def job_for_admin(self):
        job = self.get_object()
        if not can_run_pipeline(self.request.user, job.project):
            raise exceptions.PermissionDenied("This needs the admin role in the project.")
        return job

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.job_for_admin()
        self.cancel_job(job)
        return Response(self.get_serializer(job).data)

    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        job = self.job_for_admin()
        lifecycle.resume(job)
        return Response(self.get_serializer(job).data)
