"""Hostile text in every user- or model-controlled field, rendered in real Chromium on each page
type that shows it: no dialog fires, no injected element or handler exists, no javascript: link."""

import json

import pytest
from django.contrib.auth import get_user_model

from annotator import assignment
from annotator.models import (
    Correction,
    Label,
    Membership,
    ModelVersion,
    Project,
    Review,
    Role,
    Status,
    TaxonomyCategory,
)
from annotator.taxonomy import seed_default_taxonomy
from evaluation.models import EvalCase, EvalSuite
from training.models import DatasetSnapshot, TrainingJob

from ..conftest import TOOLS, make_conversation
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def payload(where: str) -> str:
    mark = f"window.__xss=(window.__xss||[]).concat('{where}')"
    return (
        f'<img src=x onerror="{mark}"><script>{mark}</script><svg onload="{mark}"></svg>'
        f'<a href="javascript:{mark}">x</a>"\'><iframe srcdoc="<script>parent.alert(1)</script>"></iframe>'
        f"[md link](javascript:alert('{where}')) <b onmouseover=alert(1)>{where}</b>"
    )


def short(where: str) -> str:
    """For fields of up to 150-200 characters (names)."""
    return f"<img src=x onerror=\"window.__xss=['{where}']\"><svg onload=alert(1)>"


@pytest.fixture
def hostile(insecure_cookies):
    project = Project.objects.create(
        name="Sales " + short("project-name"),
        slug="sales",
        tools=TOOLS,
        overlap=1,
        guidelines="# Guide\n" + payload("guidelines") + "\n\n[click](javascript:alert(1))",
    )
    seed_default_taxonomy(project)
    admin = get_user_model().objects.create_user("boss", password="boss-pass-123")
    annotator = get_user_model().objects.create_user("ann", password="ann-pass-123")
    evil = get_user_model().objects.create_user("evil" + short("username"), password="x")
    for user, role in ((admin, Role.ADMIN), (annotator, Role.ANNOTATOR), (evil, Role.ANNOTATOR)):
        Membership.objects.create(user=user, project=project, role=role)
    category = TaxonomyCategory.objects.create(
        project=project,
        name="Evil " + short("category-name"),
        description=payload("category-description"),
        position=99,
    )
    conv, responses = make_conversation(project, 1, n_responses=2)
    conv.messages = [
        {"role": "system", "content": payload("system-message")},
        {"role": "user", "content": payload("user-message")},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "check_inventory" + payload("tool-name"),
                        "arguments": json.dumps({"sku": payload("tool-args")}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": payload("tool-result")},
        {"role": "user", "content": "and?"},
    ]
    conv.save()
    r = responses[0]
    r.context_length = 5
    r.raw_text = payload("raw-text")
    r.message = {
        "role": "assistant",
        "content": payload("response-content"),
        "reasoning": payload("reasoning"),
        "tool_calls": [
            {
                "type": "function",
                "function": {
                    "name": payload("response-tool-name"),
                    "arguments": json.dumps({"sku": payload("response-args")}),
                },
            }
        ],
    }
    r.save()
    label = Label.objects.create(response=r, annotator=evil, verdict="unreasonable", status=Status.SUBMITTED)
    label.categories.add(category)
    Correction.objects.create(label=label, message={"role": "assistant", "content": payload("correction")})
    Review.objects.create(
        reviewer=admin, label=label, decision=Review.Decision.REJECT, comment=payload("review-comment")
    )
    mv = ModelVersion.objects.get(project=project)
    snap = DatasetSnapshot.objects.create(
        project=project,
        kind="sft",
        version=1,
        layout="trl_messages",
        note=payload("dataset-note"),
        status="done",
    )
    TrainingJob.objects.create(
        project=project,
        name="job " + short("job-name"),
        stage="sft",
        base_version=mv,
        train_snapshot=snap,
        message=payload("job-message"),
    )
    suite = EvalSuite.objects.create(
        project=project,
        name="suite " + short("suite-name"),
        version=1,
        description=payload("suite-description"),
        source="gold",
        content_hash="0" * 64,
        case_count=1,
    )
    EvalCase.objects.create(
        suite=suite,
        position=0,
        external_id="case " + short("case-id"),
        messages=[{"role": "user", "content": payload("case-text")}],
        expected={"role": "assistant", "content": payload("case-expected")},
    )
    assignment.sync_tasks(project)
    return {
        "project": project,
        "conv": conv,
        "snap": snap,
        "suite": suite,
        "job": TrainingJob.objects.get(project=project),
    }


INJECTED = """() => ({
  flagged: window.__xss || [],
  handlers: [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(
      a => a.name.startsWith('on') && /__xss|alert/.test(a.value))).map(e => e.outerHTML.slice(0, 120)),
  // data islands (json_script: type=application/json, < escaped) carry the text but never run
  scripts: [...document.scripts].filter(
      s => !/json/.test(s.type) && /__xss|alert/.test(s.textContent)).length,
  js_links: [...document.querySelectorAll('a[href]')].filter(
      a => a.href.trim().toLowerCase().startsWith('javascript:')).length,
  iframes: document.querySelectorAll('iframe[srcdoc]').length,
})"""


def assert_inert(page, url, dialogs, shows=None):
    response = page.goto(url)
    assert response.status < 400, (url, response.status)
    page.wait_for_load_state("networkidle")
    found = page.evaluate(INJECTED)
    assert found == {"flagged": [], "handlers": [], "scripts": 0, "js_links": 0, "iframes": 0}, (url, found)
    assert dialogs == [], (url, dialogs)
    if shows:
        assert shows in page.content() or shows in page.inner_text("body"), (url, shows)


def test_hostile_text_is_inert_on_every_page(browser, live_server, hostile):
    p = hostile["project"].slug
    page, dialogs = login(browser, live_server, "boss", "boss-pass-123")
    base = live_server.url
    pages = [
        "/",
        f"/p/{p}/",
        f"/p/{p}/conversations/",
        f"/p/{p}/conversations/{hostile['conv'].pk}/",
        f"/p/{p}/review/",
        f"/p/{p}/disagreements/",
        f"/p/{p}/assign/",
        f"/p/{p}/dashboards/",
        f"/p/{p}/dashboards/annotators/",
        f"/p/{p}/dashboards/cases/",
        f"/p/{p}/dashboards/models/",
        f"/p/{p}/datasets/",
        f"/p/{p}/datasets/{hostile['snap'].pk}/",
        f"/p/{p}/training/",
        f"/p/{p}/training/{hostile['job'].pk}/",
        f"/p/{p}/eval/",
        f"/p/{p}/eval/suites/{hostile['suite'].pk}/",
    ]
    for path in pages:
        assert_inert(page, base + path, dialogs)
    # The text is shown, as text.
    page.goto(f"{base}/p/{p}/conversations/{hostile['conv'].pk}/")
    assert "onerror=" in page.inner_text("body")

    ann, ann_dialogs = login(browser, live_server, "ann", "ann-pass-123")
    assert_inert(ann, f"{base}/p/{p}/next/", ann_dialogs)
    assert "/tasks/" in ann.url
    assert_inert(ann, f"{base}/p/{p}/", ann_dialogs)
