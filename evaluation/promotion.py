"""The promotion gate: which model version a project may call "production".

A candidate may become production only if, on the chosen suite (the project's default
suite unless another is named):

1. it has a finished run there, and that suite is not part of its training data;
2. it beats the current production version on tool_call_accuracy (strictly; with
   ``require_significance`` also McNemar p < 0.05 on the paired cases);
3. it loses at most ``quality_margin`` on response_quality;
4. its general-text perplexity rises at most ``perplexity_margin`` (relative).

The first promotion in a project (no production version yet) needs only (1). Each
condition is reported with its numbers, so the page says exactly which one failed.
Production is per project: promoting demotes the previous production version to
candidate, under a lock on the project row, and every decision is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from annotator.models import Project

from .comparison import _paired, _test
from .models import EvalRun, EvalSettings, EvalSuite, PromotionDecision
from .suites import overlap_of

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"


@dataclass
class Condition:
    key: str
    label: str
    status: str
    detail: str
    blocking: bool = True

    @property
    def ok(self) -> bool:
        return self.status == PASS or (self.status == UNKNOWN and not self.blocking)

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "label": self.label,
            "status": self.status,
            "detail": self.detail,
            "blocking": self.blocking,
        }


@dataclass
class Gate:
    candidate: object
    suite: EvalSuite | None
    production: object | None
    candidate_run: EvalRun | None = None
    production_run: EvalRun | None = None
    conditions: list[Condition] = field(default_factory=list)
    test: dict | None = None

    @property
    def ok(self) -> bool:
        return bool(self.conditions) and all(c.ok for c in self.conditions)

    @property
    def failed(self) -> list[Condition]:
        return [c for c in self.conditions if not c.ok]

    def as_dict(self) -> dict:
        return {
            "candidate": self.candidate.pk,
            "production": self.production.pk if self.production else None,
            "suite": self.suite.pk if self.suite else None,
            "candidate_run": self.candidate_run.pk if self.candidate_run else None,
            "production_run": self.production_run.pk if self.production_run else None,
            "ok": self.ok,
            "conditions": [c.as_dict() for c in self.conditions],
            "mcnemar": self.test,
        }


class GateFailed(ValidationError):
    def __init__(self, gate: Gate):
        self.gate = gate
        super().__init__({"gate": [f"{c.label}: {c.detail}" for c in gate.failed]})


def production_version(project):
    from annotator.models import ModelVersion

    return (
        ModelVersion.objects.filter(project=project, stage=ModelVersion.Stage.PRODUCTION)
        .order_by("-id")
        .first()
    )


def latest_run(model_version, suite) -> EvalRun | None:
    return (
        EvalRun.objects.filter(model_version=model_version, suite=suite, status=EvalRun.State.DONE)
        .order_by("-finished_at", "-id")
        .first()
    )


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def check_gate(candidate, suite: EvalSuite | None = None) -> Gate:
    project = candidate.project
    cfg = EvalSettings.for_project(project)
    suite = suite or cfg.default_suite
    production = production_version(project)
    gate = Gate(candidate, suite, production)
    add = gate.conditions.append
    if production is not None and production.pk == candidate.pk:
        add(
            Condition("stage", "Not already production", FAIL, f"{candidate.name} is the production version.")
        )
        return gate
    if suite is None:
        add(
            Condition(
                "suite",
                "A suite to judge on",
                FAIL,
                "No suite chosen and the project has no default suite (set one in the eval settings).",
            )
        )
        return gate
    gate.candidate_run = cand_run = latest_run(candidate, suite)
    if cand_run is None:
        add(
            Condition(
                "candidate_run",
                "Candidate evaluated",
                FAIL,
                f"{candidate.name} has no finished run on {suite.label}: run it first.",
            )
        )
        return gate
    add(
        Condition(
            "candidate_run",
            "Candidate evaluated",
            PASS,
            f"run {cand_run.pk} ({cand_run.summary.get('n', 0)} cases).",
        )
    )
    overlap = overlap_of(suite, candidate)
    if overlap.get("cases"):
        names = ", ".join(s["name"] for s in overlap.get("snapshots", []))
        add(
            Condition(
                "overlap",
                "Suite is held out from its training data",
                FAIL,
                f"{overlap['cases']} case(s) of {suite.label} are in the model's training data ({names}): "
                "this suite cannot judge it.",
            )
        )
    elif overlap.get("checked"):
        add(
            Condition(
                "overlap",
                "Suite is held out from its training data",
                PASS,
                f"no case found in its training snapshots ({', '.join(overlap['checked'])}).",
            )
        )
    else:
        add(
            Condition(
                "overlap",
                "Suite is held out from its training data",
                UNKNOWN,
                overlap.get("note") or "no training snapshots are recorded for this model: not checked.",
                blocking=False,
            )
        )
    if production is None:
        add(
            Condition(
                "production",
                "Beats production",
                PASS,
                "No production version yet: the first promotion needs only a finished run.",
            )
        )
        return gate
    gate.production_run = prod_run = latest_run(production, suite)
    if prod_run is None:
        add(
            Condition(
                "production_run",
                "Production evaluated on the same suite",
                FAIL,
                f"the production version {production.name} has no finished run on {suite.label}: "
                "run it there first, so both are read against the same cases.",
            )
        )
        return gate

    data = _paired([cand_run.pk, prod_run.pk])
    gate.test = _test(data[prod_run.pk], data[cand_run.pk], lambda row: row[0])
    c_acc = (cand_run.summary.get("tool_call_accuracy") or {}).get("value")
    p_acc = (prod_run.summary.get("tool_call_accuracy") or {}).get("value")
    p_text = f"McNemar p = {gate.test['p_value']:.3g} ({gate.test['c']} fixed, {gate.test['b']} broken)"
    if c_acc is None or p_acc is None:
        add(
            Condition(
                "tool_call_accuracy", "Beats production on tool_call_accuracy", FAIL, "a run has no cases."
            )
        )
    else:
        better = c_acc > p_acc
        add(
            Condition(
                "tool_call_accuracy",
                "Beats production on tool_call_accuracy",
                PASS if better else FAIL,
                f"{_pct(c_acc)} vs {_pct(p_acc)} ({100 * (c_acc - p_acc):+.1f} points; {p_text}).",
            )
        )
        if cfg.require_significance:
            sig = better and gate.test["significant"]
            add(
                Condition(
                    "significance", "Gain is significant (p < 0.05)", PASS if sig else FAIL, p_text + "."
                )
            )

    c_q = (cand_run.summary.get("response_quality") or {}).get("value")
    p_q = (prod_run.summary.get("response_quality") or {}).get("value")
    margin = cfg.quality_margin
    if c_q is None or p_q is None:
        add(Condition("response_quality", "Keeps response_quality", FAIL, "a run has no cases."))
    else:
        ok = c_q >= p_q - margin - 1e-12
        add(
            Condition(
                "response_quality",
                f"Loses at most {100 * margin:.1f} points of response_quality",
                PASS if ok else FAIL,
                f"{_pct(c_q)} vs {_pct(p_q)} ({100 * (c_q - p_q):+.1f} points).",
            )
        )

    c_ppl, p_ppl = cand_run.perplexity, prod_run.perplexity
    pm = cfg.perplexity_margin
    label = f"General-text perplexity rises at most {100 * pm:.0f}%"
    same_texts = (cand_run.stats or {}).get("perplexity_texts") == (prod_run.stats or {}).get(
        "perplexity_texts"
    )
    if c_ppl is None or p_ppl is None:
        who = (
            "either run"
            if c_ppl is None and p_ppl is None
            else ("the candidate's run" if c_ppl is None else "the production run")
        )
        add(
            Condition(
                "perplexity",
                label,
                UNKNOWN,
                f"not measured for {who} (outputs from an endpoint or a file): not checked.",
                blocking=False,
            )
        )
    elif not same_texts:
        add(
            Condition(
                "perplexity",
                label,
                UNKNOWN,
                "the runs measured different general-text sets: not "
                "comparable; run both again after changing the texts.",
                blocking=False,
            )
        )
    else:
        ratio = c_ppl / p_ppl
        add(
            Condition(
                "perplexity",
                label,
                PASS if ratio <= 1 + pm + 1e-12 else FAIL,
                f"{c_ppl:.2f} vs {p_ppl:.2f} (×{ratio:.3f}).",
            )
        )
    return gate


def _decide(candidate, action, user, gate: Gate | None, note: str, previous=None) -> PromotionDecision:
    return PromotionDecision.objects.create(
        project=candidate.project,
        model_version=candidate,
        action=action,
        previous_production=previous,
        suite=gate.suite if gate else None,
        run=gate.candidate_run if gate else None,
        baseline_run=gate.production_run if gate else None,
        conditions=[c.as_dict() for c in gate.conditions] if gate else [],
        note=note,
        decided_by=user if getattr(user, "pk", None) else None,
    )


def promote(candidate, user=None, suite: EvalSuite | None = None, note: str = "") -> PromotionDecision:
    """Make the candidate the project's production version if the gate passes; raise GateFailed if not."""
    from annotator.models import ModelVersion

    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=candidate.project_id).first()  # one promotion at a time
        candidate.refresh_from_db()
        gate = check_gate(candidate, suite)
        if not gate.ok:
            raise GateFailed(gate)
        previous = gate.production
        for mv in ModelVersion.objects.filter(
            project_id=candidate.project_id, stage=ModelVersion.Stage.PRODUCTION
        ):
            mv.stage = ModelVersion.Stage.CANDIDATE
            mv.save(update_fields=["stage"])
        candidate.stage = ModelVersion.Stage.PRODUCTION
        candidate.save(update_fields=["stage"])
        return _decide(candidate, PromotionDecision.Action.PROMOTE, user, gate, note, previous)


def reject(candidate, user=None, suite: EvalSuite | None = None, note: str = "") -> PromotionDecision:
    """Mark a version rejected (a killed branch); the production version cannot be rejected."""
    from annotator.models import ModelVersion

    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=candidate.project_id).first()
        candidate.refresh_from_db()
        if candidate.stage == ModelVersion.Stage.PRODUCTION:
            raise ValidationError(
                {"stage": "the production version cannot be rejected; promote another first"}
            )
        gate = (
            check_gate(candidate, suite)
            if (suite or EvalSettings.for_project(candidate.project).default_suite)
            else None
        )
        candidate.stage = ModelVersion.Stage.REJECTED
        candidate.save(update_fields=["stage"])
        return _decide(candidate, PromotionDecision.Action.REJECT, user, gate, note)
