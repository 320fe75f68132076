"""Agreement roll-up tables (maintained by annotator/rollups, read by annotator/dashboards/agreement.py)."""

from django.db import models

from .core import Project, Split
from .rollup_days import ROLLUP_STATUSES

# --- agreement roll-ups -------------------------------------------------------------------------
#
# Agreement units are responses (verdicts) and (response a, response b) pairs (preferences); a unit's
# composition depends on which label statuses the page counts, so these roll-ups are keyed by the
# status set as a bit mask (submitted 1, approved 2, rejected 4; 1..7) and hold, per mask, what the
# agreement page groups: units by (judges, unreasonable verdicts), units by (category, judges, judges
# who chose it), preference units by their choice counts. Columns: the unit's split. A unit's labels
# fall on different days: it is filed under the local day of its last one (the day it was complete),
# NO_DAY when one of them has no submission time; a date filter counts the units completed inside it.
# Annotator pairs likewise, in AgreementPairDay, under the day of the later of the two labels.

SPLIT_COLUMNS = tuple(f"n_{s}" for s in Split.values)


def status_mask(statuses) -> int:
    return sum(1 << i for i, s in enumerate(ROLLUP_STATUSES) if s in statuses)


MASKS = range(1, 1 << len(ROLLUP_STATUSES))


def _split_counters(name):
    attrs = {c: models.IntegerField(default=0) for c in SPLIT_COLUMNS}
    attrs.update({"__module__": __name__, "Meta": type("Meta", (), {"abstract": True})})
    return type(name, (models.Model,), attrs)


class AgreementUnit(_split_counters("AgreementUnitCounters")):
    """Responses judged two or more times (among labels of the status mask) by (judges, unreasonable
    verdicts)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_version = models.IntegerField()
    judges = models.IntegerField()
    bad = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "statuses", "day", "model_version", "judges", "bad"],
                name="agreementunit_key",
            )
        ]


class AgreementCategory(_split_counters("AgreementCategoryCounters")):
    """Responses judged two or more times by (category, judges, judges who chose the category, k >= 1)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_version = models.IntegerField()
    category = models.IntegerField()
    judges = models.IntegerField()
    chose = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "statuses", "day", "model_version", "category", "judges", "chose"],
                name="agreementcategory_key",
            )
        ]


class PreferenceUnit(_split_counters("PreferenceUnitCounters")):
    """(response a, response b) pairs compared two or more times, by how many chose a, b, tie, both bad."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_a = models.IntegerField()
    model_b = models.IntegerField()
    c_a = models.IntegerField()
    c_b = models.IntegerField()
    c_tie = models.IntegerField()
    c_both_bad = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "project",
                    "statuses",
                    "day",
                    "model_a",
                    "model_b",
                    "c_a",
                    "c_b",
                    "c_tie",
                    "c_both_bad",
                ],
                name="preferenceunit_key",
            )
        ]


class AgreementItem(models.Model):
    """One row per split response (0 < unreasonable < judges) and status mask: the "items driving
    disagreement" list reads the top of the score index. Not a counter: a response's rows are
    recomputed whenever one of its labels changes (refresh_items) and by rebuild."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    response = models.IntegerField()
    statuses = models.SmallIntegerField()
    model_version = models.IntegerField()
    split = models.CharField(max_length=10)
    judges = models.IntegerField()
    bad = models.IntegerField()
    score = models.IntegerField()  # split judge pairs: (judges - bad) * bad
    last = models.DateTimeField(null=True)

    class Meta:
        app_label = "annotator"
        constraints = [
            models.UniqueConstraint(fields=["project", "response", "statuses"], name="agreementitem_key")
        ]
        indexes = [
            models.Index(
                "project",
                "statuses",
                models.F("score").desc(),
                models.F("last").desc(),
                "response",
                name="agreementitem_top",
            )
        ]

    def __str__(self):
        return f"response {self.response}: {self.bad} of {self.judges} unreasonable"
