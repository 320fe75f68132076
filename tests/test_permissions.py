"""Every role × every endpoint family: who may list, read, create, change, delete."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotator.models import (
    Correction,
    ImportJob,
    Label,
    Membership,
    ModelVersion,
    Preference,
    Status,
    TaxonomyCategory,
)

from .conftest import TOOLS, conversation_record, jsonl, make_conversation

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "annotator", "lead", "admin"]


@pytest.fixture
def world(project, members, conversation):
    conv, (r1, r2) = conversation
    label = Label.objects.create(
        response=r1, annotator=members["annotator"], verdict="unreasonable", status=Status.SUBMITTED
    )
    correction = Correction.objects.create(
        label=label, message={"role": "assistant", "content": "Let me check."}
    )
    pref = Preference.objects.create(
        response_a=r1, response_b=r2, annotator=members["annotator"], choice="a", status=Status.SUBMITTED
    )
    job = ImportJob.objects.create(project=project, original_name="x.jsonl", file="imports/x.jsonl")
    return {
        "projects": project.slug,
        "memberships": Membership.objects.get(project=project, user=members["annotator"]).pk,
        "model-versions": ModelVersion.objects.get(project=project).pk,
        "conversations": conv.pk,
        "responses": r1.pk,
        "categories": TaxonomyCategory.objects.filter(project=project).first().pk,
        "labels": label.pk,
        "corrections": correction.pk,
        "preferences": pref.pk,
        "imports": job.pk,
        "_r1": r1,
        "_r2": r2,
        "_conv": conv,
        "_label": label,
        "_pref": pref,
    }


def client_as(api, members, role):
    return api(None if role == "anonymous" else members[role])


# Who can read one object (detail) in `sales`: the rest get 404 (or 401/403 when anonymous).
READERS = {
    "projects": {"annotator", "lead", "admin"},
    "memberships": {"lead", "admin"},
    "model-versions": {"annotator", "lead", "admin"},
    "conversations": {"annotator", "lead", "admin"},
    "responses": {"annotator", "lead", "admin"},
    "categories": {"annotator", "lead", "admin"},
    "labels": {"annotator", "lead", "admin"},  # the object is the annotator's own
    "corrections": {"annotator", "lead", "admin"},
    "preferences": {"annotator", "lead", "admin"},
    "imports": {"lead", "admin"},
}


@pytest.mark.parametrize("family", sorted(READERS))
@pytest.mark.parametrize("role", ROLES)
def test_detail_and_list_visibility(api, members, world, family, role):
    client = client_as(api, members, role)
    detail = client.get(f"/api/{family}/{world[family]}/")
    listing = client.get(f"/api/{family}/")
    if role == "anonymous":
        assert detail.status_code in (401, 403) and listing.status_code in (401, 403)
        return
    assert listing.status_code == 200
    listed = (
        {str(row.get("slug", row.get("id"))) for row in listing.json()["results"]}
        if "results" in listing.json()
        else {str(row.get("slug", row.get("id"))) for row in listing.json()}
    )
    if role in READERS[family]:
        assert detail.status_code == 200, detail.content
        assert str(world[family]) in listed
    else:
        assert detail.status_code == 404, (family, role, detail.status_code)
        assert str(world[family]) not in listed


def test_annotators_do_not_see_each_others_work(api, members, world):
    other = api(members["annotator2"])
    for family in ("labels", "corrections", "preferences"):
        assert other.get(f"/api/{family}/{world[family]}/").status_code == 404
        assert other.get(f"/api/{family}/").json()["results"] == []


# Who may change an object (PATCH): others in the project get 403, outsiders 404.
WRITERS = {
    "projects": ({"admin"}, {"guidelines": "new"}),
    "memberships": ({"admin"}, {"role": "lead"}),
    "model-versions": ({"admin"}, {"notes": "x"}),
    "conversations": ({"admin"}, {"priority": 5}),
    "categories": ({"lead", "admin"}, {"description": "x"}),
}


@pytest.mark.parametrize("family", sorted(WRITERS))
@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_update_permissions(api, members, world, family, role):
    allowed, payload = WRITERS[family]
    response = client_as(api, members, role).patch(f"/api/{family}/{world[family]}/", payload, format="json")
    if role in allowed:
        assert response.status_code == 200, response.content
    elif role in READERS[family]:
        assert response.status_code == 403, (family, role, response.status_code)
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_delete_conversation(api, members, world, role):
    response = client_as(api, members, role).delete(f"/api/conversations/{world['conversations']}/")
    assert response.status_code == {"outsider": 404, "annotator": 403, "lead": 403, "admin": 204}[role]


def create_payloads(world, project):
    conv2, _ = make_conversation(project, 77, n_responses=0)
    return {
        "model-versions": {"project": project.slug, "name": "agent-v9"},
        "conversations": {"project": project.slug, "messages": [{"role": "user", "content": "hello"}]},
        "responses": {
            "conversation": conv2.pk,
            "model_version": world["model-versions"],
            "context_length": 1,
            "raw_text": "Hello! How can I help you today?",
        },
        "categories": {"project": project.slug, "name": "New failure"},
    }


CREATORS = {
    "model-versions": {"admin"},
    "conversations": {"admin"},
    "responses": {"admin"},
    "categories": {"lead", "admin"},
}


@pytest.mark.parametrize("family", sorted(CREATORS))
@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_create_permissions(api, members, world, project, family, role):
    payload = create_payloads(world, project)[family]
    response = client_as(api, members, role).post(f"/api/{family}/", payload, format="json")
    if role in CREATORS[family]:
        assert response.status_code == 201, response.content
    elif role == "outsider":
        # The project and its objects do not exist for an outsider: a validation error, no leak.
        assert response.status_code == 400, response.content
        assert "does not exist" in json.dumps(response.json()) or "Invalid pk" in json.dumps(response.json())
    else:
        assert response.status_code == 403, (family, role, response.content)


@pytest.mark.parametrize("family", ["labels", "corrections", "preferences"])
@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_work_is_written_only_through_the_queue(api, members, world, family, role):
    """Labels, corrections and preferences are read-only over REST: the queue endpoints write them."""
    client = client_as(api, members, role)
    assert client.post(f"/api/{family}/", {}, format="json").status_code == 405
    for method in ("put", "patch", "delete"):
        assert (
            getattr(client, method)(f"/api/{family}/{world[family]}/", {}, format="json").status_code == 405
        )


@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_review_permissions(api, members, world, role):
    response = client_as(api, members, role).post(
        "/api/reviews/", {"label": world["labels"], "decision": "approve"}, format="json"
    )
    assert response.status_code == {"outsider": 400, "annotator": 403, "lead": 201, "admin": 201}[role]


@pytest.mark.parametrize("role", ["outsider", "annotator", "lead", "admin"])
def test_import_permissions(api, members, project, role, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("c.jsonl", jsonl([conversation_record(1)]))
    with django_capture_on_commit_callbacks(execute=False):
        response = client_as(api, members, role).post(
            "/api/imports/", {"project": project.slug, "file": upload}, format="multipart"
        )
    assert response.status_code == {"outsider": 400, "annotator": 403, "lead": 403, "admin": 201}[role]


def test_only_staff_create_projects(api, members, make_user):
    payload = {"name": "New", "slug": "new", "tools": TOOLS}
    assert api(members["admin"]).post("/api/projects/", payload, format="json").status_code == 403
    staff = make_user("staffer", is_staff=True)
    response = api(staff).post("/api/projects/", payload, format="json")
    assert response.status_code == 201
    assert response.json()["my_role"] == "admin"
    assert TaxonomyCategory.objects.filter(project__slug="new").count() > 10


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 404), ("annotator", 403), ("lead", 200), ("admin", 200)]
)
def test_pages_follow_the_same_rules(client, members, world, project, role, status):
    client.force_login(members[role])
    assert client.get(f"/p/{project.slug}/imports/{world['imports']}/").status_code == status


@pytest.mark.parametrize(("role", "status"), [("outsider", 404), ("annotator", 200), ("lead", 200)])
def test_conversation_page_visibility(client, members, world, project, role, status):
    client.force_login(members[role])
    assert client.get(f"/p/{project.slug}/conversations/{world['conversations']}/").status_code == status


def test_login_required_for_pages(client, project):
    response = client.get(f"/p/{project.slug}/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
