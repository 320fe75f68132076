"""Review of issue #17 (review stream, bulk approve, editable submitted work, demo lineage): findings that
an outside reviewer turned into tests before fixing them."""

import pytest

from annotator.labelling import submit_label
from annotator.models import Label, ModelVersion, Review, Status, Task
from loop import demo_lineage
from training import hooks
from training.models import DatasetSnapshot, TrainingJob

from .test_review_stream import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project, other_project, members):
    return World(project, other_project, members)


def change_after_review_opened(w, label):
    """annotator2 changes their submitted label (the real path: submit again, still waiting for review)."""
    task = Task.objects.get(kind=Task.Kind.LABEL, response=label.response)
    data = {
        "verdict": "unreasonable",
        "categories": [w.leaf_a.pk],
        "note": "changed",
        "expected_status": "submitted",
    }
    submit_label(task, w.a2, data)
    label.refresh_from_db()
    assert (label.status, label.verdict) == (Status.SUBMITTED, "unreasonable")


def hidden(html, name):
    return html.split(f'name="{name}" value="', 1)[1].split('"', 1)[0]


# --- 1. bulk approval approved work the lead never saw -----------------------------------------------
# The confirmation compared only the ids: an annotator who changed one of the listed items after the lead
# looked at the list (same id, new verdict) had the new version approved unseen. apply_review refuses
# that for one item (`seen`); approve_many must refuse it for a list.


def test_bulk_page_refuses_a_list_whose_item_was_changed_after_it_was_confirmed(client, world):
    w = world
    client.force_login(w.lead)
    page = client.get("/p/sales/review/bulk-approve/?annotator=annotator2").content.decode()
    ids, seen = hidden(page, "ids"), hidden(page, "seen")
    changed = w.l2[1]  # shown to the lead as "reasonable"
    change_after_review_opened(w, changed)
    res = client.post("/p/sales/review/bulk-approve/", {"annotator": "annotator2", "ids": ids, "seen": seen})
    assert res.status_code == 409 and "changed" in res.content.decode()
    assert not Label.objects.filter(annotator=w.a2, status=Status.APPROVED).exists()
    assert not Review.objects.exists()
    # the page shows the list as it is now; confirming that one approves it
    fresh = res.content.decode()
    res = client.post(
        "/p/sales/review/bulk-approve/",
        {"annotator": "annotator2", "ids": hidden(fresh, "ids"), "seen": hidden(fresh, "seen")},
    )
    assert res.status_code == 302
    assert Label.objects.filter(annotator=w.a2, status=Status.APPROVED).count() == 3


def test_bulk_api_refuses_a_list_whose_item_was_changed_after_the_get(api, world):
    w = world
    lead = api(w.lead)
    query = {"project": "sales", "annotator": "annotator2"}
    listed = lead.get("/api/reviews/bulk-approve/", query).json()
    assert listed["seen"]
    change_after_review_opened(w, w.l2[0])
    res = lead.post(
        "/api/reviews/bulk-approve/", {**query, "ids": listed["ids"], "seen": listed["seen"]}, format="json"
    )
    assert res.status_code == 409 and "seen" in res.json()
    assert not Label.objects.filter(annotator=w.a2, status=Status.APPROVED).exists()
    again = lead.get("/api/reviews/bulk-approve/", query).json()
    assert again["ids"] != listed["ids"] or again["seen"] != listed["seen"]
    res = lead.post(
        "/api/reviews/bulk-approve/", {**query, "ids": again["ids"], "seen": again["seen"]}, format="json"
    )
    assert res.status_code == 200 and res.json() == {"approved": 3}


# --- 2. the demo lineage hook read a snapshot of any project -------------------------------------------
# continue_lineage took the DPO snapshot's id from the base version's metadata, which a project admin can
# write through the API, and looked it up in every project: create_job then refused it, and its message
# (logged on the admin's own job) named the other project's snapshot.


def test_the_lineage_hook_never_reads_another_projects_snapshot(project, other_project, members):
    admin = members["admin"]
    foreign = DatasetSnapshot.objects.create(
        project=other_project, kind="sft", version=1, layout="trl_messages", status="queued"
    )
    base = ModelVersion.objects.create(project=project, name="my-base", origin=ModelVersion.Origin.BASE)
    mine = DatasetSnapshot.objects.create(project=project, kind="sft", version=1, layout="trl_messages")
    job = TrainingJob.objects.create(
        project=project, name="mine", stage="sft", base_version=base, train_snapshot=mine, created_by=admin
    )
    base.metadata = {demo_lineage.MARK: {"sft_job": job.pk, "dpo_snapshot": foreign.pk}}
    base.save()
    trained = ModelVersion.objects.create(
        project=project, name="my-sft", parent=base, origin=ModelVersion.Origin.SFT
    )
    lines = hooks.version_trained(job, trained)
    assert not any(foreign.name in line for line in lines), lines
    assert not TrainingJob.objects.filter(stage="dpo").exists()
