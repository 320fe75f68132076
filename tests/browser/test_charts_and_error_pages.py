"""Charts and error pages in real Chromium at 1,400×900 and 1,024×768: each value axis is scaled to
its own series (the Pareto's cumulative % on its own 0-100 % axis), series names at line ends are
never cut, every dashboard page marks its tab, and the styled error pages fit. Screenshots of each
go to var/screenshots/ (charts-*, error-*)."""

import pytest

from annotator.models import ImportJob, Role

from ..test_dashboards import DAY1, DAY2, DAY3, Builder, cat
from .conftest import SHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = [(1400, 900), (1024, 768)]
LONG = ("sales-agent-v0 (scripted)", "sales-agent-v1 (scripted, a longer name)")


@pytest.fixture
def chart_data(project, members, make_user):
    """Long version names, and categories of very different sizes (9, 6, 3, 1 badcases)."""
    b = Builder(project)
    v0 = b.version(LONG[0])
    v1 = b.version(LONG[1], parent=v0, origin="sft")
    people = [members[Role.ANNOTATOR], members["annotator2"]]
    sizes = {"Tool not called": 9, "Wrong arguments": 6, "Repetition": 3, "Think-tag or format defect": 1}
    i = 0
    for name, n in sizes.items():
        for _ in range(n):
            b.label(b.response((v0, v1)[i % 2]), people[i % 2], "unreasonable", [cat(project, name)],
                    day=(DAY1, DAY2, DAY3)[i % 3], seconds=20 + i)  # fmt: skip
            i += 1
    for j in range(8):
        b.label(b.response((v0, v1)[j % 2]), people[j % 2], "reasonable", day=(DAY1, DAY2, DAY3)[j % 3])
    return project


def _page(browser, live_server, username, size):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"pw-{username}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    return context, page, errors


def _no_sideways_overflow(page):
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0


@pytest.mark.parametrize("size", SIZES)
def test_chart_axes_fit_their_own_series_and_names_are_not_cut(
    browser, live_server, settings, chart_data, size
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.DASHBOARD_CACHE_SECONDS = 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    context, page, errors = _page(browser, live_server, "lead", size)
    base = f"{live_server.url}/p/{chart_data.slug}/dashboards/"
    page.goto(base)
    pareto = page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('chart-pareto'));
        return {yMax: chart.scales.y.max, y2Min: chart.scales.y2.min, y2Max: chart.scales.y2.max,
                bars: chart.data.datasets[0].data, lineAxis: chart.data.datasets[1].yAxisID};
    }""")
    assert max(pareto["bars"]) == 9
    assert pareto["yMax"] < 2 * 9, pareto  # not stretched to the cumulative line's 100
    assert (pareto["y2Min"], pareto["y2Max"], pareto["lineAxis"]) == (0, 100, "y2")
    ends = page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('chart-over-time'));
        const ctx = chart.ctx;
        ctx.save(); ctx.font = "12px system-ui, sans-serif";
        const out = chart.data.datasets.map(ds => ({
            lines: ds.endLines,
            room: chart.width - chart.chartArea.right - 8,
            widest: Math.max(...ds.endLines.map(l => ctx.measureText(l).width)),
        }));
        ctx.restore();
        return out;
    }""")
    for end in ends:
        assert end["widest"] <= end["room"], end  # the series name fits beside the plot
        assert "".join(end["lines"]).replace(" ", "") in "".join(LONG + ("all versions",)).replace(" ", "")
    assert _no_sideways_overflow(page)
    page.screenshot(path=str(SHOTS / f"charts-overview-{size[0]}.png"), full_page=True)
    for path, tab in [
        ("cases/", "Cases"),
        ("annotators/", "Annotators"),
        ("models/", "Model versions"),
        ("comparisons/", "Comparisons"),
    ]:
        page.goto(base + path)
        assert page.locator(".dash-tabs a[aria-current=page]").inner_text() == tab
        assert _no_sideways_overflow(page), path
        page.screenshot(path=str(SHOTS / f"charts-{path.strip('/')}-{size[0]}.png"), full_page=True)
    assert errors == []
    context.close()


@pytest.mark.parametrize("size", SIZES)
def test_error_pages_are_styled_and_fit(browser, live_server, settings, project, members, size):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    SHOTS.mkdir(parents=True, exist_ok=True)
    job = ImportJob.objects.create(project=project, original_name="in.jsonl", size_bytes=1)
    context, page, errors = _page(browser, live_server, "lead", size)
    for name, path, status, text in [
        ("403", "/p/sales/training/new/?stage=judge", 403, "Only admins of Sales agent can"),
        ("404", "/p/sales/conversations/999999/", 404, "Sales agent has no such page or item"),
        ("405", f"/p/sales/imports/{job.pk}/cancel/", 405, "Nothing was changed."),
    ]:
        response = page.goto(live_server.url + path)
        assert response.status == status
        card = page.locator(".error-page")
        assert text in card.inner_text()
        assert card.locator("a.button").count() >= 1
        assert _no_sideways_overflow(page), name
        page.screenshot(path=str(SHOTS / f"error-{name}-{size[0]}.png"), full_page=True)
    assert errors == []
    context.close()
