"""The annotator queue as REST endpoints, for annotation tools and scripts: the workspace pages' twins.

    GET  /api/projects/<slug>/queue/next/?kind=label|compare   claim your next task (204: nothing left)
    GET  /api/projects/<slug>/queue/tasks/<id>/                the task: context, responses to judge,
                                                               your draft
    PUT  /api/projects/<slug>/queue/tasks/<id>/draft/          autosave what you have so far
    POST /api/projects/<slug>/queue/tasks/<id>/submit/         submit: fills your slot (again: changes
                                                               your work until a lead reviews it)
    POST /api/projects/<slug>/queue/tasks/<id>/skip/           pass: the task goes to the back of your queue
    POST /api/projects/<slug>/queue/tasks/<id>/heartbeat/      keep your lock while you work

Each view calls the function the page calls (assignment.py, labelling.py), so the claim, overlap, lock,
category and stale-submit rules are the same ones. Only a task the queue handed you (or a lead reserved
for you, or sent back to you) is yours to read and write, and your submitted work stays yours to change
until a lead reviews it. Bad input answers 400 {field: [messages]}; a
queue rule that refuses answers 409 {"detail", "code"}. Any member of the project may call them; for
others the project does not exist (404).
"""

import json

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from . import assignment, labelling
from .models import Label, Preference, Review, Role, Slot, Status, Task
from .policy import project_for

# --- what goes in and out -----------------------------------------------------------------------


class QueueWorkSerializer(serializers.Serializer):
    """A label task takes verdict … correction_tool_calls; a compare task takes choice, reason, left_side.
    The rules (a verdict, a category for an unreasonable one, tool calls valid against the tools' schemas,
    a reason where the project asks for one) are checked on submit; a draft keeps whatever was sent."""

    verdict = serializers.ChoiceField(choices=Label.Verdict.choices, required=False, allow_blank=True)
    categories = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Ids of active taxonomy categories of the project.",
    )
    note = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    correction_content = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="The reply text the response should have had.",
    )
    correction_tool_calls = serializers.JSONField(
        required=False,
        help_text='The tool calls it should have made: a list of {"name", "arguments"} (or '
        "OpenAI tool_call objects), or that list as JSON text. Empty: none.",
    )
    time_spent_ms = serializers.IntegerField(required=False, help_text="Clamped to 0 … 86,400,000 (24 h).")
    choice = serializers.ChoiceField(choices=Preference.Choice.choices, required=False, allow_blank=True)
    reason = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    left_side = serializers.ChoiceField(
        choices=Preference._meta.get_field("left_side").choices,
        required=False,
        help_text="Which response you showed on the left (the task's left_side).",
    )
    expected_status = serializers.ChoiceField(
        choices=Status.choices,
        required=False,
        help_text="Submit only: the status your work had when you read the task (draft for new work). "
        "If it changed since (submitted elsewhere, reviewed by a lead) the submit is refused (409).",
    )


class QueueResponseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    message = serializers.JSONField(help_text="The assistant message: content, tool_calls, reasoning.")


class ConversationRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()


class LabelDraftSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices)
    verdict = serializers.CharField(allow_blank=True)
    categories = serializers.ListField(child=serializers.IntegerField())
    note = serializers.CharField(allow_blank=True)
    correction_content = serializers.CharField(allow_blank=True)
    correction_tool_calls = serializers.CharField(
        allow_blank=True, help_text="JSON text, as the editor shows it."
    )
    time_spent_ms = serializers.IntegerField()
    saved_at = serializers.CharField(allow_blank=True)


class PreferenceDraftSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices)
    choice = serializers.CharField(allow_blank=True)
    reason = serializers.CharField(allow_blank=True)
    left_side = serializers.CharField()
    time_spent_ms = serializers.IntegerField()


class ReviewNoteSerializer(serializers.Serializer):
    decision = serializers.CharField()
    comment = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class QueueTaskSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="label or compare.")
    mode = serializers.CharField(
        help_text="editable (you hold its lock), reserved (a lead reserved it for you), "
        "fix (sent back by a lead), submitted (waiting for review: submit again to change it) "
        "or done (approved: final)."
    )
    locked_until = serializers.DateTimeField(
        allow_null=True, help_text="Your lock's expiry; renew it by heartbeat."
    )
    queue_left = serializers.IntegerField(
        help_text="Tasks of this kind still waiting for you (capped at 1,000)."
    )
    conversation = ConversationRefSerializer()
    context = serializers.JSONField(help_text="The messages the response answers.")
    tools = serializers.JSONField(help_text="The agent's tool specs (OpenAI format).")
    response = QueueResponseSerializer(allow_null=True, help_text="Label tasks: the response to judge.")
    response_a = QueueResponseSerializer(allow_null=True, help_text="Compare tasks.")
    response_b = QueueResponseSerializer(allow_null=True, help_text="Compare tasks.")
    left_side = serializers.CharField(
        allow_null=True, help_text="Compare tasks: show this one (a or b) on the left."
    )
    label = LabelDraftSerializer(
        allow_null=True, help_text="Your label so far (null until you save a draft)."
    )
    preference = PreferenceDraftSerializer(allow_null=True, help_text="Your comparison so far.")
    reviews = ReviewNoteSerializer(many=True, help_text="The lead's latest reviews of your work.")


class DraftSavedSerializer(serializers.Serializer):
    saved = serializers.BooleanField()
    saved_at = serializers.CharField(allow_blank=True)


class SubmittedSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    label = serializers.IntegerField(allow_null=True)
    preference = serializers.IntegerField(allow_null=True)


class LockSerializer(serializers.Serializer):
    locked_until = serializers.DateTimeField()


class QueueRefusalSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(
        help_text="not_handed (not your task), stale (your lock went to another "
        "annotator), lock_lost (heartbeat too late) or refused (e.g. approved and "
        "final)."
    )


BAD_INPUT = OpenApiResponse(OpenApiTypes.OBJECT, description="Field name -> list of messages.")
REFUSED = OpenApiResponse(QueueRefusalSerializer, description="A queue rule refused it.")
NOT_FOUND = OpenApiResponse(description="No such project (for you), or no such task in it.")


# --- helpers ------------------------------------------------------------------------------------


def _task(request, slug, task_id, project=None) -> Task:
    project = project or project_for(request.user, slug, Role.ANNOTATOR)
    task = get_object_or_404(
        Task.objects.select_related("response__conversation", "response_b"), project=project, pk=task_id
    )
    task.project = project
    return task


def _refused(exc: assignment.QueueError, code: str | None = None) -> Response:
    if code is None:
        code = (
            "not_handed"
            if isinstance(exc, assignment.NotHanded)
            else "stale"
            if isinstance(exc, assignment.StaleSubmit)
            else "refused"
        )
    return Response({"detail": str(exc), "code": code}, status=409)


def _work_data(request) -> dict:
    body = QueueWorkSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data = dict(body.validated_data)
    calls = data.get("correction_tool_calls")
    if calls is not None and not isinstance(calls, str):
        data["correction_tool_calls"] = json.dumps(calls)  # the editor's text, as the page sends it
    return data


def _task_payload(task: Task, user) -> dict:
    mode, work = labelling.work_state(task, user)
    if mode == "none":
        raise assignment.NotHanded(assignment.NOT_HANDED)
    slot = Slot.objects.filter(task=task, annotator=user, state=Slot.State.LOCKED).first()
    response = task.response
    conversation = response.conversation
    payload = {
        "id": task.pk,
        "kind": task.kind,
        "mode": mode,
        "locked_until": slot.locked_until if slot else None,
        "queue_left": assignment.queue_size_by_kind(task.project, user, task.kind),
        "conversation": {"id": conversation.pk, "external_id": conversation.external_id},
        "context": conversation.messages[: response.context_length],
        "tools": conversation.tools,
        "response": None,
        "response_a": None,
        "response_b": None,
        "left_side": None,
        "label": None,
        "preference": None,
        "reviews": [],
    }
    if work is not None:
        payload["reviews"] = list(
            Review.objects.filter(**{"label" if task.kind == Task.Kind.LABEL else "preference": work})
            .order_by("-created_at", "-id")
            .values("decision", "comment", "created_at")[:3]
        )
    if task.kind == Task.Kind.LABEL:
        payload["response"] = {"id": response.pk, "message": response.message}
        if work is not None:
            editor = labelling.label_editor(task, work)
            payload["label"] = {
                "status": work.status,
                "verdict": work.verdict,
                "note": work.note,
                "categories": list(work.categories.values_list("pk", flat=True)),
                "correction_content": editor["content"],
                "correction_tool_calls": editor["tool_calls"],
                "time_spent_ms": work.time_spent_ms,
                "saved_at": editor["saved_at"],
            }
    else:
        payload["response_a"] = {"id": response.pk, "message": response.message}
        payload["response_b"] = {"id": task.response_b.pk, "message": task.response_b.message}
        payload["left_side"] = labelling.shown_left(task, user, work)
        if work is not None:
            payload["preference"] = {
                "status": work.status,
                "choice": work.choice,
                "reason": work.reason,
                "left_side": work.left_side,
                "time_spent_ms": work.time_spent_ms,
            }
    return QueueTaskSerializer(payload).data


# --- the endpoints --------------------------------------------------------------------------------


@extend_schema(
    tags=["queue"],
    summary="Claim your next task",
    description="Locks your next task exactly as the workspace's next page does (reserved items first, then "
    "priority, breadth first, the project's order) and returns it; asking again while you hold a lock "
    "returns the same task. 204 when nothing is left for you.",
    parameters=[OpenApiParameter("kind", str, enum=list(Task.Kind.values), description="Default label.")],
    responses={
        200: QueueTaskSerializer,
        204: OpenApiResponse(description="Nothing left for you in this queue."),
        400: BAD_INPUT,
        404: NOT_FOUND,
    },
)
@api_view(["GET"])
def next_task(request, slug):
    project = project_for(request.user, slug, Role.ANNOTATOR)
    kind = request.query_params.get("kind", Task.Kind.LABEL)
    if kind not in Task.Kind.values:
        raise ValidationError({"kind": [f"Choose one of {', '.join(Task.Kind.values)}."]})
    slot = assignment.next_task(project, request.user, kind)
    if slot is None:
        return Response(status=204)
    return Response(_task_payload(_task(request, slug, slot.task_id, project), request.user))


@extend_schema(
    tags=["queue"],
    summary="One of your tasks: context, responses to judge, your draft",
    responses={200: QueueTaskSerializer, 404: NOT_FOUND, 409: REFUSED},
)
@api_view(["GET"])
def task_detail(request, slug, task_id):
    task = _task(request, slug, task_id)
    try:
        return Response(_task_payload(task, request.user))
    except assignment.QueueError as exc:
        return _refused(exc)


@extend_schema(
    tags=["queue"],
    summary="Autosave your work on a task",
    description="Send the whole editor state, as the page's autosave does; nothing is validated.",
    request=QueueWorkSerializer,
    responses={200: DraftSavedSerializer, 400: BAD_INPUT, 404: NOT_FOUND, 409: REFUSED},
)
@api_view(["PUT"])
def task_draft(request, slug, task_id):
    task = _task(request, slug, task_id)
    data = _work_data(request)
    try:
        work = labelling.save_draft(task, request.user, data)
    except assignment.QueueError as exc:
        return _refused(exc)
    return Response({"saved": True, "saved_at": labelling.draft_saved_at(work)})


@extend_schema(
    tags=["queue"],
    summary="Submit your label or comparison",
    description="Validates and fills your slot of the task. Submitting again changes your submitted work "
    "until a lead reviews it (approved work is final; rejected work comes back as mode fix). A 400 keeps "
    "what you sent as your draft.",
    request=QueueWorkSerializer,
    responses={200: SubmittedSerializer, 400: BAD_INPUT, 404: NOT_FOUND, 409: REFUSED},
)
@api_view(["POST"])
def task_submit(request, slug, task_id):
    task = _task(request, slug, task_id)
    data = _work_data(request)
    try:
        work = labelling.submit(task, request.user, data)
    except assignment.QueueError as exc:
        return _refused(exc)
    return Response(
        {
            "task": task.pk,
            "kind": task.kind,
            "status": work.status,
            "label": work.pk if isinstance(work, Label) else None,
            "preference": work.pk if isinstance(work, Preference) else None,
        }
    )


@extend_schema(
    tags=["queue"],
    summary="Pass on a task",
    request=None,
    description="Your slot goes back to the pool and the task to the back of your queue.",
    responses={204: OpenApiResponse(description="Skipped."), 404: NOT_FOUND, 409: REFUSED},
)
@api_view(["POST"])
def task_skip(request, slug, task_id):
    task = _task(request, slug, task_id)
    try:
        assignment.skip(task, request.user)
    except assignment.QueueError as exc:
        return _refused(exc)
    return Response(status=204)


@extend_schema(
    tags=["queue"],
    summary="Keep your lock on a task",
    request=None,
    description="Renews your lock for the project's lock time; 409 when it is no longer yours.",
    responses={200: LockSerializer, 404: NOT_FOUND, 409: REFUSED},
)
@api_view(["POST"])
def task_heartbeat(request, slug, task_id):
    task = _task(request, slug, task_id)
    until = assignment.heartbeat(task, request.user)
    if until is None:
        return _refused(assignment.QueueError(assignment.LOCK_LOST), code="lock_lost")
    return Response({"locked_until": serializers.DateTimeField().to_representation(until)})


urlpatterns = [
    path("next/", next_task, name="queue-api-next"),
    path("tasks/<int:task_id>/", task_detail, name="queue-api-task"),
    path("tasks/<int:task_id>/draft/", task_draft, name="queue-api-draft"),
    path("tasks/<int:task_id>/submit/", task_submit, name="queue-api-submit"),
    path("tasks/<int:task_id>/skip/", task_skip, name="queue-api-skip"),
    path("tasks/<int:task_id>/heartbeat/", task_heartbeat, name="queue-api-heartbeat"),
]
