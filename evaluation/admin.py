from django.contrib import admin

from . import models as m


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CaseInline(ReadOnlyInline):
    model = m.EvalCase
    fields = ["position", "external_id", "categories", "turn_depth"]


@admin.register(m.EvalSuite)
class EvalSuiteAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "project", "source", "case_count", "created_at"]
    list_filter = ["project", "source"]
    search_fields = ["name"]
    readonly_fields = ["content_hash", "stats", "source_detail", "case_count", "created_at", "created_by"]
    inlines = [CaseInline]


@admin.register(m.EvalCase)
class EvalCaseAdmin(admin.ModelAdmin):
    list_display = ["external_id", "suite", "position", "turn_depth"]
    list_select_related = ["suite"]
    raw_id_fields = ["suite", "conversation"]
    search_fields = ["external_id"]
    show_full_result_count = False


@admin.register(m.EvalRun)
class EvalRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "model_version",
        "suite",
        "source",
        "status",
        "cases_done",
        "cases_total",
        "created_at",
    ]
    list_filter = ["project", "status", "source", "trigger"]
    list_select_related = ["project", "model_version", "suite"]
    raw_id_fields = ["suite", "model_version"]
    readonly_fields = [
        "summary",
        "training_overlap",
        "stats",
        "run_token",
        "attempts",
        "started_at",
        "heartbeat_at",
        "finished_at",
        "created_at",
    ]
    exclude = ["api_key"]


@admin.register(m.EvalResult)
class EvalResultAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "case", "tool_call_accuracy", "response_quality", "defect_count"]
    list_filter = ["tool_call_accuracy", "response_quality"]
    raw_id_fields = ["run", "case"]
    show_full_result_count = False


@admin.register(m.EvalBadcase)
class EvalBadcaseAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "case", "reason", "created_at"]
    raw_id_fields = ["run", "case", "response", "baseline_run"]


@admin.register(m.EvalSettings)
class EvalSettingsAdmin(admin.ModelAdmin):
    list_display = [
        "project",
        "default_suite",
        "auto_eval_after_training",
        "quality_margin",
        "perplexity_margin",
    ]


@admin.register(m.PromotionDecision)
class PromotionDecisionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "model_version", "action", "decided_by", "created_at"]
    list_filter = ["project", "action"]
    readonly_fields = ["conditions"]
