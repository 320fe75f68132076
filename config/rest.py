"""Project-wide REST settings objects (kept apart from viewsets to avoid import cycles)."""

import orjson
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, connection, transaction
from rest_framework import exceptions, parsers, status
from rest_framework.pagination import CursorPagination

# the largest value of a 64-bit integer column: a bigger key or cursor names nothing
MAX_INTEGER = 2**63 - 1


class IdCursorPagination(CursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        self.model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        """A cursor whose position is no value of the ordering field (a hand-made "p=abc") is a 404,
        like any other invalid cursor, instead of reaching the database as a filter."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None and not self.valid_position(cursor.position):
            raise exceptions.NotFound(self.invalid_cursor_message)
        return cursor

    def valid_position(self, position: str) -> bool:
        try:
            field = self.model._meta.get_field(self.ordering[0].lstrip("-"))
        except FieldDoesNotExist:
            return True
        try:
            value = field.get_prep_value(field.to_python(position))
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            return False
        return not isinstance(value, int) or -MAX_INTEGER <= value <= MAX_INTEGER


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class BoundedJSONParser(parsers.JSONParser):
    """The API's JSON parser: strict (no NaN or Infinity, no number beyond a double such as 1e999, no
    lone surrogate), at most API_JSON_MAX_DEPTH levels deep and DATA_UPLOAD_MAX_MEMORY_SIZE bytes.

    A hostile body is a 400 (413 when too large) here, not a RecursionError or an OverflowError
    from deep inside a serializer, a validator or the database driver. DRF reads the body stream
    itself, so Django's own size limit never sees it."""

    def max_bytes(self) -> int:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def too_large(self, size: int | None, limit: int) -> str:
        return f"The JSON body is over {limit:,} bytes."

    def decode(self, raw: bytes):
        return load_json(raw)

    def parse(self, stream, media_type=None, parser_context=None):
        limit = self.max_bytes()
        request = (parser_context or {}).get("request")
        declared = (request.META.get("CONTENT_LENGTH") or "") if request is not None else ""
        if declared.isdigit() and int(declared) > limit:  # refused before reading a byte of it
            raise RequestTooLarge(self.too_large(int(declared), limit))
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestTooLarge(self.too_large(None, limit))
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        if encoding.lower().replace("-", "").replace("_", "") != "utf8":
            try:
                raw = raw.decode(encoding).encode("utf-8", "surrogatepass")
            except (LookupError, UnicodeError) as exc:
                raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        return self.decode(raw)


def load_json(raw: bytes | str):
    """JSON text from a client -> its value, or ParseError (see BoundedJSONParser)."""
    max_depth = settings.API_JSON_MAX_DEPTH
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            raise exceptions.ParseError(f"JSON nested too deeply (over {max_depth} levels).") from None
        raise exceptions.ParseError(f"JSON parse error - {exc}") from None
    brackets = (
        raw.count(b"[") + raw.count(b"{") if isinstance(raw, bytes) else raw.count("[") + raw.count("{")
    )
    if brackets > max_depth and nested_deeper_than(data, max_depth):
        raise exceptions.ParseError(f"JSON nested too deeply (over {max_depth} levels).")
    return data


def nested_deeper_than(value, max_depth: int) -> bool:
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def exception_handler(exc, context):
    """Model-level ValidationErrors become 400s with field messages, never 500s."""
    # imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES, which names this module
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        # a rule that refuses because the data moved on (a review of work changed since it was seen)
        # names its own status on the exception class: 409, not 400
        status = getattr(exc, "status_code", exceptions.ValidationError.status_code)
        exc = exceptions.ValidationError(detail)
        exc.status_code = status
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, (DataError, OverflowError)):
        # A value the database cannot hold (found by schemathesis: a filter datetime with a +17:34
        # UTC offset, which PostgreSQL refuses; SQLite raises OverflowError on a 20-digit filter id):
        # the request is at fault, not the server. On PostgreSQL the failed statement aborts the open
        # transaction: inside an atomic block (a view's, a test's savepoint) it must roll back.
        if isinstance(exc, DataError) and connection.in_atomic_block:
            transaction.set_rollback(True)
        exc = exceptions.ValidationError(
            {"non_field_errors": [f"Value out of range: {str(exc).splitlines()[0]}"]}
        )
    return drf_exception_handler(exc, context)
