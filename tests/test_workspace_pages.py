"""The labelling, comparing and review pages through Django's test client."""

import json

import pytest

from annotator import assignment
from annotator.models import Adjudication, Correction, Label, Preference, Slot, Status, Task, TaxonomyCategory

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(project, members):
    project.overlap = 2
    project.save()
    for i in range(3):
        make_conversation(project, i, n_responses=2)
    assignment.sync_tasks(project)
    return project


def login(client, user):
    client.force_login(user)
    return client


def leaf(project):
    return TaxonomyCategory.objects.filter(project=project, parent__isnull=False).first()


def test_next_locks_an_item_and_the_page_shows_it(client, queue, members):
    login(client, members["annotator"])
    response = client.get("/p/sales/next/")
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b"response under review" in page.content and b"Verdict" in page.content
    assert Slot.objects.filter(annotator=members["annotator"], state="locked").count() == 1


def test_submit_with_errors_keeps_what_was_typed(client, queue, members):
    login(client, members["annotator"])
    task_url = client.get("/p/sales/next/")["Location"]
    task_id = int(task_url.rstrip("/").split("/")[-1])
    response = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {
            "verdict": "unreasonable",
            "note": "my careful note",
            "correction_tool_calls": json.dumps(
                [{"name": "create_order", "arguments": {"sku": "A-1", "quantity": "two"}}]
            ),
        },
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "my careful note" in html
    assert "An unreasonable response needs at least one category." in html
    assert "&#x27;two&#x27; is not of type &#x27;integer&#x27;" in html
    label = Label.objects.get(annotator=members["annotator"])
    assert label.status == Status.DRAFT and label.note == "my careful note"  # saved as a draft


def test_submit_saves_label_and_correction_then_moves_on(client, queue, members, project):
    login(client, members["annotator"])
    task_id = int(client.get("/p/sales/next/")["Location"].rstrip("/").split("/")[-1])
    response = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {
            "verdict": "unreasonable",
            "categories": [leaf(project).pk],
            "time_spent_ms": "5300",
            "correction_tool_calls": json.dumps([{"name": "check_inventory", "arguments": {"sku": "A-1"}}]),
        },
    )
    assert response.status_code == 302 and response["Location"] == "/p/sales/next/"
    label = Label.objects.get(annotator=members["annotator"])
    assert label.status == Status.SUBMITTED and label.time_spent_ms == 5300
    assert (
        Correction.objects.get(label=label).message["tool_calls"][0]["function"]["name"] == "check_inventory"
    )
    assert Slot.objects.get(task_id=task_id, annotator=members["annotator"]).state == Slot.State.DONE


def test_draft_autosave_and_reload(client, queue, members):
    login(client, members["annotator"])
    task_url = client.get("/p/sales/next/")["Location"]
    task_id = int(task_url.rstrip("/").split("/")[-1])
    saved = client.post(
        f"/p/sales/tasks/{task_id}/draft/",
        {"verdict": "reasonable", "note": "half-done thought", "correction_content": "Let me check that."},
    )
    assert saved.json()["saved"] is True
    page = client.get(task_url).content.decode()
    assert "half-done thought" in page and "Let me check that." in page


def test_someone_elses_item_by_url_is_not_opened(client, queue, members):
    login(client, members["annotator"])
    task_id = int(client.get("/p/sales/next/")["Location"].rstrip("/").split("/")[-1])
    other = members["annotator2"]
    login(client, other)
    response = client.get(f"/p/sales/tasks/{task_id}/")
    assert response.status_code == 302 and response["Location"].startswith("/p/sales/next/")
    assert client.post(f"/p/sales/tasks/{task_id}/draft/", {"note": "x"}).status_code == 409
    login(client, members["outsider"])
    assert client.get(f"/p/sales/tasks/{task_id}/").status_code == 404


def test_skip_and_heartbeat(client, queue, members):
    login(client, members["annotator"])
    task_id = int(client.get("/p/sales/next/")["Location"].rstrip("/").split("/")[-1])
    assert client.post(f"/p/sales/tasks/{task_id}/heartbeat/").status_code == 204
    assert client.post(f"/p/sales/tasks/{task_id}/skip/").status_code == 302
    assert client.post(f"/p/sales/tasks/{task_id}/heartbeat/").status_code == 409
    nxt = int(client.get("/p/sales/next/")["Location"].rstrip("/").split("/")[-1])
    assert nxt != task_id


def test_compare_records_side_and_choice(client, queue, members):
    login(client, members["annotator"])
    task_id = int(client.get("/p/sales/next/?kind=compare")["Location"].rstrip("/").split("/")[-1])
    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    assert "agent-v1" not in page  # blind: no model names on the comparison page
    response = client.post(
        f"/p/sales/tasks/{task_id}/submit/", {"choice": "b", "reason": "B checks stock", "left_side": "b"}
    )
    assert response.status_code == 302 and response["Location"] == "/p/sales/next/?kind=compare"
    pref = Preference.objects.get(annotator=members["annotator"])
    assert (pref.choice, pref.left_side, pref.status) == ("b", "b", Status.SUBMITTED)


def test_model_output_is_escaped(client, project, members):
    conv, (resp,) = make_conversation(project, 9)
    resp.message = {
        "role": "assistant",
        "content": "<script>alert(1)</script><img src=x onerror=alert(2)>",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "check_inventory", "arguments": '{"sku": "<script>x</script>"}'},
            }
        ],
    }
    resp.save()
    TaxonomyCategory.objects.create(project=project, name="<img src=x onerror=alert(3)>")
    project.guidelines = "Hello <script>alert(4)</script> [x](javascript:alert(5))"
    project.save()
    assignment.sync_tasks(project)
    login(client, members["annotator"])
    page = client.get(client.get("/p/sales/next/")["Location"]).content.decode()
    assert "<script>alert(1)" not in page and "onerror=alert(2)>" not in page
    assert "<img src=x onerror=alert(3)>" not in page and "&lt;img src=x onerror=alert(3)&gt;" in page
    assert "<script>x</script>" not in page
    home = client.get("/p/sales/").content.decode()
    assert "<script>alert(4)" not in home and "javascript:alert" not in home


def test_lead_review_and_gold_decision(client, queue, members, project):
    for who in ("annotator", "annotator2"):
        login(client, members[who])
        task_id = int(client.get("/p/sales/next/")["Location"].rstrip("/").split("/")[-1])
        verdict = "reasonable" if who == "annotator" else "unreasonable"
        client.post(
            f"/p/sales/tasks/{task_id}/submit/", {"verdict": verdict, "categories": [leaf(project).pk]}
        )
    assert Label.objects.filter(status=Status.SUBMITTED).count() == 2
    login(client, members["annotator"])
    assert client.get("/p/sales/review/").status_code == 403
    login(client, members["lead"])
    page = client.get("/p/sales/review/?view=list").content.decode()
    assert page.count("review-card") == 2 and "2 waiting" in page  # the count comes from the day roll-ups
    first, second = Label.objects.order_by("id")
    assert first.response_id == second.response_id  # breadth first: both annotators got the same item
    # opposite verdicts on one item: it shows up among disagreements
    dis = client.get("/p/sales/disagreements/").content.decode()
    assert f"item-{first.response.tasks.get(kind='label').pk}" in dis
    assert (
        client.post(
            f"/p/sales/review/label/{first.pk}/", {"decision": "approve"}, HTTP_HX_REQUEST="true"
        ).status_code
        == 200
    )
    bad = client.post(f"/p/sales/review/label/{second.pk}/", {"decision": "reject"}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and "Say why" in bad.content.decode()
    client.post(f"/p/sales/review/label/{second.pk}/", {"decision": "reject", "comment": "Tick the category"})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.APPROVED, Status.REJECTED)
    task = Task.objects.get(kind="label", response=first.response)
    client.post(
        f"/p/sales/disagreements/{task.pk}/", {"verdict": "unreasonable", "categories": [leaf(project).pk]}
    )
    assert Adjudication.objects.get(task=task).verdict == "unreasonable"
    # the rejected annotator sees the comment and can fix from the project page
    login(client, members["annotator2"])
    home = client.get("/p/sales/").content.decode()
    assert "Tick the category" in home
    fixed = client.post(
        f"/p/sales/tasks/{task.pk}/submit/",
        {"verdict": "unreasonable", "categories": [leaf(project).pk], "note": "fixed"},
    )
    assert fixed.status_code == 302
    second.refresh_from_db()
    assert second.status == Status.SUBMITTED
    login(client, members["lead"])
    page = client.get("/p/sales/review/?view=list").content.decode()
    assert (
        "1 waiting" in page and page.count("review-card") == 1
    )  # approved work left the queue, the fix is back
    assert "0 waiting" in client.get("/p/sales/review/?what=preferences").content.decode()


def test_lead_assigns_items(client, queue, members):
    login(client, members["lead"])
    response = client.post("/p/sales/assign/", {"annotator": "annotator2", "kind": "label", "count": "2"})
    assert response.status_code == 302
    assert Slot.objects.filter(reserved_for=members["annotator2"]).count() == 2


def test_labelling_page_query_count_is_constant(client, queue, members, django_assert_max_num_queries):
    login(client, members["annotator"])
    url = client.get("/p/sales/next/")["Location"]
    with django_assert_max_num_queries(25):
        assert client.get(url).status_code == 200
