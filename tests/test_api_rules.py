"""Business rules behind the API: validation of corrections and preferences (through the queue endpoints),
the review flow."""

import pytest

from annotator import assignment
from annotator.models import Correction, Label, ModelVersion, Preference, Status, TaxonomyCategory

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def label(conversation, members):
    _, (r1, _r2) = conversation
    return Label.objects.create(response=r1, annotator=members["annotator"], verdict="unreasonable")


@pytest.fixture
def queue(project, conversation):
    assignment.sync_tasks(project)
    return project


def next_task(client, kind="label") -> int:
    return client.get("/api/projects/sales/queue/next/", {"kind": kind}).json()["id"]


def submit(client, task_id, body):
    return client.post(f"/api/projects/sales/queue/tasks/{task_id}/submit/", body, format="json")


def test_correction_tool_calls_are_checked_against_the_tool_schema(api, members, queue):
    client = api(members["annotator"])
    task = next_task(client)
    cat = TaxonomyCategory.objects.filter(project=queue, parent__isnull=False).first().pk
    bad = {
        "verdict": "unreasonable",
        "categories": [cat],
        "correction_tool_calls": [{"name": "create_order", "arguments": {"sku": "A-1", "quantity": "2"}}],
    }
    response = submit(client, task, bad)
    assert response.status_code == 400
    assert response.json() == {
        "correction.tool_calls[0].function.arguments.quantity": ["'2' is not of type 'integer'"]
    }

    unknown = {**bad, "correction_tool_calls": [{"name": "refund", "arguments": {}}]}
    assert "unknown tool 'refund'" in str(submit(client, task, unknown).json())

    good = {
        **bad,
        "correction_tool_calls": [{"name": "create_order", "arguments": {"sku": "A-1", "quantity": 2}}],
    }
    response = submit(client, task, good)
    assert response.status_code == 200, response.content
    stored = Correction.objects.get(label_id=response.json()["label"]).message
    assert stored["tool_calls"][0]["function"]["arguments"] == '{"sku": "A-1", "quantity": 2}'


def test_blank_correction_is_no_correction(api, members, queue):
    client = api(members["annotator"])
    response = submit(client, next_task(client), {"verdict": "reasonable", "correction_content": " "})
    assert response.status_code == 200
    assert not Correction.objects.filter(label_id=response.json()["label"]).exists()


def test_a_preference_is_for_the_pair_the_queue_hands_out(api, members, queue, conversation):
    _, (r1, r2) = conversation
    client = api(members["annotator"])
    task = next_task(client, "compare")
    response = submit(client, task, {"choice": "b"})
    assert response.status_code == 200
    pref = Preference.objects.get(pk=response.json()["preference"])
    assert (pref.response_a_id, pref.response_b_id, pref.status) == (r1.pk, r2.pk, Status.SUBMITTED)


def test_reason_required_when_the_project_says_so(api, members, queue):
    queue.label_settings = {**queue.label_settings, "require_preference_reason": True}
    queue.save()
    client = api(members["annotator"])
    response = submit(client, next_task(client, "compare"), {"choice": "a"})
    assert response.status_code == 400 and response.json() == {
        "reason": ["This project asks for a reason with every choice."]
    }


def test_submitted_label_needs_a_verdict_and_categories_of_the_same_project(
    api, members, queue, other_project
):
    from annotator.taxonomy import seed_default_taxonomy

    client = api(members["annotator"])
    task = next_task(client)
    response = submit(client, task, {})
    assert response.status_code == 400 and response.json() == {
        "verdict": ["Choose reasonable or unreasonable."]
    }
    seed_default_taxonomy(other_project)
    foreign = TaxonomyCategory.objects.filter(project=other_project).first()
    response = submit(client, task, {"verdict": "reasonable", "categories": [foreign.pk]})
    assert response.status_code == 400 and response.json() == {
        "categories": ["Some categories are not active categories of this project."]
    }


def test_review_flow_reject_then_fix_then_approve(api, members, queue):
    annotator, lead = api(members["annotator"]), api(members["lead"])
    task = next_task(annotator)
    label = Label.objects.get(pk=submit(annotator, task, {"verdict": "reasonable"}).json()["label"])
    response = lead.post("/api/reviews/", {"label": label.pk, "decision": "reject"}, format="json")
    assert response.status_code == 400 and "comment" in response.json()
    response = lead.post(
        "/api/reviews/",
        {"label": label.pk, "decision": "reject", "comment": "Also tick Wrong arguments."},
        format="json",
    )
    assert response.status_code == 201
    label.refresh_from_db()
    assert label.status == Status.REJECTED
    # the annotator sees why, fixes and resubmits through the queue
    reviews = annotator.get("/api/reviews/").json()["results"]
    assert [r["comment"] for r in reviews] == ["Also tick Wrong arguments."]
    assert submit(annotator, task, {"verdict": "reasonable", "note": "fixed"}).status_code == 200
    assert (
        lead.post("/api/reviews/", {"label": label.pk, "decision": "approve"}, format="json").status_code
        == 201
    )
    label.refresh_from_db()
    assert label.status == Status.APPROVED
    # approved is final for the annotator
    assert submit(annotator, task, {"verdict": "reasonable", "note": "x"}).status_code == 409
    assert label.history.count() >= 4  # audit trail of every change


def test_drafts_cannot_be_reviewed(api, members, label):
    response = api(members["lead"]).post(
        "/api/reviews/", {"label": label.pk, "decision": "approve"}, format="json"
    )
    assert response.status_code == 400


def test_responses_from_raw_text_are_parsed(api, members, project):
    conv, _ = make_conversation(project, 5, n_responses=0)
    mv = ModelVersion.objects.get(project=project)
    raw = (
        '<think>need stock</think><tool_call>{"name": "check_inventory", '
        '"arguments": "{\\"sku\\": \\"A-5\\"}"}</tool_call>'
    )
    response = api(members["admin"]).post(
        "/api/responses/",
        {"conversation": conv.pk, "model_version": mv.pk, "context_length": 1, "raw_text": raw},
        format="json",
    )
    assert response.status_code == 201, response.content
    message = response.json()["message"]
    assert message["reasoning"] == "need stock"
    assert message["tool_calls"][0]["function"] == {"name": "check_inventory", "arguments": '{"sku": "A-5"}'}


def test_list_endpoints_use_a_constant_number_of_queries(
    api, members, project, django_assert_max_num_queries
):
    for i in range(30):
        _, (r,) = make_conversation(project, 100 + i)
        Label.objects.create(response=r, annotator=members["annotator"], verdict="reasonable")
    client = api(members["lead"])
    with django_assert_max_num_queries(8):
        assert len(client.get("/api/labels/?page_size=100").json()["results"]) == 30
    with django_assert_max_num_queries(8):
        assert len(client.get("/api/conversations/?page_size=100").json()["results"]) >= 30


def test_token_auth(client, members, api):
    response = client.post("/api/auth/token/", {"username": "annotator", "password": "pw-annotator"})
    assert response.status_code == 200
    token = response.json()["token"]
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert [p["slug"] for p in c.get("/api/projects/").json()["results"]] == ["sales"]
    c.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert c.get("/api/projects/").status_code == 401
