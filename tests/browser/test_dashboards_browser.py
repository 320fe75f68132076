"""The dashboards in real Chromium at 1,400 and 1,024 px: every chart draws, nothing overflows the
page sideways, no script errors, and clicking a bar opens the cases behind it."""

import re

import pytest

from annotator.models import Role

from ..test_dashboards import DAY1, DAY2, DAY3, Builder, cat
from .conftest import SHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chromium(browser):
    """The one Chromium of the session (Playwright's sync API allows a single running instance)."""
    return browser


@pytest.fixture
def dashboard_data(project, members, make_user):
    b = Builder(project)
    base = b.version("base")
    sft = b.version("sft-1", parent=base, origin="sft")
    people = [members[Role.ANNOTATOR], members["annotator2"], make_user("a3")]
    leaves = [
        cat(project, n) for n in ("Tool not called", "Wrong arguments", "Repetition", "Hallucinated fact")
    ]
    for i in range(40):
        mv = base if i % 3 else sft
        response = b.response(mv, split=["train", "eval"][i % 2])
        for j, who in enumerate(people[: 1 + (i % 3 == 0) * 2]):
            bad = (i + j) % 3 != 0
            b.label(
                response,
                who,
                "unreasonable" if bad else "reasonable",
                [leaves[(i + j) % 4]] if bad else [],
                day=(DAY1, DAY2, DAY3)[i % 3],
                seconds=20 + i,
            )
        if i % 4 == 0:
            conv = response.conversation
            other = b.response(sft if mv == base else base, conv)
            b.prefer(response, other, people[i % 3], ["a", "b", "tie"][i % 3])
    return project


def _login(chromium, live_server, width):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "lead")
    page.fill("input[name=password]", "pw-lead")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    return context, page, errors


@pytest.mark.parametrize("width", [1400, 1024])
def test_dashboards_draw_and_fit(chromium, live_server, settings, dashboard_data, width):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.DASHBOARD_CACHE_SECONDS = 0
    context, page, errors = _login(chromium, live_server, width)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("", "annotators/", "agreement/", "models/"):
        page.goto(f"{live_server.url}/p/{dashboard_data.slug}/dashboards/{name}")
        page.wait_for_load_state("load")
        canvases = page.locator("canvas")
        assert canvases.count() >= 1, name
        for i in range(canvases.count()):
            canvas = canvases.nth(i)
            assert canvas.get_attribute("data-ready") == "1", (name, i)
            box = canvas.bounding_box()
            assert box["width"] > 280 and box["height"] > 150, (name, i, box)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (name, width, overflow)
        page.screenshot(
            path=str(SHOTS / f"dashboard-{(name.strip('/') or 'overview')}-{width}.png"), full_page=True
        )
    assert errors == []
    context.close()


def test_clicking_a_bar_opens_its_cases(chromium, live_server, settings, dashboard_data):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.DASHBOARD_CACHE_SECONDS = 0
    context, page, errors = _login(chromium, live_server, 1400)
    page.goto(f"{live_server.url}/p/{dashboard_data.slug}/dashboards/")
    point = page.evaluate("""() => {
        const canvas = document.getElementById('chart-by-model');
        canvas.scrollIntoView({block: 'center'});
        const chart = Chart.getChart(canvas);
        const bar = chart.getDatasetMeta(0).data[0];
        const r = canvas.getBoundingClientRect();
        return {x: r.left + bar.x, y: r.top + (bar.y + bar.base) / 2,
                count: chart.data.datasets[0].hrefs.length, label: chart.data.labels[0]};
    }""")
    assert point["count"] >= 1
    page.mouse.click(point["x"], point["y"])
    page.wait_for_url(re.compile(r".*/dashboards/cases/\?.*"))
    assert "verdict=unreasonable" in page.url
    assert "Cases" in page.locator("h1").inner_text()
    assert errors == []
    context.close()
