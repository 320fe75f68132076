"""Project-wide REST settings objects (kept apart from viewsets to avoid import cycles)."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.views import exception_handler as drf_exception_handler


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 500


def exception_handler(exc, context):
    """Model-level ValidationErrors become 400s with field messages, never 500s."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, DataError):
        # A value the database cannot hold (found by schemathesis: a filter datetime with a +17:34
        # UTC offset, which PostgreSQL refuses): the request is at fault, not the server.
        exc = exceptions.ValidationError({"non_field_errors": [f"Value out of range: {str(exc).splitlines()[0]}"]})
    return drf_exception_handler(exc, context)
