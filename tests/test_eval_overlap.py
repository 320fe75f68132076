"""The training-overlap flag is a property of (suite, model lineage's training snapshots), read when
shown: every run of an overlapping suite is flagged — on its report, in comparisons, in the run and
model tables, in the API and at the promotion gate — including runs made before the snapshot existed.
And the model table shows figures for every version that has a finished run."""

import json

import pytest

from evaluation import comparison, promotion, suites
from evaluation.models import EvalRun, EvalSettings
from training.models import DatasetSnapshot, TrainingJob

from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db

FLAG = "⚠ overlaps training"


def sft_snapshot(project, cases, tmp_path, settings, version=1, status=DatasetSnapshot.State.READY):
    """An SFT snapshot whose rows are these suite cases' contexts + gold turns (a leak)."""
    settings.MEDIA_ROOT = str(tmp_path)
    name = f"datasets/{project.slug}/sft-v{version}.jsonl"
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"messages": [*c.messages, c.expected], "tools": "[]"}) + "\n" for c in cases)
    )
    return DatasetSnapshot.objects.create(
        project=project,
        kind="sft",
        version=version,
        layout="trl_messages",
        status=status,
        file=name,
        row_count=len(cases),
    )


@pytest.fixture
def leak(project, tmp_path, settings):
    """A suite, a base model, an SFT child trained (by a job) on two of the suite's cases, and a DPO
    grandchild; the base and the SFT model were run on the suite before the SFT snapshot existed."""
    suite = make_suite(project, 8)
    base = model(project, "base", origin="base")
    sft = model(project, "sft-1", parent=base, origin="sft")
    dpo = model(project, "dpo-1", parent=sft, origin="dpo")
    early_base = crafted_run(project, suite, base, {1, 2})
    early_sft = crafted_run(project, suite, sft, {1, 2, 3})

    def train():
        snap = sft_snapshot(project, list(suite.cases.filter(position__in=[3, 5])), tmp_path, settings)
        TrainingJob.objects.create(
            project=project,
            name="sft",
            stage="sft",
            base_version=base,
            train_snapshot=snap,
            result_version=sft,
        )
        return snap

    return {
        "suite": suite,
        "base": base,
        "sft": sft,
        "dpo": dpo,
        "early_base": early_base,
        "early_sft": early_sft,
        "train": train,
    }


def fresh(run):
    return EvalRun.objects.select_related("suite", "model_version").get(pk=run.pk)


def test_a_run_made_before_the_training_snapshot_is_flagged_once_it_exists(leak):
    early = leak["early_sft"]
    assert not fresh(early).overlaps_training
    snap = leak["train"]()
    run = fresh(early)
    assert run.overlaps_training
    assert run.training_overlap["cases"] == 2 and run.training_overlap["positions"] == [3, 5]
    assert run.training_overlap["snapshots"] == [{"id": snap.pk, "name": snap.name, "cases": 2}]
    # every run of that pair says the same, and so does every descendant's run; the base never trained on it
    later = crafted_run(leak["sft"].project, leak["suite"], leak["sft"], {1})
    child = crafted_run(leak["dpo"].project, leak["suite"], leak["dpo"], {1})
    assert fresh(later).overlaps_training and fresh(child).overlaps_training
    assert not fresh(leak["early_base"]).overlaps_training


def test_a_snapshot_that_becomes_ready_later_is_checked_then(project, leak, tmp_path, settings):
    suite, sft = leak["suite"], leak["sft"]
    snap = sft_snapshot(
        project, [suite.cases.get(position=4)], tmp_path, settings, status=DatasetSnapshot.State.RUNNING
    )
    sft.metadata = {"train_snapshot_ids": [snap.pk]}
    sft.save()
    first = suites.overlap_of(suite, sft)
    assert first["cases"] == 0 and "not ready" in first["note"]
    DatasetSnapshot.objects.filter(pk=snap.pk).update(status=DatasetSnapshot.State.READY, sha256="ab" * 32)
    assert suites.overlap_of(suite, sft)["positions"] == [4]  # the cached "not ready" answer is not reused


def test_overlap_is_cached_per_suite_and_lineage_state(leak):
    leak["train"]()
    suite, sft = leak["suite"], leak["sft"]
    first = suites.overlap_of(suite, sft)
    calls = []
    real = suites.prompt_hash
    suites.prompt_hash = lambda m: calls.append(1) or real(m)
    try:
        assert suites.overlap_of(suite, sft) == first
    finally:
        suites.prompt_hash = real
    assert not calls  # the second read did not open the snapshot again


def test_an_unreadable_snapshot_says_not_checked_and_is_tried_again(
    project, leak, tmp_path, settings, monkeypatch
):
    leak["train"]()
    suite, sft = leak["suite"], leak["sft"]
    monkeypatch.setattr(suites, "_snapshot_keys", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    broken = suites.overlap_of(suite, sft)
    assert broken["cases"] == 0 and "not checked: disk gone" in broken["note"]
    monkeypatch.undo()
    assert suites.overlap_of(suite, sft)["cases"] == 2


def test_every_page_flags_every_run_of_the_overlapping_pair(project, members, client, leak):
    leak["train"]()
    later = crafted_run(project, leak["suite"], leak["sft"], {1, 2, 3, 4})
    early, base_run = leak["early_sft"], leak["early_base"]
    client.force_login(members["lead"])
    p = f"/p/{project.slug}/eval/"
    for run in (early, later):
        html = client.get(f"{p}runs/{run.pk}/").content.decode()
        assert 'id="overlap-warning"' in html and "2 of 8 cases are in" in html, run.pk
    assert 'id="overlap-warning"' not in client.get(f"{p}runs/{base_run.pk}/").content.decode()
    home = client.get(p).content.decode()
    runs_table = home.split('id="runs"')[1].split("</table>")[0]
    rows = {r.split("</a>")[0].rsplit(">", 1)[-1]: r for r in runs_table.split("<tr>")[2:]}
    assert FLAG in rows[str(early.pk)] and FLAG in rows[str(later.pk)] and FLAG not in rows[str(base_run.pk)]
    models_table = home.split('id="models"')[1].split("</table>")[0]
    sft_row = next(r for r in models_table.split("<tr>") if "<strong>sft-1</strong>" in r)
    base_row = next(r for r in models_table.split("<tr>") if "<strong>base</strong>" in r)
    assert FLAG in sft_row and FLAG not in base_row
    cmp_html = client.get(f"{p}compare/?runs={base_run.pk}&runs={early.pk}").content.decode()
    assert f"Run {early.pk} (sft-1): the suite overlaps its training data</strong> (2 cases)" in cmp_html
    assert f"Run {base_run.pk} (base): the suite overlaps" not in cmp_html
    assert FLAG in client.get(f"{p}suites/{leak['suite'].pk}/").content.decode()
    gate_html = client.get(f"{p}models/{leak['dpo'].pk}/?suite={leak['suite'].pk}").content.decode()
    assert FLAG in gate_html  # the lineage table: the SFT parent's run


def test_api_and_comparison_read_the_same_overlap(project, members, api, leak):
    leak["train"]()
    early = leak["early_sft"]
    client = api(members["lead"])
    one = client.get(f"/api/eval-runs/{early.pk}/").json()
    assert one["overlaps_training"] and one["overlap"]["cases"] == 2
    listed = {
        r["id"]: r for r in client.get("/api/eval-runs/", {"project__slug": project.slug}).json()["results"]
    }
    assert listed[early.pk]["overlaps_training"] and not listed[leak["early_base"].pk]["overlaps_training"]
    cmp = comparison.compare_runs([fresh(leak["early_base"]), fresh(early)]).as_dict()
    assert [r["overlaps_training"] for r in cmp["runs"]] == [False, True]


def test_the_gate_refuses_a_run_made_before_the_leak_was_known(project, leak):
    cfg = EvalSettings.for_project(project)
    cfg.default_suite = leak["suite"]
    cfg.save()
    gate = promotion.check_gate(leak["sft"])
    assert {c.key: c.status for c in gate.conditions}["overlap"] == "unknown"
    leak["train"]()
    gate = promotion.check_gate(leak["sft"])
    assert [c.key for c in gate.failed] == ["overlap"] and "sft-v1" in gate.failed[0].detail


# ----------------------------------------------------------------------- the model table


def model_rows(html):
    table = html.split('id="models"')[1].split("</table>")[0]
    return {r.split("<strong>")[1].split("</strong>")[0]: r for r in table.split("<tr>") if "<strong>" in r}


def test_without_a_default_suite_the_table_reads_the_suite_most_versions_ran_on(project, members, client):
    main, other = make_suite(project, 10, name="main"), make_suite(project, 4, name="side")
    a, b, c, d = (model(project, n) for n in ("a", "b", "c", "d"))
    crafted_run(project, main, a, {1})
    crafted_run(project, main, a, {1, 2, 3, 4, 5})  # 50%, the latest: shown
    crafted_run(project, main, b, {1})
    crafted_run(project, other, b, {1, 2})  # newer, but on the other suite: main is shown for b
    crafted_run(project, other, c, {1, 2, 3})  # c ran only on the other suite
    # two versions ran on each suite; main has more runs
    table_suite, rows = comparison.model_table(project)
    assert table_suite == main
    by_name = {r.model_version.name: r for r in rows}
    assert by_name["a"].run.suite == main and by_name["a"].same_suite
    assert by_name["b"].run.suite == main and by_name["b"].same_suite
    assert by_name["c"].run.suite == other and not by_name["c"].same_suite
    assert by_name["d"].run is None
    client.force_login(members["lead"])
    html = client.get(f"/p/{project.slug}/eval/").content.decode()
    rows_html = model_rows(html)
    assert "50.0%" in rows_html["a"] and "not run" not in rows_html["a"]
    assert "10.0%" in rows_html["b"]
    assert "other suite: side v1" in rows_html["c"] and "not run" not in rows_html["c"]
    assert "not run" in rows_html["d"]
    assert "the suite most versions were run on" in html


def test_with_a_default_suite_the_table_reads_it_and_falls_back_per_version(project, members, client):
    main, other = make_suite(project, 10, name="main"), make_suite(project, 4, name="side")
    a, b = model(project, "a"), model(project, "b")
    crafted_run(project, main, a, {1})
    crafted_run(project, main, b, {1})
    crafted_run(project, other, a, {1, 2, 3, 4})
    cfg = EvalSettings.for_project(project)
    cfg.default_suite = other
    cfg.save()
    table_suite, rows = comparison.model_table(project, cfg.default_suite)
    by_name = {r.model_version.name: r for r in rows}
    assert table_suite == other and by_name["a"].run.suite == other
    assert by_name["b"].run.suite == main and not by_name["b"].same_suite


def test_a_version_with_only_an_unfinished_run_says_so(project, members, client):
    suite = make_suite(project, 3)
    mv = model(project, "queued-one", path="/models/x")
    from evaluation import runner

    run = runner.create_run(project, suite, mv, start=False)
    _, rows = comparison.model_table(project)
    assert rows[0].run is None and rows[0].pending == run
    client.force_login(members["lead"])
    row = model_rows(client.get(f"/p/{project.slug}/eval/").content.decode())["queued-one"]
    assert "no finished run" in row and "queued" in row
