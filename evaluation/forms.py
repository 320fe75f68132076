from django import forms

from annotator.model_lineage import check_folders
from annotator.models import ModelVersion, Split

from .loop import DEFAULT_PRIORITY, SCOPES
from .models import EvalRun, EvalSettings, EvalSuite
from .suites import default_suite


class SuiteForm(forms.Form):
    SOURCES = [
        ("gold", "Gold JSONL: one case per line"),
        ("scenarios", "Regression scenarios JSONL: every assistant turn of each conversation is a case"),
        ("bfcl", "BFCL test records JSONL, with their possible-answers file as the gold"),
        ("snapshot", "An eval dataset snapshot (held-out, approved corrections and reasonable responses)"),
        ("conversations", "The project's held-out conversations (eval and holdout splits)"),
        ("demo", "Demo domain held-out cases (synthetic sales agent)"),
    ]
    name = forms.CharField(max_length=200, help_text="Same name again = a new version of that suite.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    source = forms.ChoiceField(choices=SOURCES, widget=forms.RadioSelect, initial="gold")
    file = forms.FileField(required=False, help_text="For gold, scenario and BFCL suites.")
    answers_file = forms.FileField(required=False, label="BFCL possible answers")
    snapshot = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    demo_cases = forms.IntegerField(min_value=1, max_value=5000, initial=100, required=False)
    demo_seed = forms.IntegerField(initial=0, required=False)
    demo_split = forms.ChoiceField(
        choices=[("seen", "seen phrasings"), ("unseen", "unseen phrasings")], initial="seen", required=False
    )

    def __init__(self, *args, snapshots=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].choices = [("", "—")] + [
            (s.pk, f"{s.name} · {s.row_count} rows · {s.created_at:%Y-%m-%d}") for s in snapshots
        ]

    def clean(self):
        data = super().clean()
        source = data.get("source")
        if source in ("gold", "scenarios", "bfcl") and not data.get("file"):
            self.add_error("file", "Upload the JSONL file.")
        if source == "snapshot" and not data.get("snapshot"):
            self.add_error("snapshot", "Pick a ready eval snapshot.")
        return data


def runnable_versions(project) -> list:
    """The project's agent versions a local run can load (their folders are here), newest first."""
    versions = ModelVersion.objects.filter(project=project).exclude(
        origin__in=[ModelVersion.Origin.JUDGE, ModelVersion.Origin.EXTERNAL]
    )
    return [v for v in versions.order_by("-id") if not check_folders(v)]


def run_initial(project, query) -> dict:
    """What the new-run form pre-selects so that Start works at once: the project's default suite (else
    its newest), the newest version a local run can load, the local runner and the project's generation
    settings; a suite, version or source the query names (?model_version=, from "Evaluate this model")
    wins."""
    cfg = EvalSettings.for_project(project)
    suite = default_suite(project)
    version = next(iter(runnable_versions(project)), None)
    initial = {
        "suite": suite.pk if suite else None,
        "model_version": version.pk if version else None,
        "source": EvalRun.Source.LOCAL,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": cfg.batch_size,
        "device": "auto",
    }
    for key in ("suite", "model_version", "source"):
        if query.get(key):
            initial[key] = query[key]
    return initial


class RunForm(forms.Form):
    suite = forms.ModelChoiceField(queryset=EvalSuite.objects.none())
    model_version = forms.ModelChoiceField(queryset=None, label="Model version")
    source = forms.ChoiceField(choices=EvalRun.Source.choices, widget=forms.RadioSelect, initial="local")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=32768, required=False)
    batch_size = forms.IntegerField(
        min_value=1,
        max_value=1024,
        required=False,
        help_text="Local generation: prompts per batch (left-padded, greedy).",
    )
    device = forms.ChoiceField(
        choices=[("auto", "auto (GPU when the worker has one)"), ("cpu", "cpu"), ("cuda", "cuda")],
        initial="auto",
        required=False,
    )
    base_url = forms.CharField(
        required=False,
        label="Endpoint base URL",
        max_length=1000,
        widget=forms.URLInput(attrs={"placeholder": "http://gpu-1:8000/v1"}),
        help_text="A public host, or one the server's MODEL_ENDPOINT_ALLOWED_HOSTS lists; "
        "redirects are not followed.",
    )
    endpoint_model = forms.CharField(required=False, label="Model name at the endpoint")
    api_key = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False),
        help_text="Sent as a Bearer token; wiped from the database when the run ends.",
    )
    concurrency = forms.IntegerField(min_value=1, max_value=64, initial=4, required=False)
    outputs = forms.FileField(
        required=False,
        label="Outputs JSONL",
        help_text='One line per case: {"id": case id, "output": raw model text} '
        '(or "message": assistant message; optional "finish_reason").',
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["suite"].queryset = EvalSuite.objects.filter(project=project).order_by("name", "-version")
        self.fields["suite"].label_from_instance = lambda s: f"{s.label} · {s.case_count} cases"
        self.fields["model_version"].queryset = ModelVersion.objects.filter(project=project).order_by("name")
        loadable = {v.pk for v in runnable_versions(project)}

        def label(m):
            folder = m.pk in loadable or m.origin == ModelVersion.Origin.JUDGE
            return f"{m.name} ({m.origin}, {m.stage})" + ("" if folder else " · no model folder here")

        self.fields["model_version"].label_from_instance = label

    def run_settings(self) -> dict:
        d = self.cleaned_data
        out = {
            k: d.get(k)
            for k in ("max_new_tokens", "batch_size", "device", "base_url", "concurrency")
            if d.get(k)
        }
        if d.get("endpoint_model"):
            out["model"] = d["endpoint_model"]
        return out


class LoopForm(forms.Form):
    scope = forms.ChoiceField(choices=list(SCOPES.items()), initial="failed", widget=forms.RadioSelect)
    baseline = forms.ModelChoiceField(
        queryset=EvalRun.objects.none(),
        required=False,
        help_text="For regressions: the run to compare against.",
    )
    split = forms.ChoiceField(
        choices=[("", "eval (held out)")] + [(s, s) for s in Split.values if s != "eval"],
        required=False,
        help_text="Split of newly created conversations. Held out, their "
        "labels do not leak into training sets built from the train split.",
    )
    priority = forms.IntegerField(initial=DEFAULT_PRIORITY, help_text="Higher comes first in the queue.")

    def __init__(self, *args, run=None, **kwargs):
        super().__init__(*args, **kwargs)
        if run is not None:
            self.fields["baseline"].queryset = (
                EvalRun.objects.filter(suite=run.suite, status=EvalRun.State.DONE)
                .exclude(pk=run.pk)
                .select_related("model_version")
            )
            self.fields["baseline"].label_from_instance = lambda r: f"run {r.pk}: {r.model_version.name}"


class SettingsForm(forms.ModelForm):
    class Meta:
        model = EvalSettings
        fields = [
            "default_suite",
            "auto_eval_after_training",
            "quality_margin",
            "perplexity_margin",
            "require_significance",
            "max_new_tokens",
            "batch_size",
        ]

    # typed in points, as the training guard's limit reads; stored (and in the API) as a fraction of 1
    quality_margin = forms.FloatField(
        label="Quality margin (points)",
        min_value=0,
        max_value=100,
        help_text="How many points of response quality a candidate may lose against production: "
        "2 means quality may drop at most 2 points.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_suite"].queryset = EvalSuite.objects.filter(project=self.instance.project)
        if not self.is_bound:
            self.initial["quality_margin"] = round(self.instance.quality_margin * 100, 4)

    def clean_quality_margin(self):
        return self.cleaned_data["quality_margin"] / 100

    def clean_perplexity_margin(self):
        v = self.cleaned_data["perplexity_margin"]
        if not 0 <= v <= 10:
            raise forms.ValidationError("A fraction from 0 to 10 (0.05 = +5%).")
        return v


class DecisionForm(forms.Form):
    suite = forms.ModelChoiceField(queryset=EvalSuite.objects.none(), required=False)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, project=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["suite"].queryset = EvalSuite.objects.filter(project=project)
        self.fields["suite"].label_from_instance = lambda s: f"{s.label} · {s.case_count} cases"
