"""Membership changes: one place for the rules every door (API, admin) goes through.

A membership's user and project are fixed once it exists (remove it and add another instead), and a
project always keeps at least one admin: the last admin can be neither demoted nor removed. Every
change is kept in the membership's history (django-simple-history), with who made it.
"""

from django.core.exceptions import ValidationError

from .models import Membership, Role

LAST_ADMIN = "a project keeps at least one admin: make someone else admin first"


def _is_last_admin(membership: Membership) -> bool:
    if membership.role != Role.ADMIN:
        return False
    admins = Membership.objects.filter(project_id=membership.project_id, role=Role.ADMIN)
    return not admins.exclude(pk=membership.pk).exists()


def check_change(membership: Membership, changes: dict) -> None:
    """ValidationError (by field) when `changes` to an existing membership break a rule."""
    errors = {}
    if "user" in changes and changes["user"].pk != membership.user_id:
        errors["user"] = "cannot change: remove this membership and add the new member instead"
    if changes.get("role", membership.role) != Role.ADMIN and _is_last_admin(membership):
        errors["role"] = LAST_ADMIN
    if errors:
        raise ValidationError(errors)


def check_removal(membership: Membership) -> None:
    if _is_last_admin(membership):
        raise ValidationError({"role": LAST_ADMIN})
