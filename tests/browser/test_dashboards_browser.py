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


# --- long names on chart axes (issue #17's screenshot review) -------------------------------------

VERSIONS = ("demo-base", "demo-base+sft-job1", "demo-base+sft-job1+dpo-job2", "demo-base+sft-job1+dpo-job3")
CATEGORIES = (
    "Hallucinated fact",
    "Fabricated tool result",
    "Wrong arguments",
    "Tool not called",
    "Unneeded tool call",
    "Wrong tool",
    "Too short",
    "Tone or persona",
)


@pytest.fixture
def long_names(project, members):
    """Four versions whose names share a long "+" lineage prefix (two DPO children of one SFT), each
    evaluated on one suite, and badcases in eight categories (a Pareto as wide as the demo's)."""
    from django.apps import apps
    from django.utils import timezone

    b = Builder(project)
    versions = []
    for i, name in enumerate(VERSIONS):
        versions.append(b.version(name, parent=versions[min(i, 2) - 1] if i else None, origin="sft"))
    people = [members[Role.ANNOTATOR], members["annotator2"]]
    n = 0
    for rank, name in enumerate(CATEGORIES):
        for _ in range(len(CATEGORIES) - rank):
            b.label(b.response(versions[n % 4]), people[n % 2], "unreasonable", [cat(project, name)],
                    day=(DAY1, DAY2, DAY3)[n % 3], seconds=30)  # fmt: skip
            n += 1
    try:
        suite_model, run_model = (
            apps.get_model("evaluation", "EvalSuite"),
            apps.get_model("evaluation", "EvalRun"),
        )
    except LookupError:
        return project
    suite = suite_model.objects.create(
        project=project, name="held-out", version=1, source="gold", content_hash="x"
    )
    for i, mv in enumerate(versions):
        metric = {"n": 100, "count": 50 + i, "value": (50 + i) / 100, "se": 0.05}
        run_model.objects.create(project=project, suite=suite, model_version=mv, status="done",
                                 summary={"n": 100, "tool_call_accuracy": metric},
                                 finished_at=timezone.now())  # fmt: skip
    return project


AXIS = """(id) => {
    const canvas = document.getElementById('chart-' + id);
    if (!canvas) return null;
    canvas.scrollIntoView({block: 'center'});
    const chart = Chart.getChart(canvas);
    const horizontal = chart.options.indexAxis === 'y';
    const scale = chart.scales[horizontal ? 'y' : 'x'];
    const ctx = chart.ctx;
    ctx.save(); ctx.font = Chart.helpers.toFont(scale.options.ticks.font).string;
    const lines = l => Array.isArray(l) ? l : [l];
    const width = l => Math.max(...lines(l).map(t => ctx.measureText(t).width));
    const widest = Math.max(...chart.data.labels.map(width));
    ctx.restore();
    const title = chart.options.plugins.tooltip.callbacks.title;
    return {
        labels: chart.data.labels,
        ticks: scale.ticks.map(t => t.label),
        tooltips: chart.data.labels.map((_, i) => title([{dataIndex: i}])),
        rotation: scale.labelRotation,
        spacing: horizontal ? null : (scale.right - scale.left) / chart.data.labels.length,
        widest: widest,
    };
}"""


def _joined(label):
    return " ".join(label) if isinstance(label, list) else label


@pytest.mark.parametrize("width", [1400, 1024])
def test_long_chart_labels_split_wrap_and_keep_the_full_name(
    chromium, live_server, settings, long_names, width
):
    """Version names break before each "+" (one lineage stage a line: the two DPO children read apart),
    category names wrap between words, nothing is cut with "…", level labels fit their slot (else the
    axis slants), and each tooltip carries the full name."""
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.DASHBOARD_CACHE_SECONDS = 0
    context, page, errors = _login(chromium, live_server, width)
    base = f"{live_server.url}/p/{long_names.slug}/dashboards/"

    def check(axis, names):
        assert axis is not None
        assert [_joined(lb).replace(" +", "+") for lb in axis["labels"]] == list(names), axis
        assert axis["tooltips"] == list(names)
        assert len(axis["ticks"]) == len(names)  # every name drawn, none skipped
        assert not any("…" in _joined(t) for t in axis["ticks"]), axis["ticks"]
        if axis["spacing"] is not None and axis["rotation"] == 0:
            assert axis["widest"] <= axis["spacing"], axis  # level labels do not run into each other

    page.goto(base)
    pareto = page.evaluate(AXIS, "pareto")
    check(pareto, CATEGORIES)
    by_model = page.evaluate(AXIS, "by-model")
    check(by_model, VERSIONS)
    assert by_model["labels"][2] == ["demo-base", "+sft-job1", "+dpo-job2"]
    assert by_model["labels"][3] == ["demo-base", "+sft-job1", "+dpo-job3"]
    ends = page.evaluate(
        "() => Chart.getChart(document.getElementById('chart-over-time')).data.datasets.map(d => d.endLines)"
    )
    assert {"".join(e) for e in ends} == {"all versions".replace(" ", ""), *VERSIONS} or all(
        "…" not in line for e in ends for line in e
    )
    page.screenshot(path=str(SHOTS / f"dashboard-long-names-overview-{width}.png"), full_page=True)

    page.goto(base + "models/")
    lineage = page.evaluate(AXIS, "eval-lineage")
    if lineage is not None:  # the evaluation app is installed
        check(lineage, VERSIONS)
        assert lineage["labels"][2] != lineage["labels"][3]
        assert lineage["labels"][3][-1] == "+dpo-job3"
    ratings = page.evaluate(AXIS, "ratings")
    assert ratings is None or not any("…" in _joined(t) for t in ratings["ticks"])
    page.screenshot(path=str(SHOTS / f"dashboard-long-names-models-{width}.png"), full_page=True)
    assert errors == []
    context.close()
