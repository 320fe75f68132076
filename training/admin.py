from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import DatasetSnapshot, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(SimpleHistoryAdmin):
    list_display = ["name", "project", "origin", "stage", "parent", "created_at"]
    list_filter = ["origin", "stage", "project"]
    search_fields = ["name"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    """Read-only: snapshots are built by workers and never edited (delete and rebuild instead)."""

    list_display = ["__str__", "project", "layout", "status", "row_count", "created_by", "created_at"]
    list_filter = ["kind", "status", "project"]
    search_fields = ["sha256", "note"]
    list_select_related = ["project", "created_by"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
