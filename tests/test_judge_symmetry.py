"""The order-robust judge: asked in both orders, it decides only when both orders agree beyond its
margin, so the same pair asked the other way round can never get the opposite verdict."""

import math
import random

import pytest

from annotator.assignment import sync_tasks
from annotator.models import Role, Task
from loop import online
from training.demo_model import build_demo_model
from training.judge.calibration import averaged_brier, averaged_nll, fit_temperature
from training.judge.judges import (
    DEFAULT_MARGIN,
    MIRROR,
    UNSURE,
    LocalJudge,
    PairVerdict,
    Verdict,
    X,
    Y,
    decide,
    judge_pairs,
    sigmoid,
)
from training.judge.pairs import MIN_CALIBRATION_PAIRS, job_pairs
from training.judge.report import score_verdicts
from training.judge.suggestions import UNSURE_BOOST, suggest, suggestions_for
from training.models import JudgeSuggestion, ModelVersion

from .test_datasets_factories import conversation as make_conversation
from .test_datasets_factories import response

RIGHT = '<tool_call>{"name": "check_inventory", "arguments": {"sku": "%s"}}</tool_call>'
WRONG = "Yes, it is in stock."


def stock_context(i):
    return [
        {"role": "system", "content": "You are the sales assistant."},
        {"role": "user", "content": f"Is SKU-{i} in stock?"},
    ]


def test_swapping_the_pair_mirrors_the_verdict_for_any_probabilities():
    rng = random.Random(18)
    edges = [0.0, 1.0, 0.5, 0.5 + DEFAULT_MARGIN, 0.5 - DEFAULT_MARGIN, 0.55, 0.45, 0.6, 0.4]
    seen = set()
    for k in range(20000):
        a = rng.choice(edges) if k % 4 == 0 else rng.random()
        b = rng.choice(edges) if k % 5 == 0 else rng.random()
        margin = rng.choice([0.0, DEFAULT_MARGIN, 0.1, 0.25, rng.random() / 2])
        v = PairVerdict(a, b, margin=margin)
        there, back = v.verdict, v.swapped().verdict
        assert back == MIRROR[there], (a, b, margin)
        assert decide(b, a, margin) == MIRROR[decide(a, b, margin)]
        assert v.flips == v.swapped().flips
        assert math.isclose(v.prob + v.swapped().prob, 1.0)
        seen.add(there)
    assert seen == {X, Y, UNSURE}
    # the rule itself: both orders, each beyond the margin, for the same answer
    assert decide(0.7, 0.2, 0.1) == X and decide(0.2, 0.7, 0.1) == Y
    assert decide(0.9, 0.55, 0.1) == UNSURE  # the second order leans to y: no verdict
    assert decide(0.58, 0.45, 0.1) == UNSURE  # both lean to x, but not by the margin
    assert decide(0.5, 0.5, 0.0) == UNSURE  # even odds decide nothing, whatever the margin


class SlotBiasedJudge:
    """Prefers whatever is shown first, more so for longer prompts: the position bias the rule guards
    against. Its probabilities also depend on where a prompt sits in the batch."""

    margin = 0.0

    def verdicts(self, prompts):
        return [
            Verdict(prob_a=0.6 + 0.3 * ((len(m[1]["content"]) + i) % 7) / 7) for i, m in enumerate(prompts)
        ]


class ToolCallJudge:
    """Prefers the answer holding a tool call, in either slot (an order-robust stand-in)."""

    margin = DEFAULT_MARGIN

    def verdicts(self, prompts):
        out = []
        for m in prompts:
            a, b = m[1]["content"].split("[A]\n", 1)[1].split("\n\n[B]\n", 1)
            a_call, b_call = "<tool_call>" in a, "<tool_call>" in b.split("\n\nWhich")[0]
            p = 0.9 if a_call and not b_call else 0.1 if b_call and not a_call else 0.5
            out.append(Verdict(prob_a=p))
        return out


def test_judge_pairs_asks_the_same_prompts_whichever_way_round_the_pair_comes():
    pairs = [(stock_context(i), [], RIGHT % f"SKU-{i}", WRONG + " " * i) for i in range(9)]
    there = judge_pairs(SlotBiasedJudge(), pairs)
    back = judge_pairs(SlotBiasedJudge(), [(c, t, y, x) for c, t, x, y in pairs])
    for v, w in zip(there, back, strict=True):
        assert (w.x_first, w.y_first) == (v.y_first, v.x_first)  # exactly the swapped evidence
        assert w.verdict == MIRROR[v.verdict]
    # a judge that always prefers the first slot is unsure of every pair, never on one side
    assert {v.verdict for v in there} == {UNSURE} and all(v.flips for v in there)
    right = judge_pairs(ToolCallJudge(), pairs)
    assert [v.verdict for v in right] == [X] * 9 and not any(v.flips for v in right)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("symmetry-models") / "tiny"
    build_demo_model(str(path), seed=0, size="test", steps=2, log=lambda *a: None)  # any real model will do
    return str(path)


class CentredJudge(LocalJudge):
    """The untrained tiny model prefers the letter A on every prompt (pure position bias: the rule makes
    it unsure of everything). Shifted by a constant it leans both ways, so the verdicts below are not
    trivially "unsure"; every number still comes from the real model and its batches."""

    shift = None

    def logit_gaps(self, prompts):
        gaps, reasons = super().logit_gaps(prompts)
        if self.shift is None:
            self.shift = sorted(gaps)[len(gaps) // 2]
        return [g - self.shift for g in gaps], reasons


@pytest.mark.django_db
def test_a_real_tiny_model_judge_never_gives_opposite_verdicts_when_the_pair_is_swapped(project, tiny_dir):
    version = ModelVersion.objects.create(project=project, name="tiny-judge", path=tiny_dir, origin="base")
    judge = CentredJudge(version, device="cpu")
    answers = [RIGHT % "SKU-1", WRONG, "Let me check.", RIGHT % "sku1", "<think>hm</think>No."]
    pairs = [
        (stock_context(i), [], answers[j], answers[k])
        for i in range(3)
        for j in range(len(answers))
        for k in range(len(answers))
        if j != k
    ]
    swapped = [(c, t, y, x) for c, t, x, y in pairs]
    for margin in (0.0, DEFAULT_MARGIN):
        judge.margin = margin
        there, back = judge_pairs(judge, pairs), judge_pairs(judge, swapped)
        assert [w.verdict for w in back] == [MIRROR[v.verdict] for v in there]
        # mixed into one batch in another order, the numbers may move in the last bits; the verdicts
        # still never oppose
        mixed = judge_pairs(judge, swapped[::2] + pairs[1::2])
        half = len(pairs[::2])
        for i, v in enumerate(there):
            w = mixed[i // 2] if i % 2 == 0 else mixed[half + i // 2]
            same_side = MIRROR[w.verdict] if i % 2 == 0 else w.verdict  # about the same answer as v
            assert {v.verdict, same_side} != {X, Y}
    judge.margin = 0.0
    decided = [v.verdict for v in judge_pairs(judge, pairs)]
    assert decided.count(X) + decided.count(Y) > 0  # the test is not trivially "all unsure"


def test_the_evaluation_reports_coverage_decided_accuracy_and_the_averaged_calibration():
    v = [
        PairVerdict(0.9, 0.2, margin=0.1),  # right in both orders: decided, right
        PairVerdict(0.7, 0.6, margin=0.1),  # each order prefers the slot A: a flip, unsure
        PairVerdict(0.2, 0.8, margin=0.1),  # wrong in both orders: decided, wrong
        PairVerdict(0.58, 0.45, margin=0.1),  # right in both, not by the margin: unsure
    ]
    rep = score_verdicts(v)
    assert (rep.pairs, rep.decided, rep.margin) == (4, 2, 0.1)
    assert rep.coverage == 0.5 and rep.decided_accuracy == 0.5
    assert rep.symmetric_accuracy == (1 + 0.5 + 0 + 0.5) / 4
    scores = [1, 0.5, 0, 0.5]
    assert math.isclose(rep.symmetric_accuracy_se, math.sqrt(sum((s - 0.5) ** 2 for s in scores) / 4 / 4))
    assert rep.position_bias_rate == 0.25
    probs = [(0.9 + 0.8) / 2, (0.7 + 0.4) / 2, (0.2 + 0.2) / 2, (0.58 + 0.55) / 2]
    assert math.isclose(rep.averaged_brier, sum((1 - p) ** 2 for p in probs) / 4)
    bins = {}
    for p in probs:
        conf = max(p, 1 - p)
        bins.setdefault(min(9, int((conf - 0.5) * 20)), []).append((conf, 1.0 if p > 0.5 else 0.0))
    ece = sum(abs(sum(o for _, o in b) - sum(c for c, _ in b)) / 4 for b in bins.values())
    assert math.isclose(rep.averaged_ece, ece)
    assert sum(b["count"] for b in rep.bins) == 4 and sum(b["count"] for b in rep.single_order_bins) == 8


@pytest.mark.django_db
def test_leads_see_unsure_instead_of_a_guess_and_the_unsure_pair_moves_up(client, project, members):
    convs = [make_conversation(project, f"u-{i}", stock_context(i)) for i in range(2)]
    for i, c in enumerate(convs):
        response(c, raw=RIGHT % f"SKU-{i}", model="tiny-base")
        response(c, raw=WRONG, model="tiny-base")
    sync_tasks(project)
    judge = ModelVersion.objects.create(project=project, name="slot-judge", origin="judge")
    result = suggest(project, judge, judge=SlotBiasedJudge())
    assert (result["judged"], result["unsure"], result["disagree"]) == (2, 2, 0)
    task = Task.objects.filter(project=project, kind="compare").order_by("id").first()
    s = JudgeSuggestion.objects.get(judge=judge, response_a=task.response, response_b=task.response_b)
    assert s.verdict == "" and not s.position_consistent and task.priority == UNSURE_BOOST
    from annotator.assignment import next_task

    assert next_task(project, members[Role.LEAD], "compare").task_id == task.pk
    client.force_login(members[Role.LEAD])
    page = client.get(f"/p/{project.slug}/tasks/{task.pk}/").content.decode()
    assert "is <strong>unsure</strong> which answer is better" in page and "prefers the" not in page
    judges_page = client.get(f"/p/{project.slug}/training/judges/").content.decode()
    assert '<span class="pill">2 unsure</span>' in judges_page
    # a decided suggestion read the other way round is the mirror verdict
    JudgeSuggestion.objects.filter(pk=s.pk).update(verdict="a", prob_a=0.8)
    b, a = task.response_b_id, task.response_id
    assert suggestions_for(project, [(b, a)])[(b, a)].verdict == "b"


def test_the_online_ranker_scores_verdicts_not_the_order_it_asked_in():
    prompt = {"messages": stock_context(1), "tools": [], "expected": None}
    samples = [WRONG, RIGHT % "SKU-1", "Maybe."]
    assert online.rank_with_judge(SlotBiasedJudge(), prompt, samples) == [1.0, 1.0, 1.0]  # all unsure
    assert online.rank_with_judge(ToolCallJudge(), prompt, samples) == [0.5, 2.0, 0.5]


def test_the_temperature_is_fitted_on_the_averaged_probability():
    rng = random.Random(4)
    gaps = []
    for _ in range(4000):  # a judge twice as sure as it should be: the true P is sigmoid(gap / 2)
        first, second = rng.gauss(1.5, 2.0), rng.gauss(-1.5, 2.0)
        p = (sigmoid(first / 2) + 1 - sigmoid(second / 2)) / 2
        gaps.append((first, second) if rng.random() < p else (second, first))  # (winner first, loser first)
    fitted = fit_temperature(gaps)
    assert 1.6 < fitted < 2.5
    assert averaged_brier(gaps, fitted) < averaged_brier(gaps, 1.0)
    assert averaged_nll(gaps, fitted) < averaged_nll(gaps, 1.0)


def test_a_calibration_slice_is_kept_back_only_when_it_is_big_enough(tmp_path):
    import json as _json
    from types import SimpleNamespace

    def job_with(n):
        path = tmp_path / f"pairs-{n}.jsonl"
        rows = [
            {
                "prompt": stock_context(i),
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
            }
            for i in range(n)
        ]
        path.write_text("\n".join(_json.dumps(r) for r in rows) + "\n")
        snap = SimpleNamespace(file=SimpleNamespace(path=str(path)), name=f"pairs-{n}")
        return SimpleNamespace(train_snapshot=snap, eval_snapshot_id=None)

    train, calibration, held, _ = job_pairs(job_with(40))
    assert calibration == [] and len(train) + len(held) == 40
    train, calibration, held, source = job_pairs(job_with(1000))
    assert MIN_CALIBRATION_PAIRS <= len(calibration) < 120
    assert len(train) + len(calibration) + len(held) == 1000
    contexts = [{_json.dumps(p["context"]) for p in part} for part in (train, calibration, held)]
    assert not (contexts[0] & contexts[1] or contexts[0] & contexts[2] or contexts[1] & contexts[2])
    assert "20% of the pairs of pairs-1000" in source
