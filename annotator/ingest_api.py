"""POST /api/projects/<slug>/ingest/: a running agent sends conversations as they happen.

The body is `{"records": [...], "split": "train"}` or a bare JSON list of records; a record is what one
line of a JSONL import holds (a conversation, or a logged chat-completion request and response). The
service (ingest.py) checks every record with the file import's rules and writes the good ones in one
transaction; the answer lists each record's outcome. Who may send: whoever may import files into the
project (policy.can_manage_project); for non-members the project does not exist (404). Limits (see
config/settings.py): INGEST_MAX_RECORDS records and INGEST_MAX_BODY_BYTES bytes per request (413),
IMPORT_MAX_LINE_BYTES per record, INGEST_RATE requests per user (429 with Retry-After).
"""

import orjson
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from config.rest import BoundedJSONParser, RequestTooLarge

from .ingest import ingest
from .models import Role, Split
from .policy import can_manage_project, project_for

BODY_FIELDS = ("records", "split")


class IngestJSONParser(BoundedJSONParser):
    """JSON up to INGEST_MAX_BODY_BYTES (413 beyond; checked on Content-Length before reading), strict
    (orjson: no NaN, no integer beyond 64 bits). Nesting is not bounded here beyond orjson's own limit:
    each record's depth is checked on its own, with the file import's rule and message."""

    def max_bytes(self) -> int:
        return settings.INGEST_MAX_BODY_BYTES

    def too_large(self, size: int | None, limit: int) -> str:
        return too_large_body(size, limit)

    def decode(self, raw: bytes):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if "recursion" in exc.msg.lower() or "depth" in exc.msg.lower():
                raise exceptions.ParseError(
                    "JSON nested too deeply for the parser (over 1,024 levels)."
                ) from None
            raise exceptions.ParseError(
                f"JSON parse error - {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None


def content_length(request) -> int:
    declared = request.META.get("CONTENT_LENGTH") or ""
    return int(declared) if declared.isdigit() else 0


def too_large_body(size: int | None, limit: int) -> str:
    size_text = f"is {size:,} bytes, " if size is not None else "is "
    return (
        f"The request body {size_text}over the limit of {limit:,} bytes (INGEST_MAX_BODY_BYTES): "
        "send the records in smaller batches."
    )


class IngestRateThrottle(ScopedRateThrottle):
    """Requests per user to views whose throttle_scope is "ingest": settings.INGEST_RATE ("120/min"; empty:
    no limit), read on every request so a changed setting applies at once."""

    def get_rate(self):
        rate = settings.INGEST_RATE or None
        if rate is not None:
            try:
                self.parse_rate(rate)
            except (ValueError, KeyError, IndexError):
                raise ImproperlyConfigured(
                    f"INGEST_RATE={rate!r}: write requests/period, e.g. 120/min, 5/s, 10000/day"
                ) from None
        return rate


# --- what goes in and out (for the OpenAPI schema) ----------------------------------------------


class IngestBatchSerializer(serializers.Serializer):
    records = serializers.ListField(
        child=serializers.DictField(),
        min_length=1,
        help_text="At most INGEST_MAX_RECORDS (default 1,000). Each one what a JSONL import line holds: "
        '{"external_id", "messages", "tools", "metadata", "split", "priority", "model", "responses"}, '
        'or a logged chat completion {"request": {"model", "messages", "tools"}, "response": '
        '{"choices": [{"message"}]}}. A bare JSON list of records is accepted as the whole body too.',
    )
    split = serializers.ChoiceField(
        choices=Split.choices, required=False, help_text="For records without their own; default train."
    )


class IngestRecordErrorSerializer(serializers.Serializer):
    field = serializers.CharField(allow_blank=True, help_text='Where in the record ("" = the record).')
    message = serializers.CharField()


class IngestRecordResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The record's position in the batch, from 0.")
    status = serializers.ChoiceField(
        choices=[("created", "created"), ("duplicate", "duplicate"), ("rejected", "rejected")],
        help_text="created: a new conversation; duplicate: already stored with the same content (its "
        "new responses, if any, were still added); rejected: see errors, nothing of it was stored.",
    )
    external_id = serializers.CharField(
        allow_null=True, help_text="Its external id (a content hash when it had none); null if unreadable."
    )
    conversation_id = serializers.IntegerField(allow_null=True)
    responses_created = serializers.IntegerField()
    errors = IngestRecordErrorSerializer(many=True)


class IngestTasksSerializer(serializers.Serializer):
    label = serializers.IntegerField()
    compare = serializers.IntegerField()


class IngestResultSerializer(serializers.Serializer):
    results = IngestRecordResultSerializer(many=True)
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    responses_created = serializers.IntegerField()
    tasks_created = IngestTasksSerializer(help_text="Annotation tasks queued for the new responses.")
    import_id = serializers.IntegerField(
        help_text="The project's import history entry of the day (GET /api/imports/<id>/ and its issues)."
    )


class IngestDetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


EXAMPLE_RECORD = {
    "external_id": "session-8812",
    "messages": [
        {"role": "user", "content": "Is A-113 in stock?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "check_inventory", "arguments": '{"sku": "A-113"}'},
                }
            ],
        },
    ],
    "model": "agent-v3",
}


# --- the endpoint -------------------------------------------------------------------------------


class IngestView(APIView):
    parser_classes = [IngestJSONParser]
    throttle_classes = [IngestRateThrottle]
    throttle_scope = "ingest"

    @extend_schema(
        tags=["ingest"],
        summary="Send conversations from a running agent",
        description="Checks every record with the JSONL import's rules and messages and stores the good "
        "ones in one transaction, with annotation tasks for their new responses. Idempotent: a record "
        "whose external id (or, without one, content) is already stored is a duplicate and creates "
        "nothing; the same external id with other messages or tools is rejected. 200 when at least one "
        "record was created or was a duplicate; 400 when every record was rejected (the same body, each "
        "record's errors) or the body is not a batch ({field: [messages]} or {detail}). Needs the role "
        "that imports files (admin). The day's ingestions show in the project's import history.",
        request=IngestBatchSerializer,
        examples=[OpenApiExample("One conversation", value={"records": [EXAMPLE_RECORD]}, request_only=True)],
        responses={
            200: IngestResultSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Every record rejected (the 200 body), or a body that is not a batch.",
            ),
            401: OpenApiResponse(IngestDetailSerializer, description="No token, or a bad one."),
            403: OpenApiResponse(IngestDetailSerializer, description="A member without the admin role."),
            404: OpenApiResponse(IngestDetailSerializer, description="No such project (for you)."),
            413: OpenApiResponse(
                IngestDetailSerializer, description="Too many records, or too large a body."
            ),
            415: OpenApiResponse(IngestDetailSerializer, description="The body is not application/json."),
            429: OpenApiResponse(IngestDetailSerializer, description="Too many requests: see Retry-After."),
        },
    )
    def post(self, request, slug):
        project = project_for(request.user, slug, Role.ANNOTATOR)
        if not can_manage_project(request.user, project):
            raise exceptions.PermissionDenied(
                "Sending conversations needs the admin role in this project (the role that imports files)."
            )
        records, split = batch_of(request.data)
        result = ingest(
            project,
            records,
            user=request.user,
            default_split=split,
            body_bytes=content_length(request),
        )
        taken = result["created"] + result["duplicates"]
        return Response(result, status=200 if taken else 400)


def batch_of(data) -> tuple[list, str]:
    """The body -> (records, default split); a 400 or 413 for anything that is not a batch."""
    split = Split.TRAIN
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(BODY_FIELDS))
        if unknown:
            raise exceptions.ValidationError(
                {
                    k[:100]: ['Unknown field: the body is {"records": [...], "split": ...}.']
                    for k in unknown[:20]
                }
            )
        if "records" not in data:
            raise exceptions.ValidationError({"records": ["This field is required: a list of records."]})
        records = data["records"]
        split = data.get("split", split)
        if not isinstance(split, str) or split not in Split.values:
            raise exceptions.ValidationError({"split": [f"Choose one of {', '.join(Split.values)}."]})
    elif isinstance(data, list):
        records = data
    else:
        raise exceptions.ParseError(
            'The body must be a JSON object {"records": [...]} or a JSON list of records.'
        )
    if not isinstance(records, list):
        raise exceptions.ValidationError({"records": ["Must be a list of records."]})
    if not records:
        raise exceptions.ValidationError({"records": ["Send at least one record."]})
    limit = settings.INGEST_MAX_RECORDS
    if len(records) > limit:
        raise RequestTooLarge(
            f"The batch has {len(records):,} records, over the limit of {limit:,} per request "
            "(INGEST_MAX_RECORDS): send them in smaller batches."
        )
    return records, split
