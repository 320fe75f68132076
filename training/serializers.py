from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from rest_framework import serializers

from annotator.serializers import ProjectSlugField

from .models import DatasetSnapshot
from .snapshots.build import save_snapshot
from .snapshots.spec import clean_spec


def _api_errors(exc: DjangoValidationError) -> dict:
    """clean_spec's field paths, with the API's name for the audit settings."""
    return {
        ("audit_config" + key[5:] if key.startswith("audit") else key): value
        for key, value in exc.message_dict.items()
    }


class DatasetSnapshotSerializer(serializers.ModelSerializer):
    """A dataset snapshot. Create with project, kind, layout, filters, audit_config (and a note);
    everything else is written by the build."""

    project = ProjectSlugField()
    kind = serializers.ChoiceField(choices=DatasetSnapshot.Kind.choices)
    layout = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="SFT: trl_messages | trl_prompt_completion | openai_chat; "
        "DPO: trl_preference | openai_preference | llamafactory; eval: eval_cases.",
    )
    filters = serializers.JSONField(
        required=False,
        help_text=(
            "include_submitted (bool), splits (list), categories (ids, children included), "
            "model_versions (ids), date_from / date_to (YYYY-MM-DD, when labelled), "
            "include_reasonable (SFT/eval), sources (DPO: preferences, corrections), "
            "routing (SFT/DPO: taxonomy, the default, takes the corrections whose categories' fix route "
            "feeds this kind; all takes every correction). The build counts where the corrections went "
            "in stats.routing (by reason and category, and a summary in words)."
        ),
    )
    audit_config = serializers.JSONField(
        required=False,
        help_text=(
            "checks {check: block|warn|off}, min_target_chars, max_tokens, tokenizer (model version id)."
        ),
    )
    name = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True, help_text="queued | running | ready | failed | cancelled")
    failure = serializers.CharField(
        read_only=True,
        help_text="why it failed: no_rows | audit_blocked | error | queue_unavailable | gave_up",
    )
    progress = serializers.FloatField(read_only=True)
    stalled = serializers.BooleanField(read_only=True, help_text="running, but its worker has gone silent")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id",
            "project",
            "kind",
            "version",
            "name",
            "layout",
            "note",
            "filters",
            "audit_config",
            "status",
            "failure",
            "message",
            "phase",
            "progress",
            "rows_total",
            "rows_done",
            "stalled",
            "row_count",
            "sha256",
            "size_bytes",
            "stats",
            "audit",
            "download_url",
            "attempts",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            f for f in fields if f not in ("project", "kind", "layout", "note", "filters", "audit_config")
        ]

    def get_download_url(self, obj) -> str | None:
        if obj.status != DatasetSnapshot.State.READY:
            return None
        url = reverse("datasetsnapshot-download", args=[obj.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def validate(self, attrs):
        data = {
            "kind": attrs["kind"],
            "layout": attrs.get("layout") or None,
            "note": attrs.get("note", ""),
            "filters": attrs.get("filters") or {},
            "audit": attrs.get("audit_config") or {},
        }
        try:
            attrs["spec"] = clean_spec(attrs["project"], data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(_api_errors(exc)) from exc
        return attrs

    def create(self, validated_data):
        return save_snapshot(validated_data["project"], self.context["request"].user, validated_data["spec"])


class CountRequestSerializer(serializers.Serializer):
    project = ProjectSlugField()
    kind = serializers.ChoiceField(choices=DatasetSnapshot.Kind.choices)
    filters = serializers.JSONField(required=False)

    def validate(self, attrs):
        try:
            attrs["spec"] = clean_spec(
                attrs["project"], {"kind": attrs["kind"], "filters": attrs.get("filters") or {}}
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(_api_errors(exc)) from exc
        return attrs


class CountPartSerializer(serializers.Serializer):
    source = serializers.CharField(required=False)
    label = serializers.CharField()
    count = serializers.IntegerField()


class CountResponseSerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Rows the build would write (DPO: an upper bound).")
    records = serializers.IntegerField(help_text="Source records it would read.")
    parts = CountPartSerializer(many=True)
    skipped = CountPartSerializer(many=True)


class PreviewRowSerializer(serializers.Serializer):
    row = serializers.IntegerField()
    source = serializers.CharField()
    source_id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    context = serializers.ListField(child=serializers.DictField())
    target = serializers.DictField()
    rejected = serializers.DictField(required=False)
