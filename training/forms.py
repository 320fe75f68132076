from functools import lru_cache
from pathlib import Path

from django import forms
from django.core.exceptions import ValidationError

from annotator.model_lineage import check_folders
from annotator.models import ModelVersion, Split, TaxonomyCategory

from .finetune.params import PRESETS, STAGE_DATA
from .finetune.request import order_problems
from .models import DatasetSnapshot, TrainingJob
from .snapshots import audit
from .snapshots.layouts import LAYOUTS
from .snapshots.spec import DPO_SOURCES, ROUTING_CHOICES, clean_spec

MODE_CHOICES = [(audit.BLOCK, "block"), (audit.WARN, "warn"), (audit.OFF, "off")]
Kind = DatasetSnapshot.Kind


def check_field(key: str) -> str:
    return f"check_{key}"


class SnapshotForm(forms.Form):
    """The create page's form. Validation is clean_spec, as for the API; its errors
    come back on the matching fields."""

    kind = forms.ChoiceField(choices=Kind.choices, initial=Kind.SFT, widget=forms.RadioSelect)
    layout = forms.ChoiceField(required=False, help_text="The row format of the file.")
    include_submitted = forms.BooleanField(
        required=False, label="Also include submitted (not yet approved) work"
    )
    splits = forms.MultipleChoiceField(
        choices=Split.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        initial=[Split.TRAIN],
        help_text="None ticked: train for SFT/DPO, eval + holdout for eval.",
    )
    categories = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Any of these (a parent takes its children). None: all.",
    )
    model_versions = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Responses from any of these. None: all.",
    )
    date_from = forms.DateField(
        required=False, label="Labelled from", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="Labelled until", widget=forms.DateInput(attrs={"type": "date"})
    )
    include_reasonable = forms.BooleanField(
        required=False, label="Also approved “reasonable” responses as examples", help_text="SFT and eval."
    )
    sources = forms.MultipleChoiceField(
        choices=[
            ("preferences", "pairwise preferences"),
            ("corrections", "corrections vs. the original response"),
        ],
        required=False,
        initial=list(DPO_SOURCES),
        widget=forms.CheckboxSelectMultiple,
        label="DPO pairs from",
    )
    routing = forms.ChoiceField(
        choices=[
            ("taxonomy", "By the taxonomy: " + ROUTING_CHOICES["taxonomy"]),
            ("all", "All: " + ROUTING_CHOICES["all"]),
        ],
        initial="taxonomy",
        required=False,
        widget=forms.RadioSelect,
        label="Corrections",
        help_text="Each category's fix route is part of the taxonomy. Preferences are not routed.",
    )
    min_target_chars = forms.IntegerField(min_value=0, initial=10, label="Minimum target characters")
    max_tokens = forms.IntegerField(min_value=1, initial=4096, label="Maximum tokens per row")
    tokenizer = forms.ChoiceField(required=False, label="Count tokens with")
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why this snapshot (shown in the list).",
    )

    def __init__(self, project, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.fields["layout"].choices = [
            (Kind(kind).label, [(key, f"{key} — {text}") for key, text in layouts.items()])
            for kind, layouts in LAYOUTS.items()
        ]
        cats = list(
            TaxonomyCategory.objects.filter(project=project).only("pk", "name", "parent_id", "position")
        )
        by_parent: dict = {}
        for c in cats:
            by_parent.setdefault(c.parent_id, []).append(c)
        choices = []

        def walk(parent, depth):
            for c in by_parent.get(parent, []):
                choices.append((str(c.pk), ("— " * depth) + c.name))
                walk(c.pk, depth + 1)

        walk(None, 0)
        self.fields["categories"].choices = choices
        versions = list(
            ModelVersion.objects.filter(project=project).only("pk", "name", "path").order_by("name")
        )
        self.fields["model_versions"].choices = [(str(v.pk), v.name) for v in versions]
        self.fields["tokenizer"].choices = [("", "an estimate (~4 characters per token)")] + [
            (str(v.pk), f"the tokenizer of {v.name}") for v in versions if v.path
        ]
        for check in audit.CHECKS:
            self.fields[check_field(check.key)] = forms.ChoiceField(
                choices=MODE_CHOICES,
                initial=check.default,
                label=check.title,
                help_text=check.description,
                required=False,
            )
            self.fields[check_field(check.key)].kinds = check.kinds

    def check_fields(self):
        return [(self[check_field(c.key)], " ".join(c.kinds)) for c in audit.CHECKS]

    def request_data(self) -> dict:
        """The cleaned form as a clean_spec request."""
        d = self.cleaned_data
        kind = d.get("kind") or Kind.SFT
        return {
            "kind": kind,
            "layout": d.get("layout") if d.get("layout") in LAYOUTS.get(kind, {}) else None,
            "note": d.get("note", ""),
            "filters": {
                "include_submitted": d.get("include_submitted", False),
                "splits": d.get("splits") or None,
                "categories": d.get("categories") or [],
                "model_versions": d.get("model_versions") or [],
                "date_from": d.get("date_from"),
                "date_to": d.get("date_to"),
                **(
                    {"sources": d.get("sources") or []}
                    if kind == Kind.DPO
                    else {"include_reasonable": d.get("include_reasonable", False)}
                ),
                **({"routing": d.get("routing") or None} if kind != Kind.EVAL else {}),
            },
            "audit": {
                "checks": {
                    c.key: d[check_field(c.key)] for c in audit.checks_for(kind) if d.get(check_field(c.key))
                },
                "min_target_chars": d.get("min_target_chars"),
                "max_tokens": d.get("max_tokens"),
                "tokenizer": d.get("tokenizer") or None,
            },
        }

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.spec = clean_spec(self.project, self.request_data())
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                field = key.split(".")[-1]
                if key.startswith("audit.checks."):
                    field = check_field(field)
                if key == "filters.sources" and "sources" not in self.fields:
                    field = None
                self.add_error(field if field in self.fields else None, messages)
        return cleaned


# --- the new-job form's defaults ---------------------------------------------------------------

STAGES = ("sft", "dpo", "judge")
NOT_A_START = (ModelVersion.Origin.JUDGE, ModelVersion.Origin.EXTERNAL)


@lru_cache(maxsize=1)
def default_preset() -> str:
    """The preset a form pre-selects: lora-r8 (a real model on a GPU) where this machine has CUDA, else
    demo-tiny (tuned for the offline demo model on a CPU core)."""
    from inference.loading import pick_device

    return "lora-r8" if pick_device("auto").startswith("cuda") else "demo-tiny"


def as_pk(raw) -> int | None:
    raw = str(raw or "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


class JobChoices:
    """What the new-job form offers, and what it pre-selects for each stage so that Launch works at once:
    the newest ready snapshot the stage trains on, and a start version whose folders load (for SFT and a
    judge a base model; for DPO one with an SFT stage in its lineage). `base`: the version to start from
    when it was named (?base=<id>, e.g. "Train DPO on this model")."""

    def __init__(self, project, base=None):
        self.versions = list(ModelVersion.objects.filter(project=project).order_by("name"))
        ready = DatasetSnapshot.objects.filter(project=project, status=DatasetSnapshot.State.READY)
        self.snapshots = list(ready.order_by("-id"))
        self.loadable = {v.pk for v in self.versions if v.origin not in NOT_A_START and not check_folders(v)}
        wanted = as_pk(base)
        self.base = next((v for v in self.versions if v.pk == wanted), None)

    def start_version(self, stage: str):
        if self.base is not None:
            return self.base
        newest_first = sorted((v for v in self.versions if v.pk in self.loadable), key=lambda v: -v.pk)
        if stage == TrainingJob.Stage.DPO:
            return next((v for v in newest_first if not order_problems(stage, v, False)), None)
        return next((v for v in newest_first if v.origin == ModelVersion.Origin.BASE), None) or next(
            iter(newest_first), None
        )

    def train_snapshot(self, stage: str):
        kind, layouts = STAGE_DATA[stage]
        return next(
            (
                s
                for s in self.snapshots
                if s.kind == kind and s.layout in layouts and s.file and Path(s.file.path).is_file()
            ),
            None,
        )

    def defaults(self, stage: str) -> dict:
        """The form's values for `stage` (ids as strings, as a posted form has them)."""
        base, snap = self.start_version(stage), self.train_snapshot(stage)
        missing = []
        if base is None:
            missing.append(
                "No model version with an SFT stage yet: run SFT first."
                if stage == TrainingJob.Stage.DPO
                else "No model version whose folder is on this machine yet: register a base model first."
            )
        if snap is None:
            missing.append(f"No ready {STAGE_DATA[stage][0].upper()} snapshot yet: build one under Datasets.")
        return {
            "stage": stage,
            "base_version": str(base.pk) if base else "",
            "train_snapshot": str(snap.pk) if snap else "",
            "missing": " ".join(missing),
        }

    def all_defaults(self) -> dict:
        """Every stage's defaults, for the script that switches them with the stage."""
        return {stage: self.defaults(stage) for stage in STAGES}

    def initial(self, query) -> dict:
        """The form of a GET: the defaults of ?stage= (SFT when absent), any field the query names kept."""
        stage = query.get("stage") if query.get("stage") in STAGES else TrainingJob.Stage.SFT
        form = {**self.defaults(stage), "preset": default_preset()}
        for key in ("name", "train_snapshot", "preset"):
            if query.get(key):
                form[key] = query.get(key)
        return form


def preset_value_text(value) -> str:
    """A preset's value as a box of the new-job form takes it (lists comma-separated)."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def preset_placeholders(fields) -> dict:
    """{preset: {stage: {field: placeholder}}}: what each override box of the new-job form uses when left
    empty, for the script that updates them with the preset and the stage. A field the stage has no use
    for (beta and loss_type outside DPO) says so."""

    def text(values, field):
        if field not in values:
            return "DPO only" if field in ("beta", "loss_type") else ""
        if field == "max_steps" and not values[field]:
            return "0 (the epochs decide)"
        return preset_value_text(values[field])

    return {
        preset: {stage: {f: text(values, f) for f in fields} for stage, values in stages.items()}
        for preset, stages in PRESETS.items()
    }
