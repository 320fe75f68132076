from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(SimpleHistoryAdmin):
    list_display = ["name", "project", "origin", "stage", "parent", "created_at"]
    list_filter = ["origin", "stage", "project"]
    search_fields = ["name"]
