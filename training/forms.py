from django import forms
from django.core.exceptions import ValidationError

from annotator.models import ModelVersion, Split, TaxonomyCategory

from .models import DatasetSnapshot
from .snapshots import audit
from .snapshots.layouts import LAYOUTS
from .snapshots.spec import DPO_SOURCES, clean_spec

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
