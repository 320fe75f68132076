"""Project pages: the sub-navigation marks where you are, buttons a role cannot use are not shown,
counts read "1 line" / "2 lines", and every dashboard page marks its tab."""

import re

import pytest
from django.core.files.base import ContentFile

from annotator.importers import run_import
from annotator.models import ImportJob, Role

from .conftest import conversation_record, jsonl, make_conversation

pytestmark = pytest.mark.django_db


def get(client, user, url):
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def current(html: str, nav_class: str) -> list[str]:
    """The names of the links a navigation marks aria-current."""
    nav = re.search(rf'<nav class="{nav_class}".*?</nav>', html, re.S).group(0)
    return re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]+)</a>', nav)


def import_job(project, data: bytes) -> ImportJob:
    job = ImportJob(project=project, original_name="in.jsonl", size_bytes=len(data))
    job.file.save("in.jsonl", ContentFile(data), save=False)
    job.save()
    return run_import(job.pk)


@pytest.mark.parametrize(
    "url, section",
    [
        ("/p/sales/", "Overview"),
        ("/p/sales/conversations/", "Conversations"),
        ("/p/sales/conversations/{conversation}/", "Conversations"),
        ("/p/sales/imports/new/", "Import"),
        ("/p/sales/imports/{job}/", "Import"),
        ("/p/sales/dashboards/", "Dashboards"),
        ("/p/sales/dashboards/cases/", "Dashboards"),
        ("/p/sales/review/", "Review"),
    ],
)
def test_project_pages_carry_the_sub_navigation_with_their_section_marked(
    client, project, members, url, section
):
    conversation, _ = make_conversation(project)
    job = import_job(project, jsonl([conversation_record(1)]))
    html = get(client, members[Role.ADMIN], url.format(conversation=conversation.pk, job=job.pk))
    assert current(html, "subnav") == [section]


def test_dashboard_tabs_mark_every_dashboard_page(client, project, members):
    for path, tab in [
        ("", "Badcases"),
        ("annotators/", "Annotators"),
        ("agreement/", "Agreement"),
        ("models/", "Model versions"),
        ("cases/", "Cases"),
        ("comparisons/", "Comparisons"),
    ]:
        html = get(client, members[Role.LEAD], f"/p/sales/dashboards/{path}")
        assert current(html, "dash-tabs") == [tab], path


def test_import_wording_is_singular_for_one(client, project, members):
    job = import_job(project, jsonl([conversation_record(1)]) + b"not json\n")
    assert job.message.startswith("1 conversation and 1 response imported; 1 line rejected;")
    assert "1 labelling task and 0 comparison tasks queued." in job.message
    html = get(client, members[Role.LEAD], f"/p/sales/imports/{job.pk}/")
    assert "1 line rejected" in html and "1 lines" not in html


def test_import_wording_is_plural_for_two(project):
    job = import_job(project, jsonl([conversation_record(1), conversation_record(2)]) + b"x\ny\n")
    assert job.message.startswith("2 conversations and 2 responses imported; 2 lines rejected;")
    only_bad = import_job(project, b"nope\n")
    assert only_bad.message == "No valid lines: the only line was rejected."


def test_a_lead_sees_no_cancel_button_on_a_running_import_an_admin_does(client, project, members):
    job = ImportJob.objects.create(project=project, original_name="in.jsonl", size_bytes=1)
    assert not job.finished
    cancel = f"/p/sales/imports/{job.pk}/cancel/"
    assert cancel not in get(client, members[Role.LEAD], f"/p/sales/imports/{job.pk}/")
    assert cancel in get(client, members[Role.ADMIN], f"/p/sales/imports/{job.pk}/")


def test_project_home_counts_data_up_to_a_cap_and_progress_per_kind(client, project, members, monkeypatch):
    from annotator import views

    for i in range(3):
        make_conversation(project, i, n_responses=2)
    html = get(client, members[Role.ANNOTATOR], f"/p/{project.slug}/")
    assert re.search(r"<dt>Conversations</dt><dd>3</dd>", html)
    assert re.search(r"<dt>Responses</dt><dd>6</dd>", html)
    assert 'data-kind="label"' in html and 'data-kind="compare"' in html  # labels and comparisons
    monkeypatch.setattr(views, "HOME_COUNT_CAP", 2)
    html = get(client, members[Role.ANNOTATOR], f"/p/{project.slug}/")
    assert re.search(r"<dt>Conversations</dt><dd>2\+</dd>", html)
    assert re.search(r"<dt>Responses</dt><dd>2\+</dd>", html)
