"""What a newcomer reads on the pages (issue #17's screenshot review): a dataset's skipped rows in words and
its preview by conversation id, plurals on the run report, "just now" for work submitted a moment ago, and
empty states on the online-runs and judges pages that say what is actually missing."""

import datetime as dt
import re

import pytest
from django.utils import timezone

from annotator import assignment
from annotator.labelling import submit_label, submit_preference
from annotator.models import Conversation, Label, ModelVersion, Preference
from evaluation.models import EvalSuite
from training.snapshots.build import build_snapshot, create_snapshot

from .conftest import make_conversation
from .test_datasets_factories import assistant, call, label, preference, response, stock_question
from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def page(client, user, url) -> str:
    client.force_login(user)
    res = client.get(url)
    assert res.status_code == 200, url
    return res.content.decode()


def cell(html: str, element_id: str) -> str:
    """The text of the table cell with this id, tags dropped, spaces squeezed."""
    start = html.index(f'id="{element_id}"')
    return " ".join(re.sub(r"<[^>]+>", " ", html[start : html.index("</td>", start)]).split()[1:])


def dpo_snapshot(project, members):
    """A DPO snapshot that skips a tie, a "both bad" without a correction and one already paired."""
    ann, ann2 = members["annotator"], members["annotator2"]
    c = stock_question(project, 5)
    a = response(c, raw="In stock!", model="agent-v1")
    b = response(c, raw="Out of stock, sorry about that.", model="agent-v2")
    label(a, ann, correction=assistant(None, [call("check_inventory", {"sku": "A-5"})]))
    preference(a, b, ann, "both_bad")
    preference(a, response(c, raw="Maybe, let me look.", model="agent-v3"), ann2, "tie")
    d = stock_question(project, 6)
    preference(response(d, raw="Yes."), response(d, raw="No.", model="agent-v2"), ann, "both_bad")
    snap = create_snapshot(project, members["admin"], {"kind": "dpo"}, start=False)
    return build_snapshot(snap.pk)


# --- the dataset page ------------------------------------------------------------------------------


def test_a_datasets_skipped_rows_are_said_in_words_and_its_preview_names_conversations(
    client, project, members
):
    snap = dpo_snapshot(project, members)
    assert set(snap.stats["skipped"]) == {
        "tie",
        "both_bad_without_correction",
        "both_bad_pair_already_from_correction",
    }  # the keys stay as they are: the API and the bundle carry them
    html = page(client, members["lead"], f"/p/{project.slug}/datasets/{snap.pk}/")
    skipped = " ".join(re.sub(r"<[^>]+>", " ", re.search(r'id="skipped">(.*?)</p>', html).group(1)).split())
    assert "bothbad" not in html and "both_bad" not in skipped
    assert "ties (a tie prefers neither answer): 1" in skipped
    assert "“both bad” with no correction in that context to prefer: 1" in skipped
    assert (
        "“both bad” pairs already taught by a correction (the corrections source made that row): 1" in skipped
    )
    # the preview links each row's conversation by its external id, not by the database's
    conv = Conversation.objects.get(project=project, external_id="c-5")
    assert f'href="/p/{project.slug}/conversations/{conv.pk}/"' in html
    assert re.search(rf'conversations/{conv.pk}/"[^>]*>c-5</a>', html)
    assert f">conversation {conv.pk}<" not in html


# --- the evaluation report -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "right, words", [(set(range(1, 12)), "1 failing case,"), ({1, 2}, "10 failing cases,")]
)
def test_the_report_counts_failing_cases_in_proper_plurals(client, project, members, right, words):
    suite = make_suite(project, 12)
    run = crafted_run(project, suite, model(project, "base", origin="base"), right)
    html = page(client, members["admin"], f"/p/{project.slug}/eval/runs/{run.pk}/")
    assert words in html and "case(s)" not in html


# --- "Submitted … ago" on a reopened item ------------------------------------------------------------


def test_work_submitted_under_a_minute_ago_reads_just_now_on_both_pages(client, project, members):
    project.overlap = 1
    project.save()
    make_conversation(project, 1, n_responses=2)
    assignment.sync_tasks(project)
    ann = members["annotator"]
    label_slot = assignment.next_task(project, ann, "label")
    submit_label(label_slot.task, ann, {"verdict": "reasonable"})
    pair_slot = assignment.next_task(project, ann, "compare")
    submit_preference(pair_slot.task, ann, {"choice": "tie"})
    for slot in (label_slot, pair_slot):
        html = page(client, ann, f"/p/sales/tasks/{slot.task_id}/")
        assert "Submitted just now: yours to change" in html and "0\xa0minutes" not in html
    earlier = timezone.now() - dt.timedelta(minutes=5, seconds=5)
    Label.objects.update(submitted_at=earlier)
    Preference.objects.update(submitted_at=earlier)
    for slot in (label_slot, pair_slot):
        assert "Submitted 5\xa0minutes ago: yours" in page(client, ann, f"/p/sales/tasks/{slot.task_id}/")


# --- empty states that say what is missing -----------------------------------------------------------


def loadable_base(project, tmp_path, name="tiny-base"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return ModelVersion.objects.create(project=project, name=name, path=str(folder), origin="base")


def test_the_online_runs_empty_state_names_what_is_missing_or_offers_a_run(
    client, project, members, tmp_path
):
    url = f"/p/{project.slug}/training/online/"
    html = page(client, members["lead"], url)
    empty = cell(html, "online-empty")
    assert "a model to start from" in empty and "an evaluation suite" in empty
    assert "SFT model" not in html  # any model that generates can start a run, not only an SFT one
    make_suite(project, 3)
    empty = cell(page(client, members["lead"], url), "online-empty")
    assert "a model to start from" in empty and "evaluation suite" not in empty
    loadable_base(project, tmp_path)
    assert EvalSuite.objects.filter(project=project).exists()
    empty = cell(page(client, members["lead"], url), "online-empty")
    assert "still needs" not in empty and "an admin can start one" in empty
    html = page(client, members["admin"], url)
    assert f'href="/p/{project.slug}/training/online/new/">start a new online run</a>' in html


def test_the_judges_empty_state_names_what_is_missing_and_hides_empty_dispute_tables(
    client, project, members, tmp_path
):
    url = f"/p/{project.slug}/training/judges/"
    html = page(client, members["lead"], url)
    empty = cell(html, "judges-empty")
    assert "No ready DPO snapshot yet" in empty and "register a base model" in empty
    # nothing disputed: one line instead of two empty tables
    assert 'id="no-judge-disputes"' in html and "<h3>Pairs</h3>" not in html
    assert 'id="disputed-responses"' not in html and "No disagreement recorded" not in html
    snap = dpo_snapshot(project, members)
    loadable_base(project, tmp_path)
    empty = cell(page(client, members["lead"], url), "judges-empty")
    assert f"{snap.name} (its pairwise preferences) can train one on tiny-base" in empty
    assert "Build a DPO snapshot" not in empty and "an admin can train one under Training" in empty
    html = page(client, members["admin"], url)
    assert re.search(r'id="judges-empty".*?\?stage=judge">train a judge</a>', html, re.S)
