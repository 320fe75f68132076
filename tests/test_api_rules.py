"""Business rules behind the API: validation of corrections and preferences, the review flow."""

import pytest

from annotator.models import Label, Status
from training.models import ModelVersion

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def label(conversation, members):
    _, (r1, _r2) = conversation
    return Label.objects.create(response=r1, annotator=members["annotator"], verdict="unreasonable")


def test_correction_tool_calls_are_checked_against_the_tool_schema(api, members, label):
    client = api(members["annotator"])
    bad = {"label": label.pk, "message": {"tool_calls": [
        {"type": "function", "function": {"name": "create_order", "arguments": {"sku": "A-1", "quantity": "2"}}}]}}
    response = client.post("/api/corrections/", bad, format="json")
    assert response.status_code == 400
    assert response.json() == {"message.tool_calls[0].function.arguments.quantity": ["'2' is not of type 'integer'"]}

    unknown = {"label": label.pk, "message": {"tool_calls": [
        {"type": "function", "function": {"name": "refund", "arguments": {}}}]}}
    assert "unknown tool 'refund'" in str(client.post("/api/corrections/", unknown, format="json").json())

    good = {"label": label.pk, "message": {"content": "", "tool_calls": [
        {"type": "function", "function": {"name": "create_order", "arguments": {"sku": "A-1", "quantity": 2}}}]}}
    response = client.post("/api/corrections/", good, format="json")
    assert response.status_code == 201
    stored = response.json()["message"]
    assert stored["tool_calls"][0]["function"]["arguments"] == '{"sku": "A-1", "quantity": 2}'


def test_empty_correction_is_refused(api, members, label):
    response = api(members["annotator"]).post("/api/corrections/", {"label": label.pk, "message": {"content": " "}},
                                              format="json")
    assert response.status_code == 400
    assert response.json() == {"message": ["needs reply text or at least one tool call"]}


def test_preference_pairs_must_answer_the_same_context(api, members, project, conversation):
    _, (r1, r2) = conversation
    _, (other,) = make_conversation(project, 2)
    client = api(members["annotator"])
    response = client.post("/api/preferences/", {"response_a": r1.pk, "response_b": other.pk, "choice": "a"},
                           format="json")
    assert response.status_code == 400
    assert response.json() == {"response_b": ["Both responses must answer the same context."]}
    response = client.post("/api/preferences/", {"response_a": r1.pk, "response_b": r1.pk}, format="json")
    assert response.status_code == 400
    assert client.post("/api/preferences/", {"response_a": r1.pk, "response_b": r2.pk, "choice": "b",
                                             "status": "submitted"}, format="json").status_code == 201


def test_reason_required_when_the_project_says_so(api, members, project, conversation):
    project.label_settings = {**project.label_settings, "require_preference_reason": True}
    project.save()
    _, (r1, r2) = conversation
    response = api(members["annotator"]).post(
        "/api/preferences/", {"response_a": r1.pk, "response_b": r2.pk, "choice": "a", "status": "submitted"},
        format="json")
    assert response.status_code == 400 and "reason" in response.json()


def test_submitted_label_needs_a_verdict_and_categories_of_the_same_project(api, members, conversation,
                                                                             other_project):
    from annotator.models import TaxonomyCategory
    from annotator.taxonomy import seed_default_taxonomy

    _, (_r1, r2) = conversation
    client = api(members["annotator"])
    response = client.post("/api/labels/", {"response": r2.pk, "status": "submitted"}, format="json")
    assert response.json() == {"verdict": ["A submitted label needs a verdict."]}
    seed_default_taxonomy(other_project)
    foreign = TaxonomyCategory.objects.filter(project=other_project).first()
    response = client.post("/api/labels/", {"response": r2.pk, "verdict": "reasonable", "categories": [foreign.pk]},
                           format="json")
    assert response.status_code == 400  # not visible to this annotator: "does not exist"


def test_review_flow_reject_then_fix_then_approve(api, members, label):
    annotator, lead = api(members["annotator"]), api(members["lead"])
    assert annotator.patch(f"/api/labels/{label.pk}/", {"status": "submitted"}, format="json").status_code == 200
    response = lead.post("/api/reviews/", {"label": label.pk, "decision": "reject"}, format="json")
    assert response.status_code == 400 and "comment" in response.json()
    response = lead.post("/api/reviews/", {"label": label.pk, "decision": "reject",
                                           "comment": "Also tick Wrong arguments."}, format="json")
    assert response.status_code == 201
    label.refresh_from_db()
    assert label.status == Status.REJECTED
    # the annotator sees why, fixes and resubmits
    reviews = annotator.get("/api/reviews/").json()["results"]
    assert [r["comment"] for r in reviews] == ["Also tick Wrong arguments."]
    assert annotator.patch(f"/api/labels/{label.pk}/", {"status": "submitted", "note": "fixed"},
                           format="json").status_code == 200
    assert lead.post("/api/reviews/", {"label": label.pk, "decision": "approve"}, format="json").status_code == 201
    label.refresh_from_db()
    assert label.status == Status.APPROVED
    # approved is final for the annotator
    assert annotator.patch(f"/api/labels/{label.pk}/", {"note": "x"}, format="json").status_code == 400
    assert label.history.count() >= 4  # audit trail of every change


def test_drafts_cannot_be_reviewed(api, members, label):
    response = api(members["lead"]).post("/api/reviews/", {"label": label.pk, "decision": "approve"}, format="json")
    assert response.status_code == 400


def test_responses_from_raw_text_are_parsed(api, members, project):
    conv, _ = make_conversation(project, 5, n_responses=0)
    mv = ModelVersion.objects.get(project=project)
    raw = '<think>need stock</think><tool_call>{"name": "check_inventory", "arguments": "{\\"sku\\": \\"A-5\\"}"}</tool_call>'
    response = api(members["admin"]).post("/api/responses/", {"conversation": conv.pk, "model_version": mv.pk,
                                                               "context_length": 1, "raw_text": raw}, format="json")
    assert response.status_code == 201, response.content
    message = response.json()["message"]
    assert message["reasoning"] == "need stock"
    assert message["tool_calls"][0]["function"] == {"name": "check_inventory", "arguments": '{"sku": "A-5"}'}


def test_list_endpoints_use_a_constant_number_of_queries(api, members, project, django_assert_max_num_queries):
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
