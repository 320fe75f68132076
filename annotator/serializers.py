from django.conf import settings
from django.db import transaction
from rest_framework import exceptions, serializers

from inference.endpoints import check_endpoint_url
from inference.model_folders import check_model_folder
from toolcalls.openai_format import normalise_assistant_message, normalise_messages
from toolcalls.validate import validate_assistant_message, validate_messages, validate_tool_specs

from .importers import answers_upload_error, assistant_message_from_raw
from .models import (
    Conversation,
    Correction,
    ImportIssue,
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
    content_hash,
    label_settings_errors,
)
from .policy import can_review, role_in, visible_projects
from .review import apply_review
from .taxonomy import create_category, fix_routes, seed_default_taxonomy, update_category


def raise_field_errors(errors):
    if errors:
        detail: dict[str, list[str]] = {}
        for e in errors:
            detail.setdefault(e.field or "non_field_errors", []).append(e.message)
        raise serializers.ValidationError(detail)


# a key no database integer column holds names nothing (SQLite would raise OverflowError on it)
MAX_KEY = 2**63 - 1


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A reference to another object of the same project; `project_path` leads from that object
    to its project ("" when it is a project).

    Choices are limited to the projects the requesting user can see (the others do not exist for
    them); a serializer with SameProjectMixin then checks that the object lies in the project of
    the object being written."""

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

    def to_internal_value(self, data):
        if isinstance(data, float) and not data.is_integer():
            self.fail("incorrect_type", data_type="float")
        if isinstance(data, (int, float, str)) and not isinstance(data, bool):
            try:
                key = int(data)
            except (ValueError, OverflowError):
                key = None  # the parent class reports the wrong type
            if key is not None and not -MAX_KEY <= key <= MAX_KEY:
                self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)

    def project_id_of(self, obj) -> int:
        if not self.project_path:
            return obj.pk
        *parts, last = self.project_path.split("__")
        for part in parts:
            obj = getattr(obj, part)
        return getattr(obj, f"{last}_id")


class SameProjectMixin:
    """Every ScopedRelatedField value must lie in the project of the object being written.

    `project_field` names the field that fixes that project: a project, or a reference whose project
    is the object's (a response's conversation). When the data lacks it (a partial update, a read-only
    project), the instance's project counts. Mix into any serializer with ScopedRelatedFields."""

    project_field = "project"

    def to_internal_value(self, data):
        attrs = super().to_internal_value(data)
        project_id = self._project_id(attrs)
        if project_id is None:
            return attrs
        errors = {}
        for name, field in self.fields.items():
            scoped = getattr(field, "child_relation", field)
            if (
                name == self.project_field
                or not isinstance(scoped, ScopedRelatedField)
                or field.source not in attrs
            ):
                continue
            value = attrs[field.source]
            for obj in value if isinstance(value, (list, tuple)) else [value]:
                if obj is not None and scoped.project_id_of(obj) != project_id:
                    errors[name] = [f"{obj._meta.verbose_name} {obj.pk} belongs to another project."]
                    break
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def _project_id(self, attrs) -> int | None:
        field = self.fields.get(self.project_field)
        source = field.source if field is not None else self.project_field
        if source in attrs:
            obj = attrs[source]
        else:
            obj = getattr(self.instance, self.project_field, None)
        if obj is None:
            return None
        return field.project_id_of(obj) if isinstance(field, ScopedRelatedField) else obj.pk


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
        fields = [
            "id",
            "name",
            "slug",
            "guidelines",
            "tools",
            "overlap",
            "label_settings",
            "created_at",
            "my_role",
        ]
        read_only_fields = ["created_at"]
        # the table's check constraint, as a field message instead of an IntegrityError
        extra_kwargs = {"overlap": {"min_value": 1}}

    def get_my_role(self, obj) -> str | None:
        request = self.context.get("request")
        return role_in(request.user, obj) if request else None

    def validate_tools(self, value):
        raise_field_errors(validate_tool_specs(value))
        return value

    def validate_label_settings(self, value):
        errors = label_settings_errors(value)
        if errors:
            raise serializers.ValidationError([f"{key}: {message}" for key, message in errors.items()])
        return value

    @transaction.atomic
    def create(self, validated_data):
        project = super().create(validated_data)
        Membership.objects.create(user=self.context["request"].user, project=project, role=Role.ADMIN)
        seed_default_taxonomy(project)
        return project


class MembershipSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=Membership._meta.get_field("user").related_model.objects.all()
    )

    class Meta:
        model = Membership
        fields = ["id", "project", "user", "role", "created_at"]
        read_only_fields = ["created_at"]


class ModelVersionSerializer(SameProjectMixin, serializers.ModelSerializer):
    project = ProjectSlugField()
    parent = ScopedRelatedField(
        "project", queryset=ModelVersion.objects.all(), allow_null=True, required=False
    )
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        style={"input_type": "password"},
        help_text="Key of the model's endpoint, sent as a Bearer token. Write-only: never returned (see "
        "api_key_set); an empty string clears it. An api_key inside metadata lands here.",
    )
    api_key_set = serializers.SerializerMethodField(help_text="Whether an endpoint key is stored.")

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "path",
            "adapter_path",
            "parent",
            "origin",
            "stage",
            "notes",
            "metadata",
            "api_key",
            "api_key_set",
            "created_at",
        ]
        read_only_fields = ["created_at", "stage"]

    def get_api_key_set(self, obj) -> bool:
        return bool(obj.api_key)

    def validate_path(self, value):
        return _model_folder(value)

    def validate_adapter_path(self, value):
        return _model_folder(value)

    def validate_metadata(self, value):
        """metadata is shown to every member: an endpoint key moves to the write-only api_key (validate)."""
        if isinstance(value, dict) and "api_key" in value:
            key = value["api_key"]
            if not isinstance(key, str) or len(key) > 500:
                raise serializers.ValidationError(
                    {
                        "api_key": "A string of at most 500 characters; better, give "
                        "it as the write-only api_key field."
                    }
                )
        if isinstance(value, dict) and value.get("base_url") is not None:
            try:
                check_endpoint_url(str(value["base_url"]), settings.MODEL_ENDPOINT_ALLOWED_HOSTS)
            except ValueError as exc:
                raise serializers.ValidationError({"base_url": str(exc)}) from None
        return value

    def validate(self, attrs):
        metadata = attrs.get("metadata")
        if isinstance(metadata, dict) and "api_key" in metadata:
            metadata = dict(metadata)
            key = metadata.pop("api_key")
            attrs["metadata"] = metadata
            attrs.setdefault("api_key", key)
        return super().validate(attrs)


def _model_folder(value: str) -> str:
    """A model or adapter folder must lie under settings.MODEL_FOLDER_ROOTS (checked again at load)."""
    if value:
        try:
            check_model_folder(value, settings.MODEL_FOLDER_ROOTS)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
    return value


class ConversationSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    external_id = serializers.CharField(max_length=255, required=False)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "project",
            "external_id",
            "messages",
            "tools",
            "metadata",
            "content_hash",
            "split",
            "priority",
            "created_at",
        ]
        read_only_fields = ["content_hash", "created_at"]
        validators = []  # uniqueness of external_id is checked in validate() with a clear message

    def validate(self, attrs):
        project = attrs.get("project") or self.instance.project
        tools = attrs.get("tools", getattr(self.instance, "tools", None)) or project.tools
        messages = attrs.get("messages", getattr(self.instance, "messages", None))
        raise_field_errors(validate_tool_specs(tools))
        if "messages" in attrs:  # today's OpenAI shapes (content parts, developer, legacy calls) as stored
            messages, notes, errors = normalise_messages(messages)
            raise_field_errors(errors)
            attrs["messages"] = messages
            metadata = attrs.get("metadata", getattr(self.instance, "metadata", None)) or {}
            if notes and isinstance(metadata, dict):
                attrs["metadata"] = {**metadata, "format_notes": notes}
        raise_field_errors(validate_messages(messages, tools))
        attrs["tools"] = tools
        attrs["content_hash"] = content_hash(messages, tools)
        if not attrs.get("external_id") and self.instance is None:
            attrs["external_id"] = attrs["content_hash"][:32]
        ext = attrs.get("external_id")
        if (
            ext
            and Conversation.objects.filter(project=project, external_id=ext)
            .exclude(pk=getattr(self.instance, "pk", None))
            .exists()
        ):
            raise serializers.ValidationError({"external_id": f"{ext!r} already exists in this project."})
        return attrs


class ModelResponseSerializer(SameProjectMixin, serializers.ModelSerializer):
    project_field = "conversation"
    conversation = ScopedRelatedField("project", queryset=Conversation.objects.all())
    model_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    message = serializers.JSONField(required=False)

    class Meta:
        model = ModelResponse
        fields = [
            "id",
            "conversation",
            "model_version",
            "context_length",
            "raw_text",
            "message",
            "generation_settings",
            "uncertainty",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        instance = self.instance
        conv = attrs.get("conversation") or instance.conversation
        n = len(conv.messages)
        context_length = attrs.get("context_length", getattr(instance, "context_length", None))
        if context_length is None or not 1 <= context_length <= n:
            raise serializers.ValidationError({"context_length": f"must be from 1 to {n}"})
        if "message" in attrs:
            message, _notes, errors = normalise_assistant_message(attrs["message"], "message")
            raise_field_errors(errors)
            raise_field_errors(validate_assistant_message(message, conv.tools, "message"))
            attrs["message"] = message
        elif attrs.get("raw_text"):
            attrs["message"] = assistant_message_from_raw(attrs["raw_text"], conv.tools)
        elif instance is None or "raw_text" in attrs:
            raise serializers.ValidationError({"message": "Give the assistant message or raw_text."})
        raw_text = attrs.get("raw_text", getattr(instance, "raw_text", ""))
        attrs["response_hash"] = content_hash(
            raw_text or attrs.get("message", getattr(instance, "message", None))
        )
        model_version = attrs.get("model_version", getattr(instance, "model_version", None))
        if (
            ModelResponse.objects.filter(
                conversation=conv,
                model_version=model_version,
                context_length=context_length,
                response_hash=attrs["response_hash"],
            )
            .exclude(pk=getattr(instance, "pk", None))
            .exists()
        ):
            raise serializers.ValidationError(
                {"non_field_errors": ["This model version already has this response to this context."]}
            )
        return attrs


class TaxonomyCategorySerializer(SameProjectMixin, serializers.ModelSerializer):
    project = ProjectSlugField()
    parent = ScopedRelatedField(
        "project", queryset=TaxonomyCategory.objects.all(), allow_null=True, required=False
    )
    effective_fix_route = serializers.SerializerMethodField(
        help_text="The route in force: fix_route, else the nearest ancestor's; empty when none has one "
        "(not routed: its corrections go to SFT and DPO)."
    )

    class Meta:
        model = TaxonomyCategory
        fields = [
            "id",
            "project",
            "parent",
            "name",
            "description",
            "root_cause",
            "recommended_fix",
            "fix_route",
            "effective_fix_route",
            "active",
            "position",
        ]
        # no generated unique-together check: a unique name is create_category's rule, said on `name`
        validators = []

    def get_effective_fix_route(self, obj) -> str:
        # one query per project and request, shared by the categories of a list
        routes = self.context.setdefault("_fix_routes", {})
        if obj.project_id not in routes:
            routes[obj.project_id] = fix_routes(obj.project_id)
        return routes[obj.project_id].get(obj.pk, obj.fix_route)

    # the rules (a unique name, a parent of the project and not below the category, a known route) are
    # the taxonomy's service functions', the taxonomy page's too: a refusal is a 400 by field (config.rest)
    def create(self, validated_data):
        return create_category(**validated_data)

    def update(self, instance, validated_data):
        validated_data.pop("project", None)  # the same project: the viewset refuses a move
        return update_category(instance, **validated_data)


class LabelSerializer(serializers.ModelSerializer):
    """Read-only: labels are written through the queue (annotator/labelling.py), never here."""

    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Label
        fields = [
            "id",
            "response",
            "annotator",
            "verdict",
            "categories",
            "note",
            "time_spent_ms",
            "status",
            "created_at",
            "updated_at",
            "submitted_at",
        ]
        read_only_fields = fields


class CorrectionSerializer(serializers.ModelSerializer):
    """Read-only: a correction is submitted with its label through the queue."""

    class Meta:
        model = Correction
        fields = ["id", "label", "message", "created_at", "updated_at"]
        read_only_fields = fields


class PreferenceSerializer(serializers.ModelSerializer):
    """Read-only: comparisons are written through the queue (annotator/labelling.py), never here."""

    annotator = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Preference
        fields = [
            "id",
            "response_a",
            "response_b",
            "annotator",
            "choice",
            "reason",
            "left_side",
            "time_spent_ms",
            "status",
            "created_at",
            "updated_at",
            "submitted_at",
        ]
        read_only_fields = fields


class ReviewSerializer(serializers.ModelSerializer):
    label = ScopedRelatedField(
        "response__conversation__project", queryset=Label.objects.all(), required=False, allow_null=True
    )
    preference = ScopedRelatedField(
        "response_a__conversation__project",
        queryset=Preference.objects.all(),
        required=False,
        allow_null=True,
    )
    reviewer = serializers.SlugRelatedField(slug_field="username", read_only=True)
    seen = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=40,
        help_text="The work's `version` as the reviewer saw it (submitted_at as 'seconds.microseconds'); "
        "if the annotator changed the work since, the review is refused with 409.",
    )

    class Meta:
        model = Review
        fields = ["id", "label", "preference", "reviewer", "decision", "comment", "seen", "created_at"]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        if bool(attrs.get("label")) == bool(attrs.get("preference")):
            raise serializers.ValidationError(
                {"non_field_errors": ["Review exactly one label or one preference."]}
            )
        target = attrs.get("label") or attrs.get("preference")
        project = (target.response if isinstance(target, Label) else target.response_a).conversation.project
        if not can_review(self.context["request"].user, project):
            raise exceptions.PermissionDenied("Reviewing needs the lead role in this project.")
        attrs["target"] = target
        return attrs

    def create(self, validated_data):
        return apply_review(
            self.context["request"].user,
            validated_data["target"],
            validated_data["decision"],
            validated_data.get("comment", ""),
            seen=validated_data.get("seen") or None,
        )


class ImportJobSerializer(serializers.ModelSerializer):
    project = ProjectSlugField()
    file = serializers.FileField(write_only=True)
    answers_file = serializers.FileField(
        write_only=True, required=False, help_text="BFCL possible answers (the possible_answer file)."
    )
    progress = serializers.FloatField(read_only=True)

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "project",
            "file",
            "original_name",
            "default_split",
            "dialect",
            "answers_file",
            "status",
            "progress",
            "size_bytes",
            "lines_read",
            "conversations_created",
            "responses_created",
            "duplicates",
            "error_count",
            "message",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            f for f in fields if f not in ("project", "file", "default_split", "dialect", "answers_file")
        ]

    def validate(self, attrs):
        answers = attrs.get("answers_file")
        if answers:
            problem = answers_upload_error(answers, attrs.get("dialect", ImportJob.Dialect.AUTO))
            if problem:
                raise serializers.ValidationError({"answers_file": [problem]})
        return attrs


class ImportIssueSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportIssue
        fields = ["line", "field", "message"]
