"""The pairwise judge (training, evaluation, suggestions) and online DPO rounds, on the tiny test model."""

import json
import math

import pytest
from django.core.exceptions import ValidationError

from annotator.assignment import sync_tasks
from annotator.models import Membership, Role, Slot, Task
from evaluation.suites import create_suite
from jobs import lifecycle
from loop import online
from training import demo_domain
from training.demo_model import build_demo_model
from training.finetune.params import DEFAULT_GUARD, JUDGE_GUARD
from training.finetune.request import create_job
from training.finetune.run import run_job
from training.judge.judges import EndpointJudge, PairVerdict, Verdict, judge_pairs, load_judge
from training.judge.pairs import read_pairs, split_pairs, training_rows
from training.judge.prompt import answer_text
from training.judge.report import human_agreement, score_verdicts
from training.judge.suggestions import DISAGREE_BOOST, suggest
from training.models import (
    DatasetSnapshot,
    JudgeEvaluation,
    JudgeSuggestion,
    JudgeVerdictSuggestion,
    ModelVersion,
    OnlinePair,
    OnlineRound,
    OnlineRun,
    TrainingJob,
)
from training.snapshots.build import build_snapshot, create_snapshot

from .test_datasets_factories import conversation as make_conversation
from .test_datasets_factories import label, preference, response

RIGHT = '<tool_call>{"name": "check_inventory", "arguments": {"sku": "%s"}}</tool_call>'
WRONG = "Yes, it is in stock."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("judge-models") / "tiny"
    build_demo_model(str(path), seed=0, size="test", steps=20, log=lambda *a: None)
    return str(path)


@pytest.fixture
def base(project, tiny_dir):
    return ModelVersion.objects.create(project=project, name="tiny-base", path=tiny_dir, origin="base")


def stock_context(i):
    return [
        {"role": "system", "content": "You are the sales assistant."},
        {"role": "user", "content": f"Is SKU-{i} in stock?"},
    ]


@pytest.fixture
def voted(project, members, base):
    """12 contexts, each with a right and a wrong answer; two annotators prefer the right one
    (annotator2 errs on two pairs), so the human-human agreement is 10/12."""
    ann1, ann2 = members[Role.ANNOTATOR], members["annotator2"]
    pairs = []
    for i in range(12):
        conv = make_conversation(project, f"s-{i}", stock_context(i), split="train")
        good = response(conv, raw=RIGHT % f"SKU-{i}", model="tiny-base")
        bad = response(conv, raw=WRONG + f" ({i})", model="tiny-base")
        preference(good, bad, ann1, "a")
        preference(good, bad, ann2, "b" if i in (3, 7) else "a")
        pairs.append((conv, good, bad))
    return pairs


def dpo_of_preferences(project, user):
    snap = create_snapshot(
        project,
        user,
        {
            "kind": "dpo",
            "filters": {"sources": ["preferences"]},
            "audit": {"checks": {"label_conflict": "warn"}},
        },
        start=False,
    )
    snap = build_snapshot(snap.pk) or snap
    snap.refresh_from_db()
    assert snap.status == "ready", snap.message
    return snap


# --- figures, by hand -----------------------------------------------------------------------


def test_score_verdicts_by_hand():
    def verdict(p_first, p_second):  # P(x better) with x shown first, and with x shown second
        return PairVerdict(x_first=p_first, y_first=1 - p_second)

    v = [
        verdict(0.9, 0.7),  # right in both orders
        verdict(0.6, 0.2),  # flips with the order: averaged 0.4, wrong
        verdict(0.3, 0.1),  # wrong in both orders
        verdict(0.8, 0.5),
    ]  # averaged 0.65, right; the 0.5 is a tie
    rep = score_verdicts(v)
    assert rep.pairs == 4
    assert rep.accuracy == 0.5 and math.isclose(rep.accuracy_se, math.sqrt(0.25 / 4))
    assert rep.single_order_accuracy == 4 / 8  # 0.9 0.7 0.6 0.8 over 0.5
    assert rep.position_bias_rate == 0.25  # only the second pair flips; a 0.5 names neither answer
    # first slot: pair1 (x first wins, y first loses) → 1; pair2: 1 + 1; pair3: 0 + 1; pair4: 1 + 0
    assert rep.first_position_rate == 5 / 8
    assert math.isclose(rep.brier, sum((1 - p) ** 2 for p in (0.9, 0.7, 0.6, 0.2, 0.3, 0.1, 0.8, 0.5)) / 8)
    # ECE: confidences .9 .7 .6 .8 .7 .9 .8 .5 with correctness 1 1 1 0 0 0 1 .5
    bins = {}
    for p in (0.9, 0.7, 0.6, 0.2, 0.3, 0.1, 0.8, 0.5):
        conf, ok = max(p, 1 - p), 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5
        k = min(9, int((conf - 0.5) * 20))
        bins.setdefault(k, []).append((conf, ok))
    ece = sum(
        abs(sum(o for _, o in b) / len(b) - sum(c for c, _ in b) / len(b)) * len(b) / 8 for b in bins.values()
    )
    assert math.isclose(rep.ece, ece)
    assert score_verdicts([]).accuracy is None


def test_training_rows_hold_both_orders_and_the_split_is_by_context():
    pair = {
        "context": stock_context(1),
        "tools": demo_domain.TOOLS,
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    rows = training_rows([pair])
    assert [r["completion"][0]["content"] for r in rows] == ["A", "B"]
    assert "[A]\ngood" in rows[0]["prompt"][1]["content"] and "[A]\nbad" in rows[1]["prompt"][1]["content"]
    assert "check_inventory" in rows[0]["prompt"][1]["content"]
    with_reason = training_rows([{**pair, "reason": "calls  the\ntool"}], reasons=True)
    assert with_reason[0]["completion"][0]["content"] == "calls the tool\nVerdict: A"
    many = [{**pair, "context": stock_context(i)} for i in range(200)]
    train, held = split_pairs(many + many)  # the same context twice lands on one side
    assert 20 < len(held) < 140 and len(train) + len(held) == 400
    assert not {json.dumps(p["context"]) for p in train} & {json.dumps(p["context"]) for p in held}


@pytest.mark.django_db
def test_human_agreement_counts_annotator_pairs_on_the_same_pair(project, voted, members, make_user):
    ceiling, items = human_agreement(project)
    assert items == 12 and math.isclose(ceiling, 10 / 12)
    third = make_user("third")
    Membership.objects.create(user=third, project=project, role=Role.ANNOTATOR)
    _conv, good, bad = voted[0]
    preference(bad, good, third, "b")  # the other way round, same winner
    ceiling, items = human_agreement(project)
    assert math.isclose(ceiling, (9 * 1 + 1 * 3 + 2 * 0) / (11 * 1 + 3)) and items == 12


# --- a judge job ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_judge_job_trains_on_both_orders_and_reports_against_held_out_humans(project, members, voted, base):
    snap = dpo_of_preferences(project, members[Role.LEAD])
    with pytest.raises(ValidationError) as exc:
        create_job(
            project,
            None,
            stage="judge",
            base_version=base,
            train_snapshot=snap,
            preset="demo-tiny",
            overrides={"beta": 0.1},
            start=False,
        )
    assert exc.value.message_dict["beta"] == ["only DPO jobs have a beta"]
    job = create_job(
        project,
        None,
        stage="judge",
        base_version=base,
        train_snapshot=snap,
        preset="demo-tiny",
        overrides={"max_steps": 4, "save_steps": 2},
        start=False,
    )
    job = run_job(job.pk)
    assert job.status == TrainingJob.State.SUCCEEDED, job.message
    judge = job.result_version
    assert judge.origin == ModelVersion.Origin.JUDGE and judge.parent == base
    ev = JudgeEvaluation.objects.get(judge=judge)
    _, held = split_pairs(read_pairs(snap.file.path))
    assert ev.pairs == len(held) > 0 and ev.job == job
    assert 0 <= ev.accuracy <= 1 and ev.position_bias_rate is not None and ev.brier is not None
    assert math.isclose(ev.human_agreement, 10 / 12) and ev.human_pairs == 12
    assert "held-out pairs: accuracy" in job.log_tail
    # the judge is a real model: its verdicts are probabilities that differ between pairs
    local = load_judge(judge)
    verdicts = judge_pairs(local, [(stock_context(i), [], RIGHT % f"SKU-{i}", WRONG) for i in range(3)])
    assert all(0 < v.p_first < 1 and 0 < v.p_second < 1 for v in verdicts)


@pytest.mark.django_db
def test_an_endpoint_judge_reads_the_last_letter(project):
    class Stub:
        def __init__(self, replies):
            self.replies, self.seen = replies, []

        def complete_many(self, items, max_tokens=128):
            from inference.client import Completion

            self.seen.extend(items)
            return [Completion(r, False, 3, 1) for r in self.replies]

    version = ModelVersion.objects.create(
        project=project,
        name="gpt-judge",
        origin="external",
        metadata={"base_url": "http://127.0.0.1:9/v1", "model": "judge"},
    )
    stub = Stub(["The first calls the tool.\nVerdict: A", "Verdict: A", "I cannot tell", "B"])
    judge = EndpointJudge(version, client=stub)
    out = judge_pairs(judge, [(stock_context(1), [], "x1", "y1"), (stock_context(2), [], "x2", "y2")])
    assert (out[0].p_first, out[0].p_second) == (1.0, 0.0) and not out[0].consistent  # always says A
    assert (out[1].p_first, out[1].p_second) == (0.5, 1.0)  # no letter: 0.5
    assert out[0].reason == "The first calls the tool."
    assert "[A]\nx1" in stub.seen[0][0][1]["content"] and "[A]\ny1" in stub.seen[1][0][1]["content"]
    assert isinstance(load_judge(version), EndpointJudge)


# --- suggestions ----------------------------------------------------------------------------


class FixedJudge:
    """Prefers whichever answer holds a tool call (a stand-in for a trained judge)."""

    def verdicts(self, prompts):
        out = []
        for m in prompts:
            text = m[1]["content"]
            a, b = text.split("[A]\n", 1)[1].split("\n\n[B]\n", 1)
            a_call, b_call = "<tool_call>" in a, "<tool_call>" in b.split("\n\nWhich")[0]
            out.append(
                Verdict(prob_a=0.9 if a_call and not b_call else 0.1 if b_call and not a_call else 0.5)
            )
        return out


@pytest.mark.django_db
def test_suggestions_reach_leads_not_blind_annotators_and_reorder_the_queue(client, project, members, base):
    ann = members[Role.ANNOTATOR]
    for i in range(3):
        conv = make_conversation(project, f"q-{i}", stock_context(i))
        response(conv, raw=RIGHT % f"SKU-{i}", model="tiny-base")
        response(conv, raw=WRONG, model="tiny-base")
    sync_tasks(project)
    tasks = list(
        Task.objects.filter(project=project, kind="compare").select_related("response", "response_b")
    )
    assert len(tasks) == 3
    # on the first pair the human picked the answer without a call: the judge disagrees
    t0 = tasks[0]
    wrong_first = "a" if "<tool_call>" not in t0.response.raw_text else "b"
    preference(t0.response, t0.response_b, ann, wrong_first, status="submitted")
    judge = ModelVersion.objects.create(project=project, name="judge-1", origin="judge", parent=base)
    result = suggest(project, judge, judge=FixedJudge())
    assert {k: result[k] for k in ("judged", "disagree", "unsure")} == {
        "judged": 3,
        "disagree": 1,
        "unsure": 0,
    }
    assert result["responses_judged"] == 0  # nobody said which single answer is good yet: no reference
    s = JudgeSuggestion.objects.get(judge=judge, response_a=t0.response, response_b=t0.response_b)
    assert s.disagrees and s.human_choice == wrong_first and s.position_consistent
    t0.refresh_from_db()
    assert t0.priority == DISAGREE_BOOST
    assert set(Slot.objects.filter(task=t0).values_list("priority", flat=True)) == {DISAGREE_BOOST}
    assert suggest(project, judge, judge=FixedJudge())["judged"] == 0  # once per judge and pair
    # a second annotator gets the disputed pair first
    from annotator.assignment import next_task

    slot = next_task(project, members["annotator2"], "compare")
    assert slot.task_id == t0.pk
    # leads see the verdict on the disagreements page; annotators in blind mode never see it
    client.force_login(members[Role.LEAD])
    page = client.get(f"/p/{project.slug}/training/judges/").content.decode()
    assert "judge-1" in page
    client.force_login(members["annotator2"])
    compare = client.get(f"/p/{project.slug}/tasks/{t0.pk}/")
    assert compare.status_code == 200
    assert "judge" not in compare.content.decode().lower()


@pytest.mark.django_db
def test_single_responses_are_judged_against_a_known_good_answer(client, project, members, base):
    """A labelling task's response is compared with an answer the humans found reasonable in the same
    context: clearly worse suggests unreasonable. Disputes move up the queue; leads see the hint, blind
    annotators and the API's annotators do not."""
    ann, ann2, lead = members[Role.ANNOTATOR], members["annotator2"], members[Role.LEAD]
    convs = [make_conversation(project, f"v-{i}", stock_context(i)) for i in range(3)]
    right = [response(c, raw=RIGHT % f"SKU-{i}", model="tiny-base") for i, c in enumerate(convs)]
    wrong = [response(c, raw=WRONG, model="tiny-base") for c in convs]
    sync_tasks(project)
    label(right[0], ann, "reasonable", status="approved")
    label(wrong[0], ann2, "reasonable", status="submitted")  # the judge will dispute this one
    label(right[1], ann, "reasonable", status="approved")
    judge = ModelVersion.objects.create(project=project, name="judge-v", origin="judge", parent=base)
    result = suggest(project, judge, judge=FixedJudge())
    # judged: both answers of v-0 (each against the other) and v-1's wrong one (against v-1's right one);
    # v-1's right answer has no other good answer beside it and v-2 has no label at all
    assert {k: v for k, v in result.items() if k.startswith("responses_")} == {
        "responses_judged": 3,
        "responses_disagree": 1,
        "responses_unsure": 0,
        "responses_without_reference": 3,
    }
    disputed = JudgeVerdictSuggestion.objects.get(judge=judge, response=wrong[0])
    assert (disputed.reference_id, disputed.suggested, disputed.human_verdict, disputed.disagrees) == (
        right[0].pk,
        "unreasonable",
        "reasonable",
        True,
    )
    assert disputed.prob_better == pytest.approx(0.1)
    agreed = JudgeVerdictSuggestion.objects.get(judge=judge, response=right[0])
    assert (agreed.reference_id, agreed.suggested, agreed.disagrees) == (wrong[0].pk, "reasonable", False)
    fresh = JudgeVerdictSuggestion.objects.get(judge=judge, response=wrong[1])
    assert (fresh.suggested, fresh.human_verdict, fresh.disagrees) == ("unreasonable", "", False)
    task = Task.objects.get(kind="label", response=wrong[0])
    assert task.priority == DISAGREE_BOOST
    assert set(Slot.objects.filter(task=task).values_list("priority", flat=True)) == {DISAGREE_BOOST}
    assert Task.objects.get(kind="label", response=wrong[1]).priority == 0
    assert suggest(project, judge, judge=FixedJudge())["responses_judged"] == 0  # once per judge and response

    # leads see it on the labelling page and, once the humans split, on the disagreements page
    label(wrong[1], ann, "unreasonable", status="submitted")
    label(wrong[1], ann2, "reasonable", status="submitted")
    from annotator.assignment import next_task

    assert next_task(project, lead, "label").task_id == task.pk  # the disputed item comes first
    client.force_login(lead)
    page = client.get(f"/p/{project.slug}/tasks/{task.pk}/").content.decode()
    assert 'data-testid="verdict-hint"' in page and "worse than a known good answer" in page
    dis = client.get(f"/p/{project.slug}/disagreements/").content.decode()
    assert dis.count('data-testid="verdict-hint"') == 1
    judges_page = client.get(f"/p/{project.slug}/training/judges/").content.decode()
    assert "judge-v" in judges_page
    # per judge: 3 pairs judged, none disputed; 3 responses judged, 1 disputed
    assert '<td class="num">3</td>' in judges_page
    assert '<td class="num">3 <span class="pill rejected">1 disputed</span></td>' in judges_page
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def page_queries():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/p/{project.slug}/training/judges/").status_code == 200
        return len(ctx.captured_queries)

    one = page_queries()
    ModelVersion.objects.create(project=project, name="judge-w", origin="judge", parent=base)
    assert page_queries() == one  # the page reads its judges' counts in a fixed number of queries
    api = client.get(f"/api/judge-verdicts/?project__slug={project.slug}&disagrees=true").json()
    assert [r["response"] for r in api["results"]] == [wrong[0].pk]
    # annotators in blind mode never see a verdict, on the page or in the API
    client.force_login(ann2)
    other = Task.objects.get(kind="label", response=wrong[2])
    JudgeVerdictSuggestion.objects.create(
        project=project,
        judge=judge,
        response=wrong[2],
        reference=right[0],
        prob_better=0.1,
        suggested="unreasonable",
    )
    Task.objects.filter(pk=other.pk).update(priority=99)
    Slot.objects.filter(task=other).update(priority=99)
    assert next_task(project, ann2, "label").task_id == other.pk
    seen = client.get(f"/p/{project.slug}/tasks/{other.pk}/")
    assert seen.status_code == 200 and "verdict-hint" not in seen.content.decode()
    assert "judge" not in seen.content.decode().lower()
    assert client.get(f"/api/judge-verdicts/?project__slug={project.slug}").json()["results"] == []


# --- online DPO -----------------------------------------------------------------------------


@pytest.fixture
def labelled(project, members, base):
    """Train contexts the base answered, labelled and approved with the right answer as correction."""
    lead = members[Role.LEAD]
    cases = demo_domain.eval_prompts(8, seed=21)
    for i, c in enumerate(cases):
        conv = make_conversation(project, f"o-{i}", c["messages"], split="train", tools=c["tools"])
        resp = response(conv, raw="Let me check that for you.", model="tiny-base")
        label(resp, lead, verdict="unreasonable", status="approved", correction=c["expected"])
    records = [
        (
            i + 1,
            {
                "id": c["external_id"],
                "messages": c["messages"],
                "tools": c["tools"],
                "expected": c["expected"],
            },
        )
        for i, c in enumerate(demo_domain.eval_prompts(6, seed=77))
    ]
    suite, _ = create_suite(project, "held-out", records, source="gold")
    return suite


def online_run(project, base, suite, **kw):
    options = {"samples_per_prompt": 2, "max_prompts": 6, "max_new_tokens": 24, **kw.pop("options", {})}
    return online.create_run(
        project,
        None,
        start_version=base,
        eval_suite=suite,
        rounds=kw.pop("rounds", 1),
        options=options,
        preset="demo-tiny",
        overrides={"max_steps": 2, "save_steps": 2, "learning_rate": 1e-3},
        start=False,
        **kw,
    )


@pytest.mark.django_db
def test_create_run_names_every_bad_field(project, base, labelled):
    with pytest.raises(ValidationError) as exc:
        online.create_run(
            project,
            None,
            start_version=base,
            ranker="judge",
            eval_suite=None,
            rounds=0,
            options={"samples_per_prompt": 1, "temperature": "hot", "colour": 1},
            preset="demo-tiny",
            overrides={"learning_rate": -1},
            start=False,
        )
    errors = exc.value.message_dict
    assert set(errors) == {
        "judge",
        "eval_suite",
        "rounds",
        "options.samples_per_prompt",
        "options.temperature",
        "options.colour",
        "params.learning_rate",
    }
    assert errors["options.samples_per_prompt"] == ["must be between 2 and 16"]


@pytest.mark.django_db
def test_an_online_round_samples_ranks_exports_trains_evaluates_and_gates(project, base, labelled):
    run = online_run(project, base, labelled, options={"use_reference": True})
    run = online.run_online(run.pk)
    assert run.status in (OnlineRun.State.SUCCEEDED, OnlineRun.State.STOPPED_BY_GATE), run.message
    rnd = run.round_set.get()
    assert rnd.status == OnlineRound.State.DONE and rnd.prompts == 6 and rnd.samples == 12
    pairs = list(OnlinePair.objects.filter(round=rnd))
    assert len(pairs) == rnd.pairs > 0
    for p in pairs:  # traceable: the rejected answer is a stored sample of the policy
        assert p.rejected.model_version == base
        assert p.rejected.generation_settings == {
            "online_run": run.pk,
            "round": 1,
            "do_sample": True,
            "temperature": 1.0,
        }
        assert p.chosen_score > p.rejected_score
    snap = rnd.snapshot
    assert snap.kind == "dpo" and snap.status == "ready" and snap.filters["sources"] == ["online"]
    assert snap.row_count == len(pairs) and snap.stats["rows_by_source"] == {"online": len(pairs)}
    assert rnd.job.stage == "dpo" and rnd.job.base_version == base and rnd.job.result_version is not None
    assert rnd.eval_run.status == "done" and rnd.baseline_run.model_version == base
    assert set(rnd.gate) >= {"passed", "conditions"}
    expected = rnd.job.result_version if rnd.gate["passed"] else base
    assert run.result_version == expected
    figures = online.lineage_figures(run)
    assert [f["round"] for f in figures] == [0, 1]
    # run again: a duplicate delivery does nothing
    assert online.run_online(run.pk) is None


@pytest.mark.django_db
def test_a_failed_round_resumes_without_redoing_finished_phases(project, base, labelled, monkeypatch):
    run = online_run(project, base, labelled)
    calls = {"n": 0}
    real = online._train

    def boom(*a, **kw):
        calls["n"] += 1
        raise RuntimeError("worker lost the GPU")

    monkeypatch.setattr(online, "_train", boom)
    run = online.run_online(run.pk)
    assert run.status == OnlineRun.State.FAILED and "worker lost the GPU" in run.message
    rnd = run.round_set.get()
    snap_id, pair_ids = (
        rnd.snapshot_id,
        set(OnlinePair.objects.filter(round=rnd).values_list("pk", flat=True)),
    )
    assert snap_id and pair_ids
    monkeypatch.setattr(online, "_train", real)
    lifecycle.resume(run)
    run = online.run_online(run.pk)
    assert run.status in (OnlineRun.State.SUCCEEDED, OnlineRun.State.STOPPED_BY_GATE), run.message
    rnd.refresh_from_db()
    assert rnd.snapshot_id == snap_id  # the ready snapshot was reused, not rebuilt
    assert set(OnlinePair.objects.filter(round=rnd).values_list("pk", flat=True)) == pair_ids
    assert DatasetSnapshot.objects.filter(project=project, kind="dpo").count() == 1
    assert TrainingJob.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_cancel_before_start_and_between_phases(project, base, labelled):
    run = online_run(project, base, labelled)
    online.request_cancel(run)
    run.refresh_from_db()
    assert run.status == OnlineRun.State.CANCELLED
    lifecycle.resume(run)
    OnlineRun.objects.filter(pk=run.pk).update(cancel_requested=False)
    real = online._sample_and_rank

    def then_cancel(run_, rnd, judge=None):
        real(run_, rnd, judge)
        OnlineRun.objects.filter(pk=run_.pk).update(cancel_requested=True)

    online._sample_and_rank = then_cancel
    try:
        run = online.run_online(run.pk)
    finally:
        online._sample_and_rank = real
    assert run.status == OnlineRun.State.CANCELLED and "Resume" in run.message
    assert not TrainingJob.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_ranking_with_a_judge_uses_round_robin_scores(project, base, labelled):
    prompt = {"messages": stock_context(1), "tools": [], "expected": None}
    samples = [WRONG, RIGHT % "SKU-1", "Maybe."]
    scores = online.rank_with_judge(FixedJudge(), prompt, samples)
    assert scores == [0.5, 2.0, 0.5]  # the call wins both its pairs; the other pair is unsure
    assert online.choose_pair(prompt, samples, scores, [True] * 3, use_reference=True)[:2] in ((1, 0), (1, 2))
    # a malformed answer is never chosen, however the ranker scored it
    assert online.choose_pair(prompt, samples, [0.0, 0.5, 2.0], [True, True, False], use_reference=False)[
        :2
    ] == (1, 0)
    assert online.choose_pair(prompt, ["x", "x"], [1.0, 1.0], [True, True], use_reference=False) is None
    ref = online.choose_pair(
        {**prompt, "expected": {"role": "assistant", "content": "ok"}},
        ["x", "y"],
        [1.0, 0.0],
        [False, False],
        use_reference=True,
    )
    assert ref == (None, 1, 2.0, 0.0)
    assert online.clean_answer(RIGHT % "SKU-1", demo_domain.TOOLS)
    assert not online.clean_answer('<tool_call>{"name": "check_inventory", ', demo_domain.TOOLS)


@pytest.mark.django_db
def test_an_external_judge_over_http_is_registered_measured_and_suggests(client, project, members, voted):
    from training.tasks import evaluate_judge

    from .test_eval_client import StubChat

    def answer(body):  # a judge that prefers the answer holding a tool call, replying with a reason
        text = body["messages"][-1]["content"]
        a, b = text.split("[A]\n", 1)[1].split("\n\n[B]\n", 1)
        letter = "A" if "<tool_call>" in a else "B" if "<tool_call>" in b.split("\n\nWhich")[0] else "A"
        return 200, {
            "choices": [
                {
                    "message": {"role": "assistant", "content": f"Calls the tool.\nVerdict: {letter}"},
                    "finish_reason": "stop",
                }
            ]
        }

    stub = StubChat(answer)
    with stub.serve() as url:
        client.force_login(members[Role.LEAD])
        assert (
            client.post(
                f"/p/{project.slug}/training/judges/external/", {"name": "x", "base_url": url}
            ).status_code
            == 403
        )
        client.force_login(members[Role.ADMIN])
        bad = client.post(
            f"/p/{project.slug}/training/judges/external/", {"name": "", "base_url": "ftp://x"}, follow=True
        )
        assert "needs a name, a base URL starting with http" in bad.content.decode()
        client.post(
            f"/p/{project.slug}/training/judges/external/",
            {"name": "big-judge", "base_url": url, "model": "j"},
        )
        judge = ModelVersion.objects.get(project=project, name="big-judge")
        assert judge.origin == "external" and judge.metadata["judge"] is True
        snap = dpo_of_preferences(project, members[Role.LEAD])
        result = evaluate_judge.apply(args=[judge.pk, snap.pk]).get()
        ev = JudgeEvaluation.objects.get(pk=result["evaluation"])
        # the human winner holds the call except where annotator2 slipped; the judge always picks the call
        assert ev.pairs == snap.row_count and ev.position_bias_rate == 0.0
        winners_with_call = sum(
            1 for p in read_pairs(snap.file.path) if "<tool_call>" in answer_text(p["chosen"])
        )
        assert ev.accuracy == winners_with_call / snap.row_count
        assert stub.requests[0]["body"]["model"] == "j" and stub.requests[0]["body"]["temperature"] == 0
        page = client.get(f"/p/{project.slug}/training/judges/").content.decode()
        assert "big-judge" in page and "calibration-data" in page


@pytest.mark.django_db
def test_prompts_are_read_in_a_fixed_number_of_queries(project, base, labelled, django_assert_num_queries):
    run = online_run(project, base, labelled, options={"max_prompts": 5})
    with django_assert_num_queries(3):  # reasonable labels, corrections, conversations
        prompts = online.prompts_for(run)
    assert len(prompts) == 5 and all(p["expected"] for p in prompts)
    assert prompts == sorted(prompts, key=lambda p: (p["conversation_id"], p["context_length"]))


@pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
def test_a_silent_online_run_is_taken_over_and_a_live_one_is_not(project, base, labelled):
    from django.utils import timezone

    run = online_run(project, base, labelled)
    first = lifecycle.claim(OnlineRun, run.pk)
    assert lifecycle.claim(OnlineRun, run.pk) is None  # alive: the duplicate delivery does nothing
    OnlineRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    again = lifecycle.claim(OnlineRun, run.pk)
    assert again is not None and again.attempts == 2 and again.run_token != first.run_token
    with lifecycle.attempt(again, beat_every=0.05):
        import time

        OnlineRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
        time.sleep(0.3)
    assert OnlineRun.objects.get(pk=run.pk).heartbeat_at > timezone.now() - timezone.timedelta(seconds=5)


@pytest.mark.django_db
def test_a_round_whose_training_trips_the_guard_stops_the_run_at_its_policy(project, base, labelled):
    run = online.create_run(
        project,
        None,
        start_version=base,
        eval_suite=labelled,
        rounds=2,
        options={"samples_per_prompt": 2, "max_prompts": 6, "max_new_tokens": 24},
        preset="demo-tiny",
        overrides={"max_steps": 4, "save_steps": 2, "learning_rate": 5.0},
        start=False,
    )
    run = online.run_online(run.pk)
    assert run.status == OnlineRun.State.STOPPED_BY_GATE and "stopped by the guard" in run.message, (
        run.message
    )
    assert run.result_version == base and run.phase == ""
    rnd = run.round_set.get()
    assert rnd.status == "done" and rnd.gate["conditions"][0]["key"] == "guard" and not rnd.gate["passed"]
    assert rnd.job.status == TrainingJob.State.STOPPED_BY_GUARD


@pytest.mark.django_db
def test_the_launch_page_gives_each_stage_its_own_guard_unless_the_admin_types_one(
    client, project, members, voted, base
):
    snap = dpo_of_preferences(project, members[Role.LEAD])
    client.force_login(members[Role.ADMIN])
    form = {
        "base_version": base.pk,
        "train_snapshot": snap.pk,
        "preset": "demo-tiny",
        "allow_raw_base": "on",
        "max_perplexity_ratio": "",
        "max_quality_drop_points": "",
    }
    for stage, limits in (("judge", JUDGE_GUARD), ("dpo", DEFAULT_GUARD)):
        assert client.post(f"/p/{project.slug}/training/new/", {**form, "stage": stage}).status_code == 302
        job = TrainingJob.objects.get(stage=stage)
        assert (job.guard["max_perplexity_ratio"], job.guard["max_quality_drop"]) == (
            limits["max_perplexity_ratio"],
            limits["max_quality_drop"],
        )
    typed = {**form, "stage": "judge", "max_perplexity_ratio": "2.5", "max_quality_drop_points": "20"}
    assert client.post(f"/p/{project.slug}/training/new/", typed).status_code == 302
    job = TrainingJob.objects.filter(stage="judge").order_by("-id").first()
    assert (job.guard["max_perplexity_ratio"], job.guard["max_quality_drop"]) == (2.5, 0.2)
