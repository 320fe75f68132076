"""Page layout in real Chromium at 1400x900 and 1024x768 (issue #17): a long table grows with the page
instead of hiding rows in an inner scroll box, a table too wide scrolls sideways behind a visible cue,
ids stay on one line, stacked columns take the full width, the taxonomy's Root cause column is readable,
every project page has the same width, and the Note of a reopened label is reachable above the pinned
Save bar."""

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from annotator import assignment
from annotator.models import Conversation, Role
from evaluation.suites import create_suite

from ..conftest import make_conversation
from ..test_dashboards import DAY1, Builder, cat
from ..test_eval_support import crafted_run, gold_record, model

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = ((1400, 900), (1024, 768))
NOTE = "The shopper asked for something live; the agent answered from memory instead of calling a tool."

# every .table-wrap on the page: no inner vertical scroll box, and a sideways one only with its cue
WRAPS = """() => [...document.querySelectorAll('.table-wrap')].map(w => ({
  id: (w.querySelector('table') || {}).id, clientHeight: w.clientHeight, scrollHeight: w.scrollHeight,
  sideways: w.scrollWidth > w.clientWidth,
  cue: getComputedStyle(w).backgroundAttachment.includes('local')}))"""


@pytest.fixture
def world(project, members, insecure_cookies, settings):
    """60 labels on 60 days (a 60-row "per day" table), conversation ids with hyphens, and a finished
    evaluation run over 60 cases whose ids have hyphens too."""
    settings.DASHBOARD_CACHE_SECONDS = 0
    b = Builder(project)
    base = b.version("demo-base")
    leaf = cat(project, "Tool not called")
    for i in range(60):
        response = b.response(base)
        Conversation.objects.filter(pk=response.conversation_id).update(external_id=f"chat-seen-1007-{i:05d}")
        bad = i % 2 == 1
        b.label(
            response,
            members[Role.ANNOTATOR],
            "unreasonable" if bad else "reasonable",
            [leaf] if bad else [],
            day=DAY1 + dt.timedelta(days=i),
            note=NOTE if i % 3 == 0 else "",
        )
    records = [(i, gold_record(i, call=i % 4 != 0, id=f"eval-unseen-9000-{i:05d}")) for i in range(1, 61)]
    suite, _ = create_suite(project, "held-out (unseen phrasings)", records, source="gold")
    run = crafted_run(
        project, suite, model(project, "demo-base+sft-job1", origin="sft"), set(range(1, 61, 3))
    )
    return project, run


def open_page(browser, live_server, size, username, password):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    return page, errors


def assert_no_inner_scroll_box(page, where):
    for wrap in page.evaluate(WRAPS):
        assert wrap["clientHeight"] == wrap["scrollHeight"], (where, wrap)  # grows with the page
        assert not wrap["sideways"] or wrap["cue"], (where, wrap)  # too wide: a scroll shadow says so
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth"), where


def assert_last_row_reached_by_page_scroll(page, table):
    row = page.locator(f"{table} tbody tr").last
    page.evaluate(
        "sel => scrollTo(0, scrollY + document.querySelector(sel).getBoundingClientRect().top - 100)",
        f"{table} tbody tr:last-child",
    )
    assert page.evaluate("() => scrollY") > 0  # the page scrolled, nothing else had to
    box = row.bounding_box()
    assert 0 <= box["y"] and box["y"] + box["height"] <= page.viewport_size["height"], box
    # no box clips it: the point at the row's middle is the row's own
    inside = page.evaluate(
        """([sel, x, y]) => document.querySelector(sel).contains(document.elementFromPoint(x, y))""",
        [f"{table} tbody tr:last-child", box["x"] + 20, box["y"] + box["height"] / 2],
    )
    assert inside, table


def assert_on_one_line(page, selector):
    """Ids stay whole: a hyphen is a line-break opportunity, so a squeezed column broke them at each one."""
    wrapped = page.eval_on_selector_all(
        selector, "els => els.filter(e => e.getClientRects().length > 1).map(e => e.textContent)"
    )
    assert page.locator(selector).count() and wrapped == [], wrapped


def assert_one_width(page, urls):
    """One content width on every project page: the title and the tab bar stay put between tabs."""
    boxes = {}
    for url in urls:
        page.goto(url)
        nav = page.locator("nav.subnav[aria-label=project]").bounding_box()
        boxes[url] = (round(nav["x"]), round(nav["width"]))
    assert len(set(boxes.values())) == 1, boxes


def assert_stacked_columns_fill_the_width(page, urls):
    """Below 1100px .columns stack, and each column takes the full width rather than its content's."""
    for url in urls:
        page.goto(url)
        widths = page.eval_on_selector_all(
            ".columns",
            "cs => cs.map(c => [c.clientWidth, [...c.children].map(k => k.getBoundingClientRect().width)])",
        )
        assert widths, url
        for full, children in widths:
            assert all(abs(w - full) <= 1 for w in children), (url, full, children)


def assert_root_cause_readable(page):
    """The taxonomy's Root cause column keeps a readable width (no "recognis/e"), and the page fits."""
    causes = page.eval_on_selector_all(
        ".tax-tree tbody td.cause:nth-child(2)", "tds => tds.map(td => td.getBoundingClientRect().width)"
    )
    assert causes and min(causes) > 100, causes
    assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")


def test_tables_ids_columns_widths_at_both_sizes(browser, live_server, world, shot):
    project, run = world
    slug = project.slug
    urls = {
        "overview": reverse("annotator:dash-overview", args=[slug]) + "?bucket=day",
        "cases": reverse("annotator:dash-cases", args=[slug]),
        "annotators": reverse("annotator:dash-annotators", args=[slug]),
        "eval-home": reverse("evaluation:home", args=[slug]),
        "run-report": reverse("evaluation:run-detail", args=[slug, run.pk]),
        "run-cases": reverse("evaluation:run-results", args=[slug, run.pk]) + "?show=all",
    }
    project_pages = [
        reverse("annotator:project-home", args=[slug]),
        reverse("annotator:conversation-list", args=[slug]),
        reverse("annotator:taxonomy", args=[slug]),
        reverse("annotator:review", args=[slug]),
        reverse("annotator:dash-overview", args=[slug]),
        reverse("training:dataset-list", args=[slug]),
        reverse("training-jobs:list", args=[slug]),
        reverse("evaluation:home", args=[slug]),
    ]
    conversation = Conversation.objects.filter(project=project).first()
    for size in SIZES:
        page, errors = open_page(browser, live_server, size, "lead", "pw-lead")
        for name, url in urls.items():
            page.goto(live_server.url + url)
            page.wait_for_load_state("load")
            shot(page, f"layout-{name}-{size[0]}")
            assert_no_inner_scroll_box(page, (name, size))

        # the 60-row "per day" table and the 50-row pages: the last row is reached by scrolling the page
        page.goto(live_server.url + urls["overview"])
        assert page.locator("#table-over-time tbody tr").count() == 60
        assert_last_row_reached_by_page_scroll(page, "#table-over-time")
        page.goto(live_server.url + urls["cases"])
        assert page.locator("#table-cases tbody tr").count() == 50
        assert_last_row_reached_by_page_scroll(page, "#table-cases")
        assert_on_one_line(page, "#table-cases tbody td:first-child a")  # chat-seen-1007-00059
        page.goto(live_server.url + urls["run-cases"])
        assert_last_row_reached_by_page_scroll(page, "#results")
        assert_on_one_line(page, "#results tbody td:nth-child(2) a")  # eval-unseen-9000-00001

        assert_one_width(page, [live_server.url + url for url in project_pages])

        if size[0] == 1024:
            detail = reverse("annotator:conversation-detail", args=[slug, conversation.pk])
            assert_stacked_columns_fill_the_width(
                page, [live_server.url + u for u in (detail, urls["run-report"])]
            )
            page.goto(live_server.url + reverse("annotator:taxonomy", args=[slug]))
            assert_root_cause_readable(page)
            shot(page, "layout-taxonomy-1024")
            # a table too wide for the window scrolls sideways in its box, with the cue, not the page
            page.goto(live_server.url + urls["annotators"])
            wide = [w for w in page.evaluate(WRAPS) if w["id"] == "table-annotators"]
            assert wide and wide[0]["sideways"] and wide[0]["cue"], wide
        assert errors == []
        page.context.close()


@pytest.fixture
def queue(project, members, insecure_cookies):
    project.overlap = 1
    project.save()
    make_conversation(project, 1, n_responses=1)
    assignment.sync_tasks(project)
    return project


def test_reopened_label_note_is_reachable_above_the_save_bar_at_1024(
    browser, live_server, queue, members, shot
):
    client = Client()
    client.force_login(members[Role.ANNOTATOR])
    task_url = client.get("/p/sales/next/")["Location"]
    leaf = cat(queue, "Tool not called")
    done = client.post(
        task_url + "submit/",
        {
            "verdict": "unreasonable",
            "categories": [leaf.pk],
            "expected_status": "draft",
            "note": "second look",
        },
    )
    assert done.status_code == 302

    page, errors = open_page(browser, live_server, (1024, 768), "annotator", "pw-annotator")
    page.goto(live_server.url + task_url)
    page.wait_for_selector("#task-form[data-mode=submitted]")
    body = page.locator("#task-form .panel-body")
    # the body scrolls under the pinned bar, and a shadow at its edge says there is more
    assert (
        page.evaluate(
            "() => getComputedStyle(document.querySelector('.panel-body')).backgroundAttachment"
        ).count("local")
        == 2
    )
    body.evaluate("b => { b.scrollTop = b.scrollHeight; }")
    note, foot, inner = (
        page.locator(sel).bounding_box()
        for sel in ("#note", "#task-form .panel-foot", "#task-form .panel-body")
    )
    assert note["y"] >= inner["y"] and note["y"] + note["height"] <= foot["y"], (note, foot)
    assert foot["y"] + foot["height"] <= 768  # the Save bar stays on screen
    body.evaluate("b => { b.scrollTop = 0; }")
    page.keyboard.press("e")  # the key goes to Note and brings it into view
    assert page.evaluate("() => document.activeElement.id") == "note"
    note = page.locator("#note").bounding_box()
    assert note["y"] >= inner["y"] and note["y"] + note["height"] <= foot["y"], (note, foot)
    shot(page, "layout-reopened-note-1024x768")
    assert errors == []
    page.context.close()
