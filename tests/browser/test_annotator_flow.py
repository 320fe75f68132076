"""An annotator's and a lead's day in real Chromium: keyboard labelling, correction editor,
comparison, a reload mid-draft, review, and hostile model output that must stay inert."""

import json

import pytest
from django.contrib.auth import get_user_model

from annotator import assignment
from annotator.models import Label, Membership, Preference, Project, Role, Status
from annotator.taxonomy import seed_default_taxonomy

from ..conftest import TOOLS, make_conversation
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

XSS = '<img src=x onerror="alert(\'xss\')"><script>alert("xss2")</script>'


@pytest.fixture
def setup(insecure_cookies):
    project = Project.objects.create(
        name="Sales", slug="sales", tools=TOOLS, overlap=1, guidelines="Be strict. " + XSS
    )
    seed_default_taxonomy(project)
    users = {}
    for name, role in (("ann", Role.ANNOTATOR), ("lead", Role.LEAD)):
        users[name] = get_user_model().objects.create_user(name, password=f"{name}-pass-123")
        Membership.objects.create(user=users[name], project=project, role=role)
    for i in range(6):
        conv, responses = make_conversation(project, i, n_responses=2)
        if i == 0:
            r = responses[0]
            r.message = {
                "role": "assistant",
                "content": "Sure! " + XSS,
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "check_inventory", "arguments": json.dumps({"sku": XSS})},
                    }
                ],
            }
            r.save()
    from annotator.models import TaxonomyCategory

    TaxonomyCategory.objects.create(project=project, name="Evil " + XSS, position=99)
    assignment.sync_tasks(project)
    return project, users


def wait_next_item(page, previous_url):
    page.wait_for_function(
        "u => location.href !== u && document.querySelector('#task-form')", arg=previous_url
    )


def test_annotator_and_lead_day(browser, live_server, setup, shot):
    project, users = setup
    page, dialogs = login(browser, live_server, "ann", "ann-pass-123")
    page.goto(f"{live_server.url}/p/sales/")
    shot(page, "01-project-home")
    assert page.locator(".markdown img, .markdown script").count() == 0  # guidelines sanitised
    page.goto(f"{live_server.url}/p/sales/next/")
    page.wait_for_selector("#task-form")
    shot(page, "02-label-page")
    # the first item carries the hostile payload: shown as text, never as markup
    review = page.locator(".under-review")
    assert (
        review.locator(".bubble").inner_text().strip() == "Sure!"
    )  # Markdown reply: sanitised, tags dropped
    assert review.locator("img, script").count() == 0
    assert (
        '<script>alert(\\"xss2\\")</script>' in review.locator(".toolcall pre").inner_text()
    )  # shown as text
    assert page.locator("#cat-tree label:has-text('Evil <img src=x')").count() == 1
    assert page.locator("#cat-tree img").count() == 0

    # three items, keyboard only: N (unreasonable), 1 (first category), Ctrl+Enter
    for i in range(3):
        url = page.url
        page.keyboard.press("n")
        page.keyboard.press("1")
        if i == 1:
            # fix a tool call in the correction editor: the schema error appears, then clears
            page.keyboard.press("c")
            page.keyboard.press("Control+a")
            page.keyboard.type('[{"name": "create_order", "arguments": {"sku": "A-1", "quantity": "two"}}]')
            page.wait_for_selector("#correction-errors .errors:has-text(\"is not of type 'integer'\")")
            shot(page, "03-schema-error")
            page.keyboard.press("Control+a")
            page.keyboard.type('[{"name": "create_order", "arguments": {"sku": "A-1", "quantity": 2}}]')
            page.wait_for_selector("#correction-errors .ok-note")
            page.keyboard.press("Escape")
        page.keyboard.press("Control+Enter")
        wait_next_item(page, url)
    labels = Label.objects.filter(annotator=users["ann"], status=Status.SUBMITTED)
    assert labels.count() == 3
    assert all(lb.verdict == "unreasonable" and lb.categories.count() == 1 for lb in labels)
    fixed = [lb for lb in labels if hasattr(lb, "correction")]
    assert len(fixed) == 1
    assert (
        fixed[0].correction.message["tool_calls"][0]["function"]["arguments"]
        == '{"sku": "A-1", "quantity": 2}'
    )

    # reload mid-draft: the verdict and the note survive
    page.keyboard.press("y")
    page.keyboard.press("e")
    page.keyboard.type("half a thought")
    page.wait_for_selector("#save-state:has-text('draft saved')")
    page.reload()
    page.wait_for_selector("#task-form")
    assert page.is_checked("input[name=verdict][value=reasonable]")
    assert page.input_value("#note") == "half a thought"
    shot(page, "04-after-reload")
    page.keyboard.press("Control+Enter")
    wait_next_item(page, page.url)

    # compare a pair: A, a reason, submit
    page.goto(f"{live_server.url}/p/sales/next/?kind=compare")
    page.wait_for_selector("#task-form[data-kind=compare]")
    shot(page, "05-compare")
    page.keyboard.press("a")
    page.keyboard.press("r")
    page.keyboard.type("Left checks the stock first")
    page.keyboard.press("Escape")
    url = page.url
    page.keyboard.press("Control+Enter")
    page.wait_for_function("u => location.href !== u", arg=url)
    pref = Preference.objects.get(annotator=users["ann"])
    assert pref.status == Status.SUBMITTED and pref.reason == "Left checks the stock first"
    assert pref.choice == pref.left_side  # "A" is whatever was shown on the left

    # no script from the payload ever ran on any page the annotator saw
    assert dialogs == [], dialogs

    # the lead approves one label and rejects another
    lead, lead_dialogs = login(browser, live_server, "lead", "lead-pass-123")
    lead.goto(f"{live_server.url}/p/sales/review/")  # the stream: one item at a time
    assert "of 4 waiting" in lead.locator(".stream-pos").inner_text()
    shot(lead, "06-review")
    first_id = lead.locator("article.review-card").get_attribute("id").split("-")[1]
    lead.locator("article.review-card button[value=approve]").click()
    lead.wait_for_selector(f".review-done:has-text('label {first_id} saved')")
    item = lead.locator("article.review-card")
    second_id = item.get_attribute("id").split("-")[1]
    assert second_id != first_id
    item.locator("textarea[name=comment]").fill("Wrong category: this is a missing tool call")
    item.locator("button[value=reject]").click()
    lead.wait_for_selector(f".review-done:has-text('label {second_id} saved')")
    assert Label.objects.get(pk=first_id).status == Status.APPROVED
    assert Label.objects.get(pk=second_id).status == Status.REJECTED
    assert lead_dialogs == []
