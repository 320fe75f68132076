from django import forms
from django.conf import settings
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from inference.endpoints import check_endpoint_url
from inference.model_folders import check_model_folder

from . import models as m


@admin.register(m.Project)
class ProjectAdmin(SimpleHistoryAdmin):
    list_display = ["name", "slug", "overlap", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]


class ModelVersionForm(forms.ModelForm):
    """The endpoint key is write-only here too: a password input that never shows the stored key
    (empty keeps it); an "api_key" typed into metadata moves into it; folders must lie under
    settings.MODEL_FOLDER_ROOTS."""

    api_key = forms.CharField(
        required=False,
        max_length=500,
        label="API key",
        widget=forms.PasswordInput(render_value=False),
        help_text="Never shown. Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored API key")

    class Meta:
        model = m.ModelVersion
        fields = [
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
            "created_by",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored_api_key = self.instance.api_key if self.instance.pk else ""
        self.initial["api_key"] = ""

    def _folder(self, name):
        value = self.cleaned_data.get(name)
        if value:
            try:
                check_model_folder(value, settings.MODEL_FOLDER_ROOTS)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return value

    def clean_path(self):
        return self._folder("path")

    def clean_adapter_path(self):
        return self._folder("adapter_path")

    def clean(self):
        data = super().clean()
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and "api_key" in metadata:
            metadata = dict(metadata)
            key = metadata.pop("api_key")
            data["metadata"] = metadata
            if not data.get("api_key") and isinstance(key, str):
                data["api_key"] = key
        if isinstance(data.get("metadata"), dict) and data["metadata"].get("base_url"):
            try:
                check_endpoint_url(str(data["metadata"]["base_url"]), settings.MODEL_ENDPOINT_ALLOWED_HOSTS)
            except ValueError as exc:
                self.add_error("metadata", f"base_url: {exc}")
        return data

    def save(self, commit=True):
        if self.cleaned_data.get("clear_api_key"):
            self.instance.api_key = ""
        elif not self.cleaned_data.get("api_key"):
            self.instance.api_key = self.stored_api_key
        return super().save(commit)


@admin.register(m.ModelVersion)
class ModelVersionAdmin(SimpleHistoryAdmin):
    form = ModelVersionForm
    list_display = ["name", "project", "origin", "stage", "parent", "api_key_set", "created_at"]
    list_filter = ["origin", "stage", "project"]
    search_fields = ["name"]

    @admin.display(boolean=True, description="API key set")
    def api_key_set(self, obj):
        return bool(obj.api_key)


@admin.register(m.Membership)
class MembershipAdmin(SimpleHistoryAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role", "project"]
    autocomplete_fields = ["user", "project"]


@admin.register(m.Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "split", "priority", "created_at"]
    list_filter = ["split", "project"]
    search_fields = ["external_id"]
    show_full_result_count = False


@admin.register(m.ModelResponse)
class ModelResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "conversation", "model_version", "context_length", "created_at"]
    raw_id_fields = ["conversation"]
    list_select_related = ["conversation", "model_version"]
    show_full_result_count = False


@admin.register(m.TaxonomyCategory)
class TaxonomyCategoryAdmin(SimpleHistoryAdmin):
    list_display = ["name", "project", "parent", "fix_route", "active", "position"]
    list_filter = ["project", "fix_route", "active"]
    search_fields = ["name"]


class CorrectionInline(admin.StackedInline):
    model = m.Correction
    extra = 0


class WrittenThroughTheQueue:
    """Labels, corrections, preferences and reviews are written only by the queue's and the review's
    service functions (claims, overlap, locks, label rules, roll-ups); the admin shows them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(m.Label)
class LabelAdmin(WrittenThroughTheQueue, SimpleHistoryAdmin):
    list_display = ["id", "response", "annotator", "verdict", "status", "updated_at"]
    list_filter = ["status", "verdict"]
    raw_id_fields = ["response"]
    inlines = [CorrectionInline]
    show_full_result_count = False


@admin.register(m.Correction)
class CorrectionAdmin(WrittenThroughTheQueue, SimpleHistoryAdmin):
    raw_id_fields = ["label"]


@admin.register(m.Preference)
class PreferenceAdmin(WrittenThroughTheQueue, SimpleHistoryAdmin):
    list_display = ["id", "response_a", "response_b", "annotator", "choice", "status"]
    list_filter = ["status", "choice"]
    raw_id_fields = ["response_a", "response_b"]


@admin.register(m.Review)
class ReviewAdmin(WrittenThroughTheQueue, SimpleHistoryAdmin):
    list_display = ["id", "reviewer", "decision", "label", "preference", "created_at"]
    raw_id_fields = ["label", "preference"]


class ImportIssueInline(admin.TabularInline):
    model = m.ImportIssue
    extra = 0
    max_num = 0
    readonly_fields = ["line", "field", "message"]


@admin.register(m.ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "original_name",
        "status",
        "lines_read",
        "conversations_created",
        "error_count",
    ]
    list_filter = ["status"]
    readonly_fields = ["committed_offset"]


@admin.register(m.ImportIssue)
class ImportIssueAdmin(admin.ModelAdmin):
    list_display = ["job", "line", "field", "message"]
    raw_id_fields = ["job"]


class SlotInline(admin.TabularInline):
    model = m.Slot
    extra = 0
    raw_id_fields = ["annotator", "reserved_for"]
    readonly_fields = ["index", "state", "locked_until", "progress", "order_key"]


@admin.register(m.Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "priority", "completed", "created_at"]
    list_filter = ["kind", "project"]
    raw_id_fields = ["response", "response_b"]
    inlines = [SlotInline]
    show_full_result_count = False


@admin.register(m.Slot)
class SlotAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "index", "state", "annotator", "reserved_for", "locked_until"]
    list_filter = ["state"]
    raw_id_fields = ["task", "annotator", "reserved_for"]
    show_full_result_count = False


@admin.register(m.Skip)
class SkipAdmin(admin.ModelAdmin):
    list_display = ["task", "annotator", "skipped_at"]
    raw_id_fields = ["task"]


@admin.register(m.Adjudication)
class AdjudicationAdmin(SimpleHistoryAdmin):
    list_display = ["task", "lead", "verdict", "choice", "updated_at"]
    raw_id_fields = ["task"]
