"""The annotator's workspace in real Chromium at 1400x900 and 1024x768: with a 7-message context the
response under review and Submit are on screen on load, every category (the Format ones, 10-13, too) is
reachable by key, a contradictory label asks first, what differs between A and B is highlighted, and a
submitted label is reopened from history, changed and submitted again."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum

from annotator import assignment
from annotator.models import (
    Conversation,
    Label,
    LabelDay,
    Membership,
    ModelResponse,
    ModelVersion,
    Project,
    Role,
    Status,
    content_hash,
)
from annotator.taxonomy import seed_default_taxonomy

from ..conftest import TOOLS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = ((1400, 900), (1024, 768))
XSS = '<img src=x onerror="alert(1)">'


def call(name, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def seven_message_context():
    warehouses = [{"site": f"WH-{i}", "stock": i * 3, "eta_days": i} for i in range(14)]
    stock = {"sku": "L-200", "warehouses": warehouses}
    return [
        {"role": "user", "content": "Hello! I ordered a floor lamp last week; where is it now? " * 3},
        {"role": "assistant", "content": None, "tool_calls": [call("check_inventory", sku="L-200")]},
        {"role": "tool", "content": json.dumps(stock)},
        {"role": "assistant", "content": "The lamp is in stock in several warehouses. " * 6},
        {"role": "user", "content": "Please cancel order ORD-39260, it is late. " + XSS},
        {"role": "assistant", "content": None, "tool_calls": [call("check_inventory", sku="ORD-39260")]},
        {"role": "tool", "content": json.dumps({**stock, "order": "ORD-39260", "status": "late"})},
    ]


@pytest.fixture
def world(insecure_cookies):
    project = Project.objects.create(name="Sales", slug="sales", tools=TOOLS, overlap=1)
    seed_default_taxonomy(project)
    users = {}
    for name, role in (("ann", Role.ANNOTATOR), ("lead", Role.LEAD)):
        users[name] = get_user_model().objects.create_user(name, password=f"{name}-pass-123")
        Membership.objects.create(user=users[name], project=project, role=role)
    context = seven_message_context()
    conv = Conversation.objects.create(
        project=project,
        external_id="order-late",
        messages=context,
        tools=TOOLS,
        content_hash=content_hash(context, TOOLS),
    )
    for version, order, text in (
        ("v1", "ORD-39260", "I have cancelled your order as requested, sorry for the delay."),
        ("v2", "ORD-47959", "I have cancelled the order for you, sorry about the wait."),
    ):
        mv = ModelVersion.objects.create(project=project, name=version)
        message = {"role": "assistant", "content": text, "tool_calls": [call("cancel_order", order_id=order)]}
        ModelResponse.objects.create(
            conversation=conv,
            model_version=mv,
            context_length=7,
            message=message,
            response_hash=content_hash(message),
        )
    assignment.sync_tasks(project)
    return project, users


def open_page(browser, live_server, size, username="ann"):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    return page, dialogs


def in_view(page, selector, whole=True) -> bool:
    box = page.locator(selector).first.bounding_box()
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    assert box is not None, selector
    if whole:
        return box["y"] >= 0 and box["y"] + box["height"] <= height and box["x"] + box["width"] <= width
    return 0 <= box["y"] < height - 40


def assert_fits(page):
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
    assert page.evaluate("() => window.scrollY === 0")  # nothing scrolled the page itself


def test_label_page_fits_and_every_category_has_a_key(browser, live_server, world, shot):
    project, users = world
    for size in SIZES:
        page, dialogs = open_page(browser, live_server, size)
        page.goto(f"{live_server.url}/p/sales/next/")
        page.wait_for_selector("#task-form[data-kind=label]")
        page.wait_for_timeout(200)
        name = f"ws-label-{size[0]}x{size[1]}"
        shot(page, name)
        assert in_view(page, "[data-focus]"), "the response under review is on screen on load"
        assert in_view(page, "#submit-btn"), "Submit is on screen on load"
        assert page.locator("#earlier-context").get_attribute("open") is None  # older context collapsed
        # the Format categories (10-13) sit on screen beside their numbers, in no scroll of their own
        for number in ("10", "13"):
            assert in_view(page, f"#cat-tree kbd.num:text-is('{number}')"), number
        assert_fits(page)
        assert dialogs == []
        page.context.close()

    page, dialogs = open_page(browser, live_server, SIZES[0])
    page.goto(f"{live_server.url}/p/sales/next/")
    page.wait_for_selector("#task-form[data-kind=label]")
    too_short = page.locator("#cat-tree label:has-text('Too short') input")
    repetition = page.locator("#cat-tree label:has-text('Repetition') input")
    page.keyboard.press("n")
    page.keyboard.press("1")
    page.keyboard.press("2")  # two keys: category 12
    assert too_short.is_checked()
    page.keyboard.press("/")
    page.keyboard.type("repet")
    page.keyboard.press("Enter")  # the search's first match, ticked; Enter never submits from there
    assert repetition.is_checked() and "/tasks/" in page.url
    page.keyboard.press("Escape")
    page.keyboard.press("1")  # one key: category 1 (ticked once no second digit follows)
    page.wait_for_timeout(1100)
    assert page.locator("#cat-tree label:has-text('Tool not called') input").is_checked()
    page.keyboard.press("1")
    page.keyboard.press("e")  # any other key settles the pending number first
    assert not page.locator("#cat-tree label:has-text('Tool not called') input").is_checked()
    page.keyboard.press("Escape")

    # reasonable + failure categories: asks first; Esc goes back, N makes it unreasonable and submits
    url = page.url
    page.keyboard.press("y")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#confirm-dialog[open] [data-case=reasonable]:not([hidden])")
    assert "Too short" in page.locator("#confirm-dialog .confirm-list").inner_text()
    shot(page, "ws-label-confirm-1400x900")
    page.keyboard.press("Escape")
    assert page.locator("#confirm-dialog[open]").count() == 0 and page.url == url
    assert not Label.objects.filter(status=Status.SUBMITTED).exists()
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("n")
    page.wait_for_function("u => location.href !== u", arg=url)
    label = Label.objects.get(annotator=users["ann"], status=Status.SUBMITTED)
    assert label.verdict == "unreasonable"
    assert set(label.categories.values_list("name", flat=True)) == {"Too short", "Repetition"}

    # unreasonable with no category: says what is missing instead of sending a form the server refuses
    page.wait_for_selector("#task-form[data-kind=label]")
    page.keyboard.press("n")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#confirm-dialog[open] [data-case=no-category]:not([hidden])")
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "cat-search"
    assert dialogs == []
    page.context.close()


def test_reopen_from_history_change_and_resubmit(browser, live_server, world, shot):
    project, users = world
    page, dialogs = open_page(browser, live_server, SIZES[0])
    page.goto(f"{live_server.url}/p/sales/next/")
    page.wait_for_selector("#task-form[data-kind=label]")
    url = page.url
    page.keyboard.press("n")
    page.keyboard.press("1")
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("u => location.href !== u", arg=url)
    label = Label.objects.get(annotator=users["ann"])
    assert label.status == Status.SUBMITTED

    page.click("#history-link")
    page.wait_for_selector("table#history")
    rows = page.locator("table#history tbody tr")
    assert rows.count() == 1 and "not reviewed yet" in rows.first.inner_text()
    rows.first.locator("a.reopen").click()
    page.wait_for_selector("#task-form[data-mode=submitted]")
    assert page.locator("#cat-tree label:has-text('Too short') input").is_checked()
    assert "Save changes" in page.locator("#submit-btn").inner_text()
    page.keyboard.press("1")
    page.keyboard.press("2")  # untick Too short
    page.keyboard.press("1")
    page.keyboard.press("1")  # tick Repetition
    page.keyboard.press("e")
    page.keyboard.type("on second thought: it repeats itself")
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{live_server.url}/p/sales/history/")
    assert "Your changes are saved." in page.content()
    label.refresh_from_db()
    assert label.status == Status.SUBMITTED and label.note == "on second thought: it repeats itself"
    assert list(label.categories.values_list("name", flat=True)) == ["Repetition"]
    assert Label.objects.filter(annotator=users["ann"]).count() == 1
    counted = LabelDay.objects.filter(project=project).aggregate(n=Sum("n_train_submitted"))["n"]
    assert counted == 1  # changed, not counted twice
    assert dialogs == []
    page.context.close()

    for size in SIZES:
        page, dialogs = open_page(browser, live_server, size)
        page.goto(f"{live_server.url}/p/sales/history/")
        page.wait_for_selector("table#history")
        assert_fits(page)
        shot(page, f"ws-history-{size[0]}x{size[1]}")
        page.context.close()


def test_compare_highlights_what_differs_and_fits(browser, live_server, world, shot):
    for size in SIZES:
        page, dialogs = open_page(browser, live_server, size)
        page.goto(f"{live_server.url}/p/sales/next/?kind=compare")
        page.wait_for_selector("#task-form[data-kind=compare]")
        page.wait_for_timeout(200)
        shot(page, f"ws-compare-{size[0]}x{size[1]}")
        marked = page.locator(".pair .arg.diff").all_inner_texts()
        assert any("ORD-39260" in t for t in marked) and any("ORD-47959" in t for t in marked)
        words = page.locator(".pair mark.diff").all_inner_texts()
        assert words and not any("sorry" in w for w in words)  # shared words stay plain
        assert "cancelled" not in " ".join(words)
        assert in_view(page, "#pair", whole=False), "the two answers are on screen on load"
        assert in_view(page, "#submit-btn")
        assert page.locator(".pair img, .chat img").count() == 0
        assert_fits(page)
        assert dialogs == []
        page.context.close()
