"""Dataset snapshots through the REST API and the pages: the same rules, the same functions."""

import hashlib
import re

import pytest

from training.models import DatasetSnapshot
from training.snapshots import storage
from training.snapshots.build import build_snapshot, create_snapshot

from .test_datasets_factories import assistant, call, label, preference, response, stock_question

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def labelled(project, members):
    for i in range(3):
        c = stock_question(project, i)
        a = response(c, raw="Yes, it is in stock.")
        b = response(
            c,
            raw=f'<tool_call>{{"name": "check_inventory", "arguments": {{"sku": "A-{i}"}}}}</tool_call>',
            model="agent-v2",
        )
        label(
            a,
            members["annotator"],
            categories=["Tool not called"],
            correction=assistant(None, [call("check_inventory", {"sku": f"A-{i}"})]),
        )
        preference(a, b, members["annotator2"], "b")
    return project


@pytest.fixture
def ready(labelled, members):
    return build_snapshot(create_snapshot(labelled, members["admin"], {"kind": "dpo"}, start=False).pk)


def as_user(api, members, role):
    return api(members[role])


# ---------------------------------------------------------------------------------- API


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 400), ("annotator", 403), ("lead", 403), ("admin", 201)]
)
def test_only_admins_create_snapshots(
    api, members, labelled, role, status, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = as_user(api, members, role).post(
            "/api/datasets/", {"project": labelled.slug, "kind": "sft"}, format="json"
        )
    assert response.status_code == status, response.content
    if status == 201:
        body = response.json()
        assert (body["status"], body["name"], body["layout"], body["download_url"]) == (
            "queued",
            "sft-v1",
            "trl_prompt_completion",
            None,
        )
        assert body["filters"]["splits"] == ["train"] and body["audit_config"]["checks"]["leakage"] == "block"
        assert len(callbacks) == 1  # the build is sent once the row is committed
    else:
        assert not DatasetSnapshot.objects.exists()


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 404), ("annotator", 404), ("lead", 200), ("admin", 200)]
)
def test_leads_and_admins_read_snapshots(api, members, ready, role, status):
    client = as_user(api, members, role)
    assert client.get(f"/api/datasets/{ready.pk}/").status_code == status
    assert client.get(f"/api/datasets/{ready.pk}/download/").status_code == status
    listed = client.get("/api/datasets/").json()["results"]
    assert [s["id"] for s in listed] == ([ready.pk] if status == 200 else [])


@pytest.mark.parametrize(("role", "status"), [("annotator", 404), ("lead", 403), ("admin", 204)])
def test_only_admins_delete(api, members, ready, role, status, django_capture_on_commit_callbacks):
    path = storage.media_path(ready.file.name)
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(api, members, role).delete(f"/api/datasets/{ready.pk}/")
    assert response.status_code == status
    assert DatasetSnapshot.objects.filter(pk=ready.pk).exists() == (status != 204)
    assert path.exists() == (status != 204)


def test_a_ready_snapshot_cannot_be_edited_through_the_api(api, members, ready):
    client = as_user(api, members, "admin")
    assert client.patch(f"/api/datasets/{ready.pk}/", {"note": "x"}, format="json").status_code == 405
    assert client.put(f"/api/datasets/{ready.pk}/", {"note": "x"}, format="json").status_code == 405


def test_retrieve_download_and_preview(api, members, ready):
    client = as_user(api, members, "lead")
    body = client.get(f"/api/datasets/{ready.pk}/").json()
    # each correction says what the preferred response says: the preference and the correction
    # are one pair, written once (resolve.py)
    assert body["status"] == "ready" and body["progress"] == 1.0 and body["row_count"] == 3
    assert body["stats"]["rows_by_source"] == {"preference": 3}
    assert body["stats"]["resolution"]["merged_by"] == {"gold": 0, "majority": 3}
    assert body["audit"]["blocked"] is False and body["download_url"].endswith(
        f"/api/datasets/{ready.pk}/download/"
    )
    download = client.get(f"/api/datasets/{ready.pk}/download/")
    content = b"".join(download.streaming_content)
    assert hashlib.sha256(content).hexdigest() == ready.sha256 == download["X-Content-SHA256"]
    assert 'filename="sales-dpo-v1.jsonl"' in download["Content-Disposition"]
    assert len(content.splitlines()) == 3
    preview = client.get(f"/api/datasets/{ready.pk}/preview/").json()
    assert len(preview) == 3 and preview[0]["source"] == "preference" and "rejected" in preview[0]


def test_a_snapshot_that_is_not_ready_has_no_download(api, members, labelled):
    snap = create_snapshot(labelled, members["admin"], {"kind": "sft"}, start=False)
    response = as_user(api, members, "admin").get(f"/api/datasets/{snap.pk}/download/")
    assert response.status_code == 409
    assert response.json() == {"detail": "Only a ready snapshot can be downloaded (this one is queued)."}


def test_bad_specs_are_400_with_the_field_named(api, members, labelled):
    client = as_user(api, members, "admin")
    response = client.post(
        "/api/datasets/",
        {
            "project": labelled.slug,
            "kind": "dpo",
            "layout": "alpaca",
            "filters": {"categories": [424242]},
            "audit_config": {"checks": {"leakage": "sometimes"}},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "layout": ["for dpo snapshots one of trl_preference, openai_preference, llamafactory (got 'alpaca')"],
        "filters.categories": ["no category with id 424242 in this project"],
        "audit_config.checks.leakage": ["must be one of block, warn, off"],
    }
    response = client.post("/api/datasets/", {"project": labelled.slug, "kind": "kto"}, format="json")
    assert response.status_code == 400 and "kind" in response.json()


def test_live_count_endpoint(api, members, labelled):
    client = as_user(api, members, "lead")
    body = client.post(
        "/api/datasets/count/", {"project": labelled.slug, "kind": "dpo"}, format="json"
    ).json()
    assert body["rows"] == 6 and body["records"] == 6
    assert (
        as_user(api, members, "annotator")
        .post("/api/datasets/count/", {"project": labelled.slug, "kind": "dpo"}, format="json")
        .status_code
        == 403
    )
    body = client.post(
        "/api/datasets/count/",
        {"project": labelled.slug, "kind": "sft", "filters": {"splits": ["holdout"]}},
        format="json",
    ).json()
    assert body["rows"] == 0


def test_retry_a_failed_snapshot(api, members, project, django_capture_on_commit_callbacks):
    snap = build_snapshot(create_snapshot(project, members["admin"], {"kind": "sft"}, start=False).pk)
    assert snap.failure == "no_rows"
    assert as_user(api, members, "lead").post(f"/api/datasets/{snap.pk}/retry/").status_code == 403
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = as_user(api, members, "admin").post(f"/api/datasets/{snap.pk}/retry/")
    assert response.status_code == 202 and response.json()["status"] == "queued" and len(callbacks) == 1


def test_listing_is_a_constant_number_of_queries(api, members, labelled, django_assert_max_num_queries):
    for _ in range(5):
        create_snapshot(labelled, members["admin"], {"kind": "sft"}, start=False)
    client = as_user(api, members, "lead")
    with django_assert_max_num_queries(8):
        assert len(client.get("/api/datasets/").json()["results"]) == 5


# -------------------------------------------------------------------------------- pages


@pytest.mark.parametrize(
    ("role", "status"), [("outsider", 404), ("annotator", 403), ("lead", 200), ("admin", 200)]
)
def test_pages_follow_the_same_rules(client, members, ready, role, status):
    client.force_login(members[role])
    base = f"/p/{ready.project.slug}/datasets/"
    assert client.get(base).status_code == status
    assert client.get(f"{base}{ready.pk}/").status_code == status
    assert client.get(f"{base}{ready.pk}/audit/").status_code == status
    assert client.get(f"{base}{ready.pk}/download/").status_code == status
    assert client.get(f"{base}new/").status_code == (
        200 if role == "admin" else status if status != 200 else 403
    )
    assert client.post(f"{base}{ready.pk}/delete/").status_code == (
        302 if role == "admin" else status if status != 200 else 403
    )


def test_create_page_queues_a_build_and_shows_errors_on_fields(
    client, members, labelled, django_capture_on_commit_callbacks
):
    client.force_login(members["admin"])
    url = f"/p/{labelled.slug}/datasets/new/"
    page = client.get(url).content.decode()
    assert "Tool not called" in page and 'name="check_leakage"' in page and "live-count" in page
    form = {
        "kind": "eval",
        "layout": "eval_cases",
        "splits": ["train"],
        "min_target_chars": 10,
        "max_tokens": 4096,
        **{f"check_{c}": "block" for c in ("leakage", "think_tags")},
    }
    response = client.post(url, form)
    assert response.status_code == 200
    assert "an eval snapshot takes held-out items only" in response.content.decode()
    form.update(
        kind="dpo", layout="llamafactory", splits=["train"], sources=["preferences"], note="first try"
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url, form)
    snap = DatasetSnapshot.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/datasets/{snap.pk}/")
    assert (snap.kind, snap.layout, snap.filters["sources"], snap.note) == (
        "dpo",
        "llamafactory",
        ["preferences"],
        "first try",
    )
    assert len(callbacks) == 1


def test_live_count_fragment(client, members, labelled):
    client.force_login(members["admin"])
    url = f"/p/{labelled.slug}/datasets/count/"
    base = {"kind": "sft", "layout": "trl_messages", "min_target_chars": 10, "max_tokens": 4096}
    html = client.post(url, {**base, "splits": ["train"], "routing": "all"}).content.decode()
    assert '<div class="count-big">3</div>' in html and "corrections" in html
    # routed by the taxonomy (the form's default), the "Tool not called" fixes go to DPO, not SFT
    html = client.post(url, {**base, "splits": ["train"]}).content.decode()
    assert "corrections routed to SFT" in html and "No rows match these filters" in html
    html = client.post(url, {**base, "splits": ["holdout"]}).content.decode()
    assert "No rows match these filters" in html
    html = client.post(url, {**base, "date_from": "2026-02-30"}).content.decode()
    assert "Fix the form first" in html


def test_detail_page_shows_stats_audit_and_a_chat_preview(client, members, ready):
    client.force_login(members["lead"])
    html = client.get(f"/p/{ready.project.slug}/datasets/{ready.pk}/").content.decode()
    assert "Download JSONL" in html and ready.sha256 in html
    assert html.count('class="row-card"') == 3 and "rejected" in html and "check_inventory" in html
    assert "3 items judged by 2+ annotators merged into one row each (gold 0, majority 3)." in html
    assert "Tool not called" in html and "Delete" not in html  # leads read, admins delete
    audit = client.get(f"/p/{ready.project.slug}/datasets/{ready.pk}/audit/").content.decode()
    assert "Train/eval leakage" in audit and "mode: block" in audit


def test_progress_fragment_polls_until_finished(client, members, labelled):
    client.force_login(members["lead"])
    snap = create_snapshot(labelled, members["admin"], {"kind": "sft"}, start=False)
    url = f"/p/{labelled.slug}/datasets/{snap.pk}/"
    fragment = client.get(url, headers={"HX-Request": "true"})
    assert (
        'hx-trigger="every 1s"' in fragment.content.decode()
        and "Waiting for an export worker" in fragment.content.decode()
    )
    build_snapshot(snap.pk)
    fragment = client.get(url, headers={"HX-Request": "true"})
    assert fragment["HX-Refresh"] == "true"


def test_blocked_snapshot_page_says_why(client, members, project):
    c = stock_question(project, 1)
    lab = label(response(c, raw="Yes."), members["annotator"])
    from annotator.models import Correction

    Correction.objects.create(label=lab, message=assistant(None, [call("refund", {})]))
    snap = build_snapshot(create_snapshot(project, members["admin"], {"kind": "sft"}, start=False).pk)
    client.force_login(members["admin"])
    html = client.get(f"/p/{project.slug}/datasets/{snap.pk}/").content.decode()
    assert "Blocked by the audit" in html and "1 × Tool not in tools" in html and "Build again" in html
    audit = client.get(f"/p/{project.slug}/datasets/{snap.pk}/audit/").content.decode()
    assert "&#x27;refund&#x27; is not in the row&#x27;s tools" in audit


def test_build_again_with_changes_prefills_the_form(client, members, ready):
    client.force_login(members["admin"])
    html = client.get(f"/p/{ready.project.slug}/datasets/new/?from={ready.pk}").content.decode()
    assert re.search(r'value="dpo"[^>]*checked', html) and not re.search(r'value="sft"[^>]*checked', html)
    assert re.search(r'<option value="trl_preference"[^>]*selected', html)
    assert re.search(r'name="sources" value="corrections"[^>]*checked', html)


def test_django_admin_lists_snapshots_read_only(client, make_user, ready):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert client.get("/admin/training/datasetsnapshot/").status_code == 200
    page = client.get(f"/admin/training/datasetsnapshot/{ready.pk}/change/").content.decode()
    assert ready.sha256 in page and 'name="_save"' not in page
