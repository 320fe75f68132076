from django.contrib import admin

from .models import DatasetSnapshot


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
