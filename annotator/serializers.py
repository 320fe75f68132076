import json

from django.db import transaction
from rest_framework import serializers

from training.models import ModelVersion

from .importers import assistant_message_from_raw
from .models import (
    Conversation,
    Correction,
    ImportIssue,
    ImportJob,
    Label,
    Membership,
    ModelResponse,
    Preference,
    Project,
    Review,
    Role,
    Status,
    TaxonomyCategory,
    content_hash,
)
from .permissions import has_role, role_in, visible_projects
from .taxonomy import seed_default_taxonomy
from .validation import validate_assistant_message, validate_messages, validate_tool_specs


def raise_field_errors(errors):
    if errors:
        detail: dict[str, list[str]] = {}
        for e in errors:
            detail.setdefault(e.field or "non_field_errors", []).append(e.message)
        raise serializers.ValidationError(detail)


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A foreign key limited to objects in projects the requesting user can see."""

    def __init__(self, project_path: str, **kwargs):
        self.project_path = project_path
        super().__init__(**kwargs)

    def get_queryset(self):
        qs = super().get_queryset()
        request = self.context.get("request")
        if request is None or request.user.is_superuser:
            return qs
        lookup = "pk__in" if not self.project_path else f"{self.project_path}__in"
        return qs.filter(**{lookup: visible_projects(request.user).values("pk")})


class ProjectSlugField(serializers.SlugRelatedField):
    def __init__(self, **kwargs):
        super().__init__(slug_field="slug", queryset=Project.objects.all(), **kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return visible_projects(request.user) if request else Project.objects.all()


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "slug", "guidelines", "tools", "overlap", "label_settings", "created_at", "my_role"]
        read_only_fields = ["created_at"]

    def get_my_role(self, obj) -> str | None:
        request = self.context.get("request")
        return role_in(request.user, obj) if request else None

    def validate_tools(self, value):
        raise_field_errors(validate_tool_specs(value))
        return value

    def validate_label_settings(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be an object")
        return value

    @transaction.atomic
    def create(self, validated_data):
        project = super().create(validated_data)
        Membership.objects.create(user=self.context["request"].user, project=project, role=Role.ADMIN)
        seed_default_taxonomy(project)
        return project


class MembershipSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    user = serializers.SlugRelatedField(slug_field="username", queryset=Membership._meta.get_field("user").related_model.objects.all())

    class Meta:
        model = Membership
        fields = ["id", "project", "user", "role", "created_at"]
        read_only_fields = ["created_at"]


class ModelVersionSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    parent = ScopedRelatedField("project", queryset=ModelVersion.objects.all(), allow_null=True, required=False)

    class Meta:
        model = ModelVersion
        fields = ["id", "project", "name", "path", "adapter_path", "parent", "origin", "stage", "notes",
                  "metadata", "created_at"]
        read_only_fields = ["created_at", "stage"]

    def validate(self, attrs):
        parent, project = attrs.get("parent"), attrs.get("project") or getattr(self.instance, "project", None)
        if parent is not None and project is not None and parent.project_id != project.pk:
            raise serializers.ValidationError({"parent": "The parent version belongs to another project."})
        return attrs


class ConversationSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    external_id = serializers.CharField(max_length=255, required=False)

    class Meta:
        model = Conversation
        fields = ["id", "project", "external_id", "messages", "tools", "metadata", "content_hash", "split",
                  "priority", "created_at"]
        read_only_fields = ["content_hash", "created_at"]
        validators = []  # uniqueness of external_id is checked in validate() with a clear message

    def validate(self, attrs):
        project = attrs.get("project") or self.instance.project
        tools = attrs.get("tools", getattr(self.instance, "tools", None)) or project.tools
        messages = attrs.get("messages", getattr(self.instance, "messages", None))
        raise_field_errors(validate_tool_specs(tools))
        raise_field_errors(validate_messages(messages, tools))
        attrs["tools"] = tools
        attrs["content_hash"] = content_hash(messages, tools)
        if not attrs.get("external_id") and self.instance is None:
            attrs["external_id"] = attrs["content_hash"][:32]
        ext = attrs.get("external_id")
        if ext and Conversation.objects.filter(project=project, external_id=ext).exclude(
            pk=getattr(self.instance, "pk", None)
        ).exists():
            raise serializers.ValidationError({"external_id": f"{ext!r} already exists in this project."})
        return attrs


class ModelResponseSerializer(serializers.ModelSerializer):
    conversation = ScopedRelatedField("project", queryset=Conversation.objects.all())
    model_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    message = serializers.JSONField(required=False)

    class Meta:
        model = ModelResponse
        fields = ["id", "conversation", "model_version", "context_length", "raw_text", "message",
                  "generation_settings", "uncertainty", "created_at"]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        conv = attrs["conversation"]
        if attrs["model_version"].project_id != conv.project_id:
            raise serializers.ValidationError({"model_version": "The model version belongs to another project."})
        n = len(conv.messages)
        if not 1 <= attrs["context_length"] <= n:
            raise serializers.ValidationError({"context_length": f"must be from 1 to {n}"})
        if "message" in attrs:
            raise_field_errors(validate_assistant_message(attrs["message"], conv.tools, "message"))
        elif attrs.get("raw_text"):
            attrs["message"] = assistant_message_from_raw(attrs["raw_text"], conv.tools)
        else:
            raise serializers.ValidationError({"message": "Give the assistant message or raw_text."})
        attrs["response_hash"] = content_hash(attrs.get("raw_text") or attrs["message"])
        return attrs


class TaxonomyCategorySerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    parent = ScopedRelatedField("project", queryset=TaxonomyCategory.objects.all(), allow_null=True, required=False)

    class Meta:
        model = TaxonomyCategory
        fields = ["id", "project", "parent", "name", "description", "root_cause", "recommended_fix", "active",
                  "position"]

    def validate(self, attrs):
        project = attrs.get("project") or self.instance.project
        parent = attrs.get("parent", getattr(self.instance, "parent", None))
        if parent is not None:
            if parent.project_id != project.pk:
                raise serializers.ValidationError({"parent": "The parent category belongs to another project."})
            node = parent
            while node is not None:
                if self.instance is not None and node.pk == self.instance.pk:
                    raise serializers.ValidationError({"parent": "A category cannot be its own ancestor."})
                node = node.parent
        name = attrs.get("name")
        if name and TaxonomyCategory.objects.filter(project=project, name=name).exclude(
            pk=getattr(self.instance, "pk", None)
        ).exists():
            raise serializers.ValidationError({"name": f"A category named {name!r} already exists."})
        return attrs


ANNOTATOR_STATUSES = (Status.DRAFT, Status.SUBMITTED)


class LabelSerializer(serializers.ModelSerializer):
    response = ScopedRelatedField("conversation__project", queryset=ModelResponse.objects.all())
    categories = ScopedRelatedField("project", queryset=TaxonomyCategory.objects.all(), many=True, required=False)
    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.ChoiceField(choices=ANNOTATOR_STATUSES, default=Status.DRAFT)

    class Meta:
        model = Label
        fields = ["id", "response", "annotator", "verdict", "categories", "note", "time_spent_ms", "status",
                  "created_at", "updated_at", "submitted_at"]
        read_only_fields = ["created_at", "updated_at", "submitted_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["status"] = instance.status  # approved / rejected are shown even though not writable here
        return data

    def validate(self, attrs):
        response = attrs.get("response") or self.instance.response
        if self.instance is not None and "response" in attrs and attrs["response"].pk != self.instance.response_id:
            raise serializers.ValidationError({"response": "A label cannot move to another response."})
        project_id = response.conversation.project_id
        for cat in attrs.get("categories", []):
            if cat.project_id != project_id:
                raise serializers.ValidationError({"categories": f"Category {cat.pk} belongs to another project."})
            if not cat.active:
                raise serializers.ValidationError({"categories": f"Category {cat.name!r} is retired."})
        status = attrs.get("status", getattr(self.instance, "status", Status.DRAFT))
        verdict = attrs.get("verdict", getattr(self.instance, "verdict", ""))
        if status == Status.SUBMITTED and not verdict:
            raise serializers.ValidationError({"verdict": "A submitted label needs a verdict."})
        if self.instance is not None and self.instance.status == Status.APPROVED:
            raise serializers.ValidationError({"status": "An approved label is final."})
        return attrs

    def _stamp(self, validated_data):
        from django.utils import timezone

        if validated_data.get("status") == Status.SUBMITTED:
            validated_data["submitted_at"] = timezone.now()

    def create(self, validated_data):
        request = self.context["request"]
        validated_data["annotator"] = request.user
        if Label.objects.filter(response=validated_data["response"], annotator=request.user).exists():
            raise serializers.ValidationError({"response": "You already labelled this response; update that label."})
        self._stamp(validated_data)
        return super().create(validated_data)

    def update(self, instance, validated_data):
        self._stamp(validated_data)
        return super().update(instance, validated_data)


class CorrectionSerializer(serializers.ModelSerializer):
    label = ScopedRelatedField("response__conversation__project", queryset=Label.objects.all())

    class Meta:
        model = Correction
        fields = ["id", "label", "message", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs):
        label = attrs.get("label") or self.instance.label
        request = self.context["request"]
        if label.annotator_id != request.user.pk:
            raise serializers.ValidationError({"label": "You can only correct your own labels."})
        if self.instance is None and Correction.objects.filter(label=label).exists():
            raise serializers.ValidationError({"label": "This label already has a correction; update it."})
        message = attrs.get("message", getattr(self.instance, "message", None))
        conv = label.response.conversation
        raise_field_errors(validate_assistant_message(message, conv.tools, "message", check_schema=True))
        attrs["message"] = normalise_assistant_message(message)
        return attrs


def normalise_assistant_message(message: dict) -> dict:
    """Store tool-call arguments as JSON strings (OpenAI format), whatever the client sent."""
    out = {"role": "assistant", "content": message.get("content") or None}
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        args = fn.get("arguments", {})
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                      "function": {"name": fn["name"], "arguments": args}})
    if calls:
        out["tool_calls"] = calls
    return out


class PreferenceSerializer(serializers.ModelSerializer):
    response_a = ScopedRelatedField("conversation__project", queryset=ModelResponse.objects.all())
    response_b = ScopedRelatedField("conversation__project", queryset=ModelResponse.objects.all())
    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.ChoiceField(choices=ANNOTATOR_STATUSES, default=Status.DRAFT)

    class Meta:
        model = Preference
        fields = ["id", "response_a", "response_b", "annotator", "choice", "reason", "left_side", "time_spent_ms",
                  "status", "created_at", "updated_at", "submitted_at"]
        read_only_fields = ["created_at", "updated_at", "submitted_at"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["status"] = instance.status
        return data

    def validate(self, attrs):
        a = attrs.get("response_a") or self.instance.response_a
        b = attrs.get("response_b") or self.instance.response_b
        if a.pk == b.pk:
            raise serializers.ValidationError({"response_b": "A preference needs two different responses."})
        if a.conversation_id != b.conversation_id or a.context_length != b.context_length:
            raise serializers.ValidationError({"response_b": "Both responses must answer the same context."})
        status = attrs.get("status", getattr(self.instance, "status", Status.DRAFT))
        choice = attrs.get("choice", getattr(self.instance, "choice", ""))
        reason = attrs.get("reason", getattr(self.instance, "reason", ""))
        if status == Status.SUBMITTED:
            if not choice:
                raise serializers.ValidationError({"choice": "A submitted preference needs a choice."})
            if a.conversation.project.setting("require_preference_reason") and not reason.strip():
                raise serializers.ValidationError({"reason": "This project asks for a reason with every choice."})
        if self.instance is not None and self.instance.status == Status.APPROVED:
            raise serializers.ValidationError({"status": "An approved preference is final."})
        return attrs

    def create(self, validated_data):
        from django.utils import timezone

        request = self.context["request"]
        validated_data["annotator"] = request.user
        if Preference.objects.filter(annotator=request.user, response_a=validated_data["response_a"],
                                     response_b=validated_data["response_b"]).exists():
            raise serializers.ValidationError({"response_b": "You already compared this pair."})
        if validated_data.get("status") == Status.SUBMITTED:
            validated_data["submitted_at"] = timezone.now()
        return super().create(validated_data)


class ReviewSerializer(serializers.ModelSerializer):
    label = ScopedRelatedField("response__conversation__project", queryset=Label.objects.all(), required=False, allow_null=True)
    preference = ScopedRelatedField("response_a__conversation__project", queryset=Preference.objects.all(),
                                    required=False, allow_null=True)
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Review
        fields = ["id", "label", "preference", "reviewer", "decision", "comment", "created_at"]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        if bool(attrs.get("label")) == bool(attrs.get("preference")):
            raise serializers.ValidationError({"non_field_errors": ["Review exactly one label or one preference."]})
        target = attrs.get("label") or attrs.get("preference")
        project = (target.response if isinstance(target, Label) else target.response_a).conversation.project
        if not has_role(self.context["request"].user, project, Role.LEAD):
            from rest_framework.exceptions import PermissionDenied

            raise PermissionDenied("Reviewing needs the lead role in this project.")
        attrs["target"] = target
        return attrs

    def create(self, validated_data):
        from .review import apply_review

        return apply_review(self.context["request"].user, validated_data["target"], validated_data["decision"],
                            validated_data.get("comment", ""))


class ImportJobSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    file = serializers.FileField(write_only=True)
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = ImportJob
        fields = ["id", "project", "file", "original_name", "default_split", "status", "progress", "size_bytes",
                  "lines_read", "conversations_created", "responses_created", "duplicates", "error_count",
                  "message", "created_at", "started_at", "finished_at"]
        read_only_fields = [f for f in fields if f not in ("project", "file", "default_split")]


class ImportIssueSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportIssue
        fields = ["line", "field", "message"]
