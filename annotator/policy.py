"""Who may do what, per project. Pages and API both call these functions."""

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from .models import ROLE_RANK, Membership, Project, Role


def role_in(user, project: Project | int) -> str | None:
    """The user's role in a project (superusers act as admins everywhere), cached per user object."""
    if not user or not user.is_authenticated:
        return None
    if user.is_superuser:
        return Role.ADMIN
    project_id = project if isinstance(project, int) else project.pk
    cache = user.__dict__.setdefault("_badcase_roles", None)
    if cache is None:
        cache = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        user.__dict__["_badcase_roles"] = cache
    return cache.get(project_id)


def has_role(user, project: Project | int, minimum: str) -> bool:
    role = role_in(user, project)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def visible_projects(user) -> QuerySet:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def projects_with_role(user, minimum: str) -> QuerySet:
    if user.is_superuser:
        return Project.objects.all()
    allowed = [r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[minimum]]
    return Project.objects.filter(memberships__user=user, memberships__role__in=allowed)


# who holds at least a role, in words, for "Only ... of <project> can ..."
ROLE_HOLDERS = {Role.ANNOTATOR: "members", Role.LEAD: "leads and admins", Role.ADMIN: "admins"}


def project_for(user, slug: str, minimum: str = Role.ANNOTATOR, action: str = "") -> Project:
    """The project by slug if the user holds at least `minimum` in it; 404 otherwise (no existence leak).

    A member below `minimum` gets PermissionDenied saying who may, e.g. "Only admins of Northwind can
    train a judge." (`action`, default "do this"); the 403 page shows it."""
    project = get_object_or_404(visible_projects(user), slug=slug)
    if not has_role(user, project, minimum):
        raise PermissionDenied(f"Only {ROLE_HOLDERS[minimum]} of {project.name} can {action or 'do this'}.")
    return project


def can_create_projects(user) -> bool:
    return user.is_authenticated and (user.is_superuser or user.is_staff)


# What each action needs. API viewsets, serializers and pages ask these by name instead of
# re-typing a role. (ProjectScopedViewSet declares its read and write roles per object type.)


def can_manage_project(user, project: Project | int) -> bool:
    """Change or delete the project, import into it, cancel its imports."""
    return has_role(user, project, Role.ADMIN)


def can_manage_members(user, project: Project | int) -> bool:
    """Add members, change their role, remove them. Admins only: whoever adds a member picks the role."""
    return has_role(user, project, Role.ADMIN)


def can_edit_taxonomy(user, project: Project | int) -> bool:
    return has_role(user, project, Role.LEAD)


def can_review(user, project: Project | int) -> bool:
    """Approve or reject submitted labels and comparisons (one by one or a filtered list at once), decide
    gold on disagreements."""
    return has_role(user, project, Role.LEAD)


def can_see_pipeline(user, project: Project | int) -> bool:
    """Read datasets, training jobs, judges, online runs, eval suites and runs, check the promotion gate."""
    return has_role(user, project, Role.LEAD)


def can_run_pipeline(user, project: Project | int) -> bool:
    """Build datasets, launch / cancel / resume training and online DPO, build suites, run evaluations,
    send badcases back to the queue, change evaluation settings, promote or reject a model."""
    return has_role(user, project, Role.ADMIN)
