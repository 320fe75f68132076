"""A lead reviews five items in real Chromium with the keyboard only: approve, reject with a comment, skip
ahead and back; a rejection without a comment says why, both before sending and when the server answers
400; the disagreements page's gold categories are a grouped, filterable checkbox list."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotator import assignment
from annotator.models import Label, Membership, Project, Review, Role, Status, TaxonomyCategory
from annotator.taxonomy import seed_default_taxonomy

from ..conftest import TOOLS, make_conversation
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SAY_WHY = "Say why it is rejected"


@pytest.fixture
def setup(insecure_cookies):
    project = Project.objects.create(name="Sales", slug="sales", tools=TOOLS, overlap=2)
    seed_default_taxonomy(project)
    users = {}
    for name, role in (("ann", Role.ANNOTATOR), ("ann2", Role.ANNOTATOR), ("lead", Role.LEAD)):
        users[name] = get_user_model().objects.create_user(name, password=f"{name}-pass-123")
        Membership.objects.create(user=users[name], project=project, role=role)
    leaf = TaxonomyCategory.objects.filter(project=project, parent__isnull=False).first()
    t0 = timezone.now() - dt.timedelta(hours=1)
    labels = []
    for i in range(6):
        response = make_conversation(project, i)[1][0]
        verdict = "unreasonable" if i % 2 else "reasonable"
        label = Label.objects.create(
            response=response,
            annotator=users["ann"],
            verdict=verdict,
            status=Status.SUBMITTED,
            submitted_at=t0 + dt.timedelta(minutes=i),
        )
        label.categories.set([leaf] if verdict == "unreasonable" else [])
        labels.append(label)
    # a second opinion on the first item, the other way: a disagreement
    other = Label.objects.create(
        response=labels[0].response,
        annotator=users["ann2"],
        verdict="unreasonable",
        status=Status.SUBMITTED,
        submitted_at=t0 + dt.timedelta(minutes=30),
    )
    other.categories.set([leaf])
    assignment.sync_tasks(project)
    return project, users, labels


def current_id(page) -> int:
    return int(page.locator("article.stream-item").get_attribute("data-pk"))


def wait_for_item(page, pk):
    page.wait_for_selector(f"article.stream-item[data-pk='{pk}']")


def test_a_lead_reviews_five_items_with_the_keyboard(browser, live_server, setup, shot):
    project, users, labels = setup
    page, dialogs = login(browser, live_server, "lead", "lead-pass-123")
    page.goto(f"{live_server.url}/p/sales/review/?annotator=ann")
    assert current_id(page) == labels[0].pk
    assert page.locator(".stream-pos").inner_text().startswith("Item 1 of 6 waiting")
    assert page.locator(".msg.user").first.is_visible()  # what the user asked is on screen
    shot(page, "review-stream-1400")

    # 1: approve with A
    page.keyboard.press("a")
    wait_for_item(page, labels[1].pk)
    assert "annotator=ann" in page.url and f"at={labels[1].pk}" in page.url

    # 2: R, then Enter with nothing typed: the message shows, nothing is sent
    page.keyboard.press("r")
    box = page.locator("article.stream-item textarea[name=comment]")
    assert box.evaluate("el => el === document.activeElement")
    page.keyboard.press("Enter")
    note = page.locator("article.stream-item .comment-required")
    note.wait_for(state="visible")
    assert SAY_WHY in note.inner_text()
    assert box.get_attribute("aria-invalid") == "true"
    shot(page, "review-stream-reject-needs-comment")
    assert Label.objects.get(pk=labels[1].pk).status == Status.SUBMITTED
    # type the reason; Enter sends the rejection
    page.keyboard.type("The tool call is missing")
    assert note.is_hidden()
    page.keyboard.press("Enter")
    wait_for_item(page, labels[2].pk)
    rejected = Label.objects.get(pk=labels[1].pk)
    assert rejected.status == Status.REJECTED and rejected.reviews.get().comment == "The tool call is missing"

    # 3: J skips ahead (item 3 stays waiting), K comes back, → goes ahead again
    page.keyboard.press("j")
    wait_for_item(page, labels[3].pk)
    page.keyboard.press("k")
    wait_for_item(page, labels[2].pk)
    page.keyboard.press("ArrowRight")
    wait_for_item(page, labels[3].pk)
    page.keyboard.press("ArrowLeft")
    wait_for_item(page, labels[2].pk)
    page.keyboard.press("a")
    wait_for_item(page, labels[3].pk)

    # 4: the server's own 400 (a blank comment sent past the page's check) shows in place, text kept
    page.evaluate(
        """() => {
          const form = document.querySelector('article.stream-item .review-form');
          htmx.ajax('POST', form.getAttribute('hx-post'),
                    {source: form, values: {decision: 'reject', comment: '   '}});
        }"""
    )
    page.wait_for_selector("article.stream-item .review-form p.error[role=alert]:not(.comment-required)")
    assert (
        SAY_WHY
        in page.locator("article.stream-item .review-form p.error:not(.comment-required)").inner_text()
    )
    assert current_id(page) == labels[3].pk
    # the focus comes back to the comment box once the swapped-in form settles: wait for it before typing
    # (a key typed a moment earlier went elsewhere, and CI saw "rong category")
    page.wait_for_function(
        "() => document.activeElement && document.activeElement.matches("
        "'article.stream-item textarea[name=comment]')"
    )
    page.keyboard.type("Wrong category")
    page.keyboard.press("Enter")
    wait_for_item(page, labels[4].pk)
    assert Label.objects.get(pk=labels[3].pk).reviews.get().comment.strip() == "Wrong category"

    # 5: approve; the list goes on with the last one
    page.keyboard.press("a")
    wait_for_item(page, labels[5].pk)
    assert page.locator(".stream-pos").inner_text().startswith("Item 1 of 1 waiting")  # the last one left

    # ? opens the key sheet
    page.keyboard.press("?")
    assert page.locator("dialog#review-keys").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("dialog#review-keys").is_visible()

    assert [Label.objects.get(pk=lb.pk).status for lb in labels[:5]] == [
        Status.APPROVED,
        Status.REJECTED,
        Status.APPROVED,
        Status.REJECTED,
        Status.APPROVED,
    ]
    assert Review.objects.count() == 5  # one review per decision, none twice
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "review-stream-1024")
    assert dialogs == []


def test_bulk_approve_and_the_gold_category_picker(browser, live_server, setup, shot):
    project, users, labels = setup
    page, dialogs = login(browser, live_server, "lead", "lead-pass-123")
    page.goto(f"{live_server.url}/p/sales/review/?verdict=unreasonable&annotator=ann")
    page.click("#bulk-approve-link")
    page.wait_for_selector("#bulk-confirm")
    assert page.locator(".review-list tbody tr").count() == 3
    page.click("#bulk-confirm button.primary")
    page.wait_for_selector(".flash li.success")
    assert "Approved 3 labels" in page.locator(".flash").inner_text()
    assert Label.objects.filter(annotator=users["ann"], status=Status.APPROVED).count() == 3

    page.goto(f"{live_server.url}/p/sales/disagreements/")
    picker = page.locator("[data-cat-picker]").first
    page.locator("input[name=verdict][value=unreasonable]").first.check()
    assert picker.evaluate("el => el.open")  # choosing "unreasonable" opens the categories
    picker.locator(".cat-filter").fill("wrong tool")
    visible = picker.locator(".cat-option:visible")
    assert visible.count() == 1 and visible.inner_text().strip() == "Wrong tool"
    visible.locator("input").check()
    assert picker.locator(".picked").inner_text() == "Wrong tool"
    page.set_viewport_size({"width": 1400, "height": 900})
    shot(page, "disagreements-picker-1400")
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "disagreements-picker-1024")
    picker.locator("xpath=ancestor::form").locator("button.primary").click()
    page.wait_for_selector(".flash li.success")
    from annotator.models import Adjudication

    gold = Adjudication.objects.get()
    assert gold.verdict == "unreasonable" and [c.name for c in gold.categories.all()] == ["Wrong tool"]
    assert dialogs == []
