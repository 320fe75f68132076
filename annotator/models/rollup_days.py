"""Dashboard roll-up tables (maintained by annotator/rollups, read by annotator/dashboards): counters per
project and local day, model version, annotator or category, with split x status cells as columns."""

from django.db import models

from .core import Project, Split, Status

ROLLUP_STATUSES = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)  # what dashboards can count
ROLLUP_CELLS = tuple(f"{split}_{status}" for split in Split.values for status in ROLLUP_STATUSES)


def _rollup_counters(name: str, prefixes: tuple[str, ...], big: tuple[str, ...] = (), cells=ROLLUP_CELLS):
    """An abstract base with one counter column per (prefix, split, status) cell, e.g. n_train_approved.

    Splits and statuses are columns rather than key parts so that a filter on them picks columns
    and the tables stay a few tens of thousands of rows at a million labels.
    """
    attrs = {
        f"{p}_{c}": (models.BigIntegerField if p in big else models.IntegerField)(default=0)
        for p in prefixes
        for c in cells
    }
    attrs.update(__module__=__name__, Meta=type("Meta", (), {"abstract": True}))
    return type(name, (models.Model,), attrs)


class LabelDay(_rollup_counters("LabelDayCounters", ("n", "bad"))):
    """Counted labels and badcase labels per project, local day of submission and model version (0: none)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model_version = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "day", "model_version"], name="labelday_key")
        ]


class AnnotatorDay(_rollup_counters("AnnotatorDayCounters", ("n", "bad", "timed", "ms"), big=("ms",))):
    """Per annotator: labels, badcases, labels with a recorded time and milliseconds spent, per day and
    version."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    model_version = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "day", "model_version"], name="annotatorday_key"
            )
        ]


class CategoryDay(_rollup_counters("CategoryDayCounters", ("n",))):
    """Badcase labels per category: carrying it (under=False) or anything in its subtree (under=True)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model_version = models.IntegerField()
    category = models.IntegerField()
    under = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "model_version", "category", "under"], name="categoryday_key"
            )
        ]


class AnnotatorSeconds(_rollup_counters("AnnotatorSecondsCounters", ("n", "p"))):
    """Time-per-item histogram in one-second bins (capped): labels (n_) and comparisons (p_) with a time."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    seconds = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "annotator", "seconds"], name="annotatorseconds_key")
        ]


class AnnotatorSecondsDay(_rollup_counters("AnnotatorSecondsDayCounters", ("n", "p"))):
    """The same histogram per local day (of the label or comparison): the annotators page under a date
    filter. A separate table, so the unfiltered page still reads a few thousand rows."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    seconds = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "annotator", "seconds"], name="annotatorsecondsday_key"
            )
        ]


class ReviewDay(_rollup_counters("ReviewDayCounters", ("approve", "reject"))):
    """Review decisions on labels, per annotator of the label, local day of the review and model version."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    model_version = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "day", "model_version"], name="reviewday_key"
            )
        ]


class PreferenceDay(_rollup_counters("PreferenceDayCounters", ("n",))):
    """Pairwise choices per day, stored version pair (0: none), choice and side shown left."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    model_a = models.IntegerField()
    model_b = models.IntegerField()
    choice = models.CharField(max_length=10)
    left_side = models.CharField(max_length=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "model_a", "model_b", "choice", "left_side"],
                name="preferenceday_key",
            )
        ]


class AnnotatorPreferenceDay(
    _rollup_counters("AnnotatorPreferenceDayCounters", ("n", "timed", "ms"), big=("ms",))
):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    model_a = models.IntegerField()
    model_b = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "day", "model_a", "model_b"], name="annotatorprefday_key"
            )
        ]


class ResponseJudges(models.Model):
    """Counted labels per response: agreement statistics read only responses judged twice or more."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    response = models.IntegerField()
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "response"], name="responsejudges_key")]
        indexes = [models.Index(fields=["project", "n"], name="responsejudges_multi")]

    def __str__(self):
        return f"response {self.response}: {self.n} labels"


class GoldDay(_rollup_counters("GoldDayCounters", ("n",))):
    """Labels on items with a lead's gold verdict: (the label's verdict, the gold verdict) per annotator and
    day."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    model_version = models.IntegerField()
    verdict = models.CharField(max_length=20)
    gold = models.CharField(max_length=20)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "day", "model_version", "verdict", "gold"], name="goldday_key"
            )
        ]


class SkipDay(_rollup_counters("SkipDayCounters", ("n",), cells=tuple(Split.values))):
    """Skips per annotator, local day of the skip and model version of the skipped item, one column per
    split."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    annotator = models.IntegerField()
    day = models.DateField()
    model_version = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "day", "model_version"], name="skipday_key"
            )
        ]


PAIR_CELLS = tuple(
    f"{split}_{a}_{b}" for split in Split.values for a in ROLLUP_STATUSES for b in ROLLUP_STATUSES
)


class _PairKey(_rollup_counters("PairCounters", ("n",), cells=PAIR_CELLS)):
    """Two annotators who judged the same item (a < b) and their verdicts; columns: split and both labels'
    statuses."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.IntegerField()
    annotator_a = models.IntegerField()
    annotator_b = models.IntegerField()
    bad_a = models.BooleanField()
    bad_b = models.BooleanField()

    class Meta:
        abstract = True


class AgreementPair(_PairKey):
    """Items two annotators both judged (a < b), by their verdicts."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_version", "annotator_a", "annotator_b", "bad_a", "bad_b"],
                name="agreementpair_key",
            )
        ]


class AgreementPairDay(_PairKey):
    """The same pairs per local day of the later of the two labels (the day the pair was complete):
    agreement under a date filter counts the pairs completed inside it."""

    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "day", "model_version", "annotator_a", "annotator_b", "bad_a", "bad_b"],
                name="agreementpairday_key",
            )
        ]
