from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from . import models as m


@admin.register(m.Project)
class ProjectAdmin(SimpleHistoryAdmin):
    list_display = ["name", "slug", "overlap", "created_at"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]


@admin.register(m.ModelVersion)
class ModelVersionAdmin(SimpleHistoryAdmin):
    list_display = ["name", "project", "origin", "stage", "parent", "created_at"]
    list_filter = ["origin", "stage", "project"]
    search_fields = ["name"]


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
    list_display = ["name", "project", "parent", "active", "position"]
    list_filter = ["project", "active"]
    search_fields = ["name"]


class CorrectionInline(admin.StackedInline):
    model = m.Correction
    extra = 0


@admin.register(m.Label)
class LabelAdmin(SimpleHistoryAdmin):
    list_display = ["id", "response", "annotator", "verdict", "status", "updated_at"]
    list_filter = ["status", "verdict"]
    raw_id_fields = ["response"]
    inlines = [CorrectionInline]
    show_full_result_count = False


@admin.register(m.Correction)
class CorrectionAdmin(SimpleHistoryAdmin):
    raw_id_fields = ["label"]


@admin.register(m.Preference)
class PreferenceAdmin(SimpleHistoryAdmin):
    list_display = ["id", "response_a", "response_b", "annotator", "choice", "status"]
    list_filter = ["status", "choice"]
    raw_id_fields = ["response_a", "response_b"]


@admin.register(m.Review)
class ReviewAdmin(SimpleHistoryAdmin):
    list_display = ["id", "reviewer", "decision", "label", "preference", "created_at"]
    raw_id_fields = ["label", "preference"]


class ImportIssueInline(admin.TabularInline):
    model = m.ImportIssue
    extra = 0
    max_num = 0
    readonly_fields = ["line", "field", "message"]


@admin.register(m.ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "original_name", "status", "lines_read", "conversations_created", "error_count"]
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
