"""Shared REST plumbing: per-project permission checks."""

from rest_framework import exceptions, viewsets

from .models import ROLE_RANK, Project, Role
from .permissions import has_role, projects_with_role


class ProjectScopedViewSet(viewsets.ModelViewSet):
    """A viewset over objects that belong to a project.

    - list/retrieve: objects of projects where the user holds at least `read_role`
      (others do not exist for them: 404);
    - create/update/delete: the user needs `write_role` in the object's project (403).
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
            qs = qs.filter(**{f"{self.project_path}__in": projects_with_role(user, self.read_role).values("pk")})
        return qs

    def project_of(self, obj) -> Project:
        for part in self.project_path.split("__"):
            obj = getattr(obj, part)
        return obj

    def check_write(self, project, role=None):
        role = role or self.write_role
        if not has_role(self.request.user, project, role):
            raise exceptions.PermissionDenied(f"This needs the {role} role in project {project.slug!r}.")

    def project_from_data(self, serializer) -> Project:
        data = serializer.validated_data
        obj = data
        parts = self.project_path.split("__")
        obj = data.get(parts[0])
        for part in parts[1:]:
            obj = getattr(obj, part)
        return obj

    def perform_create(self, serializer):
        self.check_write(self.project_from_data(serializer))
        serializer.save()

    def perform_update(self, serializer):
        self.check_write(self.project_of(serializer.instance))
        serializer.save()

    def perform_destroy(self, instance):
        self.check_write(self.project_of(instance))
        instance.delete()


def at_least(role: str):
    return [r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[role]]
