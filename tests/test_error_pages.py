"""Error answers: styled 403/404/405/500 pages that say what happened and link back; JSON under /api/."""

import re

import pytest
from django.test import Client, RequestFactory

from annotator.models import ImportJob, Role
from config import errors
from config.text import counted

pytestmark = pytest.mark.django_db


def page(client, user, url, method="get"):
    client.force_login(user)
    return getattr(client, method)(url)


def links(response) -> set[str]:
    return set(re.findall(r'href="([^"]+)"', response.content.decode()))


def assert_styled(response, status, code_line):
    html = response.content.decode()
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert 'class="card error-page"' in html and code_line in html
    assert "/static/css/app.css" in html  # the site's look, not the browser's bare page


# --- 403 -----------------------------------------------------------------------------------------


def test_a_lead_opening_the_judge_training_form_gets_a_styled_403_that_says_who_may(client, project, members):
    response = page(client, members[Role.LEAD], "/p/sales/training/new/?stage=judge")
    assert_styled(response, 403, "Error 403")
    html = response.content.decode()
    assert "Only admins of Sales agent can train a judge." in html
    assert "your role in Sales agent is <strong>lead</strong>" in html
    assert {"/p/sales/", "/"} <= links(response)  # back to the project, and to the project list
    assert 'class="subnav"' in html  # the project's navigation, as on its other pages


def test_an_annotator_on_a_lead_page_is_told_leads_and_admins_may(client, project, members):
    response = page(client, members[Role.ANNOTATOR], "/p/sales/dashboards/")
    assert_styled(response, 403, "Error 403")
    assert "Only leads and admins of Sales agent can do this." in response.content.decode()


def test_the_403_names_the_action_when_the_view_gives_it(client, project, members):
    response = page(client, members[Role.LEAD], "/p/sales/imports/new/")
    assert "Only admins of Sales agent can import conversations." in response.content.decode()


# --- 404 -----------------------------------------------------------------------------------------


def test_a_missing_item_in_a_visible_project_links_back_to_the_project(client, project, members):
    response = page(client, members[Role.ANNOTATOR], "/p/sales/conversations/999999/")
    assert_styled(response, 404, "Error 404")
    html = response.content.decode()
    assert "Sales agent has no such page or item" in html
    assert "ImportJob" not in html and "matches the given query" not in html  # no internals
    assert {"/p/sales/", "/"} <= links(response)


def test_a_project_the_user_cannot_see_gets_no_link_to_it(client, project, other_project, members):
    response = page(client, members["outsider"], "/p/sales/conversations/")
    assert_styled(response, 404, "Error 404")
    assert "/p/sales/" not in links(response) and "/" in links(response)
    assert "Sales agent" not in response.content.decode()  # the page leaks no name either


def test_an_unknown_address_for_a_visitor_offers_the_login(client, db):
    response = client.get("/no/such/page/")
    assert_styled(response, 404, "Error 404")
    assert any(href.startswith("/accounts/login/?next=") for href in links(response))


# --- 405 -----------------------------------------------------------------------------------------


def test_opening_a_post_only_address_gets_a_styled_405_with_the_page_it_belongs_to(client, project, members):
    job = ImportJob.objects.create(project=project, original_name="in.jsonl", size_bytes=1)
    response = page(client, members[Role.ADMIN], f"/p/sales/imports/{job.pk}/cancel/")
    assert_styled(response, 405, "Error 405")
    assert response["Allow"] == "POST"
    assert "It accepts only POST. Nothing was changed." in response.content.decode()
    assert f"/p/sales/imports/{job.pk}/" in links(response)
    assert ImportJob.objects.get(pk=job.pk).status == job.status  # and indeed nothing changed


def test_page_above_skips_addresses_that_are_no_page(rf):
    assert errors.page_above(rf.get("/p/sales/review/label/7/")) == "/p/sales/review/"
    assert errors.page_above(rf.get("/nothing/here/")) == "/"


# --- the API keeps answering JSON ----------------------------------------------------------------


def test_api_errors_stay_json(api, project, members):
    client = api(members[Role.ANNOTATOR])
    missing = client.get("/api/no-such-endpoint/")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}
    forbidden = client.get(f"/api/projects/{project.slug}/dashboards/overview/")
    assert forbidden.status_code == 403 and "detail" in forbidden.json()
    not_allowed = client.delete("/api/projects/")
    assert not_allowed.status_code == 405 and "detail" in not_allowed.json()


def test_a_django_404_under_api_is_json_too(client, project, members):
    client.force_login(members[Role.LEAD])
    response = client.get("/api/projects/sales/dashboards/overview/nope.csv")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


# --- 500 -----------------------------------------------------------------------------------------


def test_the_500_page_needs_no_database_and_links_home(django_assert_num_queries):
    request = RequestFactory().get("/p/sales/")
    with django_assert_num_queries(0):
        response = errors.server_error(request)
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in html and 'href="/"' in html
    assert "{%" not in html and "{{" not in html


def test_an_unexpected_fault_answers_the_styled_500(project, members, monkeypatch):
    def broken(user):
        raise RuntimeError("boom")

    monkeypatch.setattr("annotator.views.visible_projects", broken)
    client = Client(raise_request_exception=False)
    client.force_login(members[Role.ANNOTATOR])
    response = client.get("/")
    assert response.status_code == 500
    assert b"Something went wrong on our side" in response.content and b"boom" not in response.content


def test_an_unexpected_fault_under_api_answers_json():
    response = errors.server_error(RequestFactory().get("/api/projects/"))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"


# --- wording -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, word, plural, expected",
    [
        (0, "line", "", "0 lines"),
        (1, "line", "", "1 line"),
        (2, "line", "", "2 lines"),
        (1_234, "row", "", "1,234 rows"),
        (1, "match", "matches", "1 match"),
        (3, "match", "matches", "3 matches"),
    ],
)
def test_counted(n, word, plural, expected):
    assert counted(n, word, plural) == expected


def test_a_form_sent_without_its_csrf_token_gets_a_styled_page(project, members):
    client = Client(enforce_csrf_checks=True)
    client.force_login(members[Role.ADMIN])
    response = client.post("/p/sales/imports/new/", {})
    assert_styled(response, 403, "Error 403")
    assert "Nothing was changed." in response.content.decode()
