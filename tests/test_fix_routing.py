"""Fixes routed by taxonomy: each category's fix route decides which snapshots its corrections feed
(training/snapshots/routing.py); the route is edited with the taxonomy, under the taxonomy's rules."""

import importlib
from html import unescape
from pathlib import Path

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError

from annotator.models import TaxonomyCategory
from annotator.taxonomy import fix_routes
from training.snapshots import storage
from training.snapshots.build import build_snapshot, create_snapshot
from training.snapshots.spec import clean_spec

from .test_datasets_factories import assistant, call, category, label, preference, response, stock_question

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


# item number -> the categories of its (approved, unreasonable) corrected label
FIXES = {
    10: ["Hallucinated fact"],
    11: ["Hallucinated fact"],
    12: ["Business flow error"],
    13: ["Tool not called"],
    14: ["Tool not called"],
    15: ["Wrong tool"],
    16: ["Hallucinated fact", "Wrong tool"],  # two failures, two fixes: both snapshots
    17: [],  # nothing to route it by: both snapshots, as before routing
}


@pytest.fixture
def fixes(project, members):
    for i, cats in FIXES.items():
        label(
            response(stock_question(project, i), raw=f"Yes, A-{i} is in stock and costs $5."),
            members["annotator"],
            categories=cats,
            correction=assistant(
                f"Let me check A-{i} for you.", [call("check_inventory", {"sku": f"A-{i}"})]
            ),
        )
    # a comparison: its pair goes to DPO whatever the loser's category routes to
    c = stock_question(project, 18)
    loser = response(c, raw="It is in stock, I am sure of it.")
    winner = response(
        c, raw='<tool_call>{"name": "check_inventory", "arguments": {"sku": "A-18"}}</tool_call>'
    )
    label(loser, members["annotator2"], categories=["Hallucinated fact"])
    preference(loser, winner, members["annotator2"], "b")
    return project


def build(project, user, kind, **filters):
    snap = build_snapshot(create_snapshot(project, user, {"kind": kind, "filters": filters}, start=False).pk)
    assert snap.status == "ready", snap.message
    return snap


def skus(snap) -> list[str]:
    """The SKU each row's corrected (SFT) or chosen (DPO) answer checks, in row order."""
    import json

    out = []
    for line in Path(storage.media_path(snap.file.name)).read_text().splitlines():
        row = json.loads(line)
        target = (row.get("completion") or row.get("chosen"))[-1]
        args = (
            json.loads(target["tool_calls"][0]["function"]["arguments"]) if target.get("tool_calls") else {}
        )
        out.append(args.get("sku", "?"))
    return out


def page(client, user, snap) -> str:
    client.force_login(user)
    response = client.get(f"/p/{snap.project.slug}/datasets/{snap.pk}/")
    assert response.status_code == 200
    return unescape(response.content.decode())


SFT_SENTENCE = (
    "Fixes routed by taxonomy: 3 corrections → SFT because their categories' fix is SFT "
    "(Hallucinated fact 2, Business flow error 1); 1 → SFT and DPO because their categories route to both "
    "(Hallucinated fact 1, Wrong tool 1); 1 → SFT and DPO: no category to route them by; "
    "3 → DPO only, not in this snapshot (Tool not called 2, Wrong tool 1)."
)
DPO_SENTENCE = (
    "Fixes routed by taxonomy: 3 corrections → DPO because their categories' fix is DPO "
    "(Tool not called 2, Wrong tool 1); 1 → SFT and DPO because their categories route to both "
    "(Hallucinated fact 1, Wrong tool 1); 1 → SFT and DPO: no category to route them by; "
    "3 → SFT only, not in this snapshot (Hallucinated fact 2, Business flow error 1)."
)


def test_knowledge_fixes_feed_sft_and_tool_fixes_feed_dpo(fixes, members, client, api):
    sft = build(fixes, members["admin"], "sft")
    assert sft.filters["routing"] == "taxonomy"  # the default
    assert skus(sft) == ["A-10", "A-11", "A-12", "A-16", "A-17"]
    dpo = build(fixes, members["admin"], "dpo")
    assert sorted(skus(dpo)) == ["A-13", "A-14", "A-15", "A-16", "A-17", "A-18"]  # the preference
    assert dpo.stats["rows_by_source"] == {"correction": 5, "preference": 1}

    assert SFT_SENTENCE in page(client, members["lead"], sft)
    html = page(client, members["lead"], dpo)
    assert DPO_SENTENCE in html and "corrections routed by their categories' fix (routing: taxonomy)" in html

    detail = api(members["lead"]).get(f"/api/datasets/{sft.pk}/").json()["stats"]["routing"]
    assert detail["summary"] == SFT_SENTENCE.removeprefix("Fixes routed by taxonomy: ")
    assert (detail["corrections"], detail["kept"], detail["left_out"]) == (8, 5, 3)
    assert detail["by_reason"]["sft"] == {
        "count": 3,
        "in_snapshot": True,
        "categories": {"Hallucinated fact": 2, "Business flow error": 1},
    }
    assert detail["by_reason"]["dpo"]["in_snapshot"] is False


def test_a_project_that_reroutes_a_category_changes_the_next_snapshot(fixes, members, client, api):
    before = build(fixes, members["admin"], "sft")
    lead = api(members["lead"])
    hallucinated, tool_use = category(fixes, "Hallucinated fact"), category(fixes, "Tool use")
    assert (
        lead.patch(f"/api/categories/{hallucinated.pk}/", {"fix_route": "none"}, format="json").status_code
        == 200
    )
    changed = lead.patch(f"/api/categories/{tool_use.pk}/", {"fix_route": "both"}, format="json")
    assert changed.status_code == 200 and changed.json()["effective_fix_route"] == "both"
    child = lead.get(f"/api/categories/{category(fixes, 'Tool not called').pk}/").json()
    assert (child["fix_route"], child["effective_fix_route"]) == ("", "both")  # inherited from Tool use

    after = build(fixes, members["admin"], "sft")
    assert skus(before) == ["A-10", "A-11", "A-12", "A-16", "A-17"]
    assert skus(after) == ["A-12", "A-13", "A-14", "A-15", "A-16", "A-17"]
    assert after.sha256 != before.sha256
    assert "2 left out: their categories' fix is neither SFT nor DPO (Hallucinated fact 2)" in page(
        client, members["lead"], after
    )


def test_routing_all_keeps_every_correction(fixes, members, client):
    sft = build(fixes, members["admin"], "sft", routing="all")
    assert skus(sft) == [f"A-{i}" for i in FIXES]  # every correction, as before routing
    dpo = build(fixes, members["admin"], "dpo", routing="all")
    assert dpo.row_count == len(FIXES) + 1
    assert sft.stats["routing"]["mode"] == "all"
    html = page(client, members["lead"], sft)
    assert "every correction, whatever its categories' fix (routing: all)" in html
    assert "Fixes routed by taxonomy" not in html


def test_a_snapshot_made_before_routing_rebuilds_as_it_was(fixes, members):
    """Its filters have no routing key: it took every correction, and building it again still does."""
    from training.models import DatasetSnapshot

    snap = create_snapshot(fixes, members["admin"], {"kind": "sft"}, start=False)
    filters = {k: v for k, v in snap.filters.items() if k != "routing"}
    DatasetSnapshot.objects.filter(pk=snap.pk).update(filters=filters)
    assert build_snapshot(snap.pk).row_count == len(FIXES)


def test_routing_errors_name_the_field(project, members, api, client):
    def errors(kind, routing):
        with pytest.raises(ValidationError) as err:
            clean_spec(project, {"kind": kind, "filters": {"routing": routing}})
        return err.value.message_dict

    assert errors("sft", "tool")["filters.routing"] == [
        "must be 'taxonomy' (each correction goes where its categories' fix route says) or 'all' "
        "(every correction), not 'tool'"
    ]
    assert "filters.routing" in errors("dpo", ["all"])
    assert errors("eval", "all")["filters.routing"] == [
        "only for SFT and DPO snapshots: an eval snapshot takes every held-out correction"
    ]
    assert clean_spec(project, {"kind": "dpo"})["filters"]["routing"] == "taxonomy"
    assert "routing" not in clean_spec(project, {"kind": "eval"})["filters"]

    admin = api(members["admin"])
    refused = admin.post(
        "/api/datasets/", {"project": "sales", "kind": "sft", "filters": {"routing": "x"}}, format="json"
    )
    assert refused.status_code == 400 and "filters.routing" in refused.json()
    made = admin.post("/api/datasets/", {"project": "sales", "kind": "sft"}, format="json")
    assert made.status_code == 201 and made.json()["filters"]["routing"] == "taxonomy"

    client.force_login(members["admin"])
    form = client.get("/p/sales/datasets/new/").content.decode()
    assert 'name="routing" value="taxonomy"' in form and "checked" in form.split('value="taxonomy"')[1][:80]
    base = {"kind": "sft", "layout": "trl_messages", "min_target_chars": 10, "max_tokens": 4096}
    posted = client.post("/p/sales/datasets/new/", {**base, "routing": "sometimes"})
    assert posted.status_code == 200 and "Select a valid choice" in posted.content.decode()


def test_only_those_who_edit_the_taxonomy_change_a_route_and_only_in_their_project(
    project, other_project, members, api
):
    cat = category(project, "Hallucinated fact")
    url = f"/api/categories/{cat.pk}/"
    assert api(members["annotator"]).patch(url, {"fix_route": "dpo"}, format="json").status_code == 403
    # an admin of another project does not see this one's categories
    assert api(members["outsider"]).patch(url, {"fix_route": "dpo"}, format="json").status_code == 404
    cat.refresh_from_db()
    assert cat.fix_route == ""  # inherits Content's SFT
    bad = api(members["lead"]).patch(url, {"fix_route": "rlhf"}, format="json")
    assert bad.status_code == 400 and "fix_route" in bad.json()
    assert api(members["lead"]).patch(url, {"fix_route": "dpo"}, format="json").status_code == 200
    assert fix_routes(project.pk)[cat.pk] == "dpo"

    # the lead cannot route another project's category, nor make one there
    theirs = TaxonomyCategory.objects.create(project=other_project, name="Theirs", fix_route="sft")
    lead = api(members["lead"])
    assert (
        lead.patch(f"/api/categories/{theirs.pk}/", {"fix_route": "none"}, format="json").status_code == 404
    )
    made = lead.post(
        "/api/categories/", {"project": "other", "name": "Mine", "fix_route": "dpo"}, format="json"
    )
    assert made.status_code == 400 and "project" in made.json()
    theirs.refresh_from_db()
    assert theirs.fix_route == "sft"
    assert not TaxonomyCategory.objects.filter(name="Mine").exists()


def effective_by_name(project) -> dict[str, str]:
    routes = fix_routes(project.pk)
    return {c.name: routes[c.pk] for c in TaxonomyCategory.objects.filter(project=project)}


def test_routes_inherit_and_the_migration_routes_the_default_taxonomy(project):
    routes = effective_by_name(project)
    tool_fixes = ("Tool not called", "Wrong tool", "Wrong arguments", "Unneeded tool call")
    tool_fixes += ("Fabricated tool result", "Malformed tool call")
    assert {routes[n] for n in tool_fixes} == {"dpo"}
    assert {routes[n] for n in ("Hallucinated fact", "Business flow error", "Off-domain or unsafe")} == {
        "sft"
    }
    assert (routes["Too short"], routes["Repetition"], routes["Tone or persona"]) == ("sft", "dpo", "both")
    custom = TaxonomyCategory.objects.create(project=project, name="Pricing policy")
    assert fix_routes(project.pk)[custom.pk] == ""  # not routed: both ways, as before routing

    # a project from before routing: the migration routes its default categories, children by inheritance
    TaxonomyCategory.objects.filter(project=project).update(fix_route="")
    migration = importlib.import_module("annotator.migrations.0017_taxonomy_fix_route")
    migration.route_default_categories(apps, None)
    assert effective_by_name(project) == {**routes, "Pricing policy": ""}
    stored = dict(TaxonomyCategory.objects.filter(project=project).values_list("name", "fix_route"))
    assert (stored["Tool use"], stored["Wrong tool"], stored["Repetition"]) == ("dpo", "", "dpo")


def test_an_sft_snapshot_of_tool_fixes_only_says_why_it_has_no_rows(project, members, client):
    label(
        response(stock_question(project, 1), raw="Yes, it is in stock."),
        members["annotator"],
        categories=["Tool not called"],
        correction=assistant(None, [call("check_inventory", {"sku": "A-1"})]),
    )
    snap = build_snapshot(create_snapshot(project, members["admin"], {"kind": "sft"}, start=False).pk)
    assert (snap.status, snap.failure) == ("failed", "no_rows")
    assert snap.message == (
        "No rows: 1 source record matched but none made a row "
        "(1 routed elsewhere by their categories' fix (routing: taxonomy))."
    )
    assert (
        "Fixes routed by taxonomy: 1 correction → DPO only, not in this snapshot (Tool not called 1). "
        "Routing “all” takes every correction." in page(client, members["lead"], snap)
    )
