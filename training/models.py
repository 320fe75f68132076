from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords


class ModelVersion(models.Model):
    """A model the agent can run: a local base folder, or a base plus a LoRA adapter."""

    class Origin(models.TextChoices):
        BASE = "base", "base model"
        SFT = "sft", "SFT fine-tune"
        DPO = "dpo", "DPO fine-tune"
        IMPORTED = "imported", "imported responses only"
        EXTERNAL = "external", "external endpoint"

    class Stage(models.TextChoices):
        CANDIDATE = "candidate"
        PRODUCTION = "production"
        REJECTED = "rejected"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, blank=True, help_text="Local folder loadable with from_pretrained().")
    adapter_path = models.CharField(max_length=1000, blank=True, help_text="PEFT adapter folder, if any.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    origin = models.CharField(max_length=20, choices=Origin.choices, default=Origin.IMPORTED)
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.CANDIDATE)
    notes = models.TextField(blank=True, help_text="How it was made.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    history = HistoricalRecords()

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="modelversion_unique_name")]

    def __str__(self):
        return self.name

    def lineage(self) -> list["ModelVersion"]:
        """This version and its ancestors, base first."""
        chain, seen, node = [], set(), self
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            chain.append(node)
            node = node.parent
        return list(reversed(chain))
