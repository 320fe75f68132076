"""The taxonomy page (/p/<slug>/taxonomy/): members read the tree with each category's fix route, the
route in force and its labels; leads and admins (policy.can_edit_taxonomy, as the API) add, edit, route
and (de)activate categories through the taxonomy's service functions, the API's too."""

import re

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotator.models import Label, Membership, Project, Role, TaxonomyCategory
from annotator.taxonomy import category_rows, create_category, fix_routes, update_category

from .conftest import make_conversation

pytestmark = pytest.mark.django_db

PAGE = "/p/sales/taxonomy/"


def cat(project, name) -> TaxonomyCategory:
    return TaxonomyCategory.objects.get(project=project, name=name)


def login(client, user) -> Client:
    client.force_login(user)
    return client


def row(html: str, category) -> str:
    return re.search(rf'<tr id="cat-{category.pk}".*?</tr>', html, re.S).group(0)


def label(response, user, *cats, status="submitted"):
    lab = Label.objects.create(response=response, annotator=user, verdict="unreasonable", status=status)
    lab.categories.set(cats)
    return lab


def test_members_read_the_tree_leads_and_admins_edit_it_outsiders_get_404(client, project, members):
    wrong_tool, tool_use = cat(project, "Wrong tool"), cat(project, "Tool use")
    for n in range(2):
        label(make_conversation(project, n)[1][0], members["annotator"], wrong_tool)
    label(make_conversation(project, 9)[1][0], members["annotator2"], wrong_tool, status="draft")

    html = login(client, members[Role.ANNOTATOR]).get(PAGE).content.decode()
    line = row(html, wrong_tool)
    assert "Similar tool descriptions, or intent confusion." in line  # root cause
    assert "Sharpen tool descriptions" in line  # recommended fix
    assert "inherited from Tool use" in line and 'data-route="dpo"' in line
    assert '<td class="num">2</td>' in line  # submitted labels; the draft is not counted
    assert "<kbd" in line and "<kbd" not in row(html, tool_use)  # the labelling page's key, leaves only
    assert 'aria-current="page">Taxonomy</a>' in html
    assert "<select" not in html and "/taxonomy/new/" not in html and "Deactivate" not in html
    assert "datasets page" not in html  # annotators do not see the datasets
    assert "SFT</b> knowledge and business-flow fixes" in html

    for role in (Role.LEAD, Role.ADMIN):
        html = login(client, members[role]).get(PAGE).content.decode()
        assert f'id="route-{wrong_tool.pk}"' in html and 'action="/p/sales/taxonomy/new/#add"' in html
        assert 'href="/p/sales/datasets/"' in html

    url = f"/p/sales/taxonomy/{wrong_tool.pk}/route/"
    assert login(client, members[Role.ANNOTATOR]).post(url, {"fix_route": "sft"}).status_code == 403
    assert (
        login(client, members[Role.ANNOTATOR]).get(f"/p/sales/taxonomy/{wrong_tool.pk}/edit/").status_code
        == 403
    )
    outsider = login(client, members["outsider"])
    assert outsider.get(PAGE).status_code == 404
    assert outsider.post(url, {"fix_route": "sft"}).status_code == 404
    assert outsider.post("/p/sales/taxonomy/new/", {"name": "Mine"}).status_code == 404
    assert fix_routes(project.pk)[wrong_tool.pk] == "dpo"
    assert not TaxonomyCategory.objects.filter(name="Mine").exists()
    client.logout()
    assert client.get(PAGE).status_code == 302  # to the login page


def test_a_route_changed_on_the_page_is_the_one_the_next_routing_uses(client, project, members):
    tool_use, wrong_tool, hallucinated = (
        cat(project, "Tool use"),
        cat(project, "Wrong tool"),
        cat(project, "Hallucinated fact"),
    )
    lead = login(client, members[Role.LEAD])
    # without JavaScript: a form post, then back to the category
    posted = lead.post(f"/p/sales/taxonomy/{tool_use.pk}/route/", {"fix_route": "both"})
    assert posted.status_code == 302 and posted["Location"] == f"{PAGE}#cat-{tool_use.pk}"
    routes = fix_routes(project.pk)
    assert routes[tool_use.pk] == routes[wrong_tool.pk] == "both"  # the child follows its parent
    html = lead.get(PAGE).content.decode()
    assert "Tool use: fixes now go to SFT + DPO." in html
    assert 'data-route="both"' in row(html, wrong_tool) and "inherited from Tool use" in row(html, wrong_tool)

    # with htmx: the tree comes back in place, inherited routes included
    swapped = lead.post(
        f"/p/sales/taxonomy/{wrong_tool.pk}/route/", {"fix_route": "sft"}, headers={"HX-Request": "true"}
    )
    assert swapped.status_code == 200
    part = swapped.content.decode()
    assert part.startswith('<div id="taxonomy-tree">') and "<html" not in part
    assert 'data-route="sft"' in row(part, wrong_tool) and "inherited from" not in row(part, wrong_tool)
    assert fix_routes(project.pk)[wrong_tool.pk] == "sft"
    # back to inheriting
    lead.post(f"/p/sales/taxonomy/{wrong_tool.pk}/route/", {"fix_route": ""}, headers={"HX-Request": "true"})
    assert fix_routes(project.pk)[wrong_tool.pk] == "both"

    # an unknown route: refused beside the select, 400, nothing changes
    for headers in ({}, {"HX-Request": "true"}):
        bad = lead.post(f"/p/sales/taxonomy/{hallucinated.pk}/route/", {"fix_route": "rlhf"}, headers=headers)
        assert bad.status_code == 400
        line = row(bad.content.decode(), hallucinated)
        assert f'id="route-error-{hallucinated.pk}"' in line and "&#x27;rlhf&#x27; is not a fix route" in line
    assert fix_routes(project.pk)[hallucinated.pk] == "sft"


def test_a_parent_from_another_project_is_refused(client, project, other_project, members, api):
    theirs = TaxonomyCategory.objects.create(project=other_project, name="Theirs")
    Membership.objects.create(user=members[Role.LEAD], project=other_project, role=Role.ANNOTATOR)
    lead = login(client, members[Role.LEAD])
    before = TaxonomyCategory.objects.count()

    made = lead.post("/p/sales/taxonomy/new/", {"name": "Sneaky", "parent": theirs.pk})
    assert made.status_code == 400
    html = made.content.decode()
    assert re.search(r'id="add-parent-error"[^>]*>No category \d+ in this project', html)
    moved = lead.post(
        f"/p/sales/taxonomy/{cat(project, 'Wrong tool').pk}/edit/",
        {"name": "Wrong tool", "parent": theirs.pk},
    )
    assert moved.status_code == 400 and 'id="edit-parent-error"' in moved.content.decode()
    assert TaxonomyCategory.objects.count() == before
    assert cat(project, "Wrong tool").parent == cat(project, "Tool use")

    # the service function refuses it whoever calls it; the API too
    with pytest.raises(ValidationError) as refused:
        create_category(project, name="Sneaky", parent=theirs)
    assert refused.value.message_dict == {"parent": ["The parent category belongs to another project."]}
    with pytest.raises(ValidationError) as refused:
        update_category(cat(project, "Wrong tool"), parent=theirs, fix_route="rlhf")
    assert set(refused.value.message_dict) == {"parent", "fix_route"}
    assert cat(project, "Wrong tool").parent == cat(project, "Tool use")  # nothing saved
    made = api(members[Role.LEAD]).post(
        "/api/categories/", {"project": "sales", "name": "Sneaky", "parent": theirs.pk}, format="json"
    )
    assert made.status_code == 400 and "another project" in made.json()["parent"][0]
    assert not TaxonomyCategory.objects.filter(name="Sneaky").exists()


def test_duplicate_names_and_cycles_are_shown_beside_their_field(client, project, members, api):
    lead = login(client, members[Role.LEAD])
    tool_use, wrong_tool = cat(project, "Tool use"), cat(project, "Wrong tool")
    dup = lead.post(
        "/p/sales/taxonomy/new/", {"name": " Wrong tool ", "parent": tool_use.pk, "description": "kept"}
    )
    assert dup.status_code == 400
    html = dup.content.decode()
    assert re.search(
        r'id="add-name-error"[^>]*>A category named &#x27;Wrong tool&#x27; already exists.', html
    )
    assert ">kept</textarea>" in html  # what was typed stays
    renamed = lead.post(
        f"/p/sales/taxonomy/{wrong_tool.pk}/edit/", {"name": "Tool not called", "parent": tool_use.pk}
    )
    assert renamed.status_code == 400 and 'id="edit-name-error"' in renamed.content.decode()
    cycle = lead.post(f"/p/sales/taxonomy/{tool_use.pk}/edit/", {"name": "Tool use", "parent": wrong_tool.pk})
    assert cycle.status_code == 400
    assert re.search(
        r'id="edit-parent-error"[^>]*>&#x27;Wrong tool&#x27; is &#x27;Tool use&#x27; itself or lies under it',
        cycle.content.decode(),
    )
    assert cat(project, "Tool use").parent is None

    # the API goes through the same rules: same messages, 400 by field
    client_api = api(members[Role.LEAD])
    again = client_api.post("/api/categories/", {"project": "sales", "name": "Wrong tool"}, format="json")
    assert again.status_code == 400 and again.json() == {
        "name": ["A category named 'Wrong tool' already exists."]
    }
    loop = client_api.patch(f"/api/categories/{tool_use.pk}/", {"parent": wrong_tool.pk}, format="json")
    assert loop.status_code == 400 and "own ancestor" in loop.json()["parent"][0]


def test_add_edit_deactivate_and_reactivate(client, project, members):
    lead = login(client, members[Role.LEAD])
    tool_use = cat(project, "Tool use")
    page = lead.get(f"{PAGE}?parent={tool_use.pk}").content.decode()
    assert f'<option value="{tool_use.pk}" selected>' in page  # "Add under" preselects the parent

    made = lead.post(
        "/p/sales/taxonomy/new/", {"name": "Wrong order of calls", "parent": tool_use.pk, "fix_route": ""}
    )
    new = cat(project, "Wrong order of calls")
    assert made.status_code == 302 and made["Location"].endswith(f"#cat-{new.pk}")
    assert new.position == 6 and fix_routes(project.pk)[new.pk] == "dpo"  # after its siblings; inherits
    assert new.pk in {r["cat"].pk for r in category_rows(project)}

    edit = f"/p/sales/taxonomy/{new.pk}/edit/"
    assert lead.get(edit).status_code == 200
    saved = lead.post(
        edit,
        {
            "name": "Calls out of order",
            "parent": tool_use.pk,
            "description": "d",
            "root_cause": "rc",
            "recommended_fix": "rf",
            "fix_route": "sft",
        },
    )
    assert saved.status_code == 302
    new.refresh_from_db()
    assert (new.name, new.description, new.root_cause, new.recommended_fix, new.fix_route) == (
        "Calls out of order",
        "d",
        "rc",
        "rf",
        "sft",
    )

    off = lead.post(
        f"/p/sales/taxonomy/{tool_use.pk}/active/", {"active": "0"}, headers={"HX-Request": "true"}
    )
    assert off.status_code == 200 and "Tool use is inactive" in off.content.decode()
    assert "hidden: under an inactive category" in row(off.content.decode(), new)
    assert tool_use.pk not in {r["cat"].pk for r in category_rows(project)}
    assert lead.post(f"/p/sales/taxonomy/{tool_use.pk}/active/", {"active": "maybe"}).status_code == 400
    assert lead.post(f"/p/sales/taxonomy/{tool_use.pk}/active/", {"active": "1"}).status_code == 302
    assert cat(project, "Tool use").active

    # a partial post (a script, a stale form) changes what it sent and nothing else
    assert lead.post(edit, {"name": "Calls in the wrong order"}).status_code == 302
    new.refresh_from_db()
    assert (new.name, new.parent_id, new.description, new.fix_route) == (
        "Calls in the wrong order",
        tool_use.pk,
        "d",
        "sft",
    )
    # a route post without a route is refused, the route kept
    assert lead.post(f"/p/sales/taxonomy/{new.pk}/route/", {}).status_code == 400
    assert cat(project, "Calls in the wrong order").fix_route == "sft"


def test_posts_need_the_csrf_token(project, members):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(members[Role.LEAD])
    tool_use = cat(project, "Tool use")
    assert browser.post(f"/p/sales/taxonomy/{tool_use.pk}/route/", {"fix_route": "sft"}).status_code == 403
    assert browser.post("/p/sales/taxonomy/new/", {"name": "Forged"}).status_code == 403
    assert fix_routes(project.pk)[tool_use.pk] == "dpo"
    html = browser.get(PAGE).content.decode()
    assert (
        html.count('name="csrfmiddlewaretoken"')
        == 2 * TaxonomyCategory.objects.filter(project=project).count() + 2  # + add form, log out
    )


def test_user_text_is_escaped(client, project, members):
    evil = "<img src=x onerror=alert(1)>"
    create_category(
        project,
        name=evil,
        description=evil,
        root_cause=evil,
        recommended_fix=evil,
        parent=cat(project, "Tool use"),
    )
    for role in (Role.ANNOTATOR, Role.LEAD):
        html = login(client, members[role]).get(PAGE).content.decode()
        assert evil not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def taxonomy_of(n: int, user) -> Project:
    """A project with n categories (tops with children) and a label on each."""
    p = Project.objects.create(name=f"P{n}", slug=f"p{n}")
    Membership.objects.create(user=user, project=p, role=Role.LEAD)
    tops = [create_category(p, name=f"top {i}", fix_route="sft") for i in range(3)]
    for i in range(n - 3):
        create_category(p, name=f"child {i}", parent=tops[i % 3])
    responses = make_conversation(p, 0, n_responses=n)[1]
    for response, category in zip(responses, TaxonomyCategory.objects.filter(project=p), strict=True):
        label(response, user, category)
    return p


def test_the_page_reads_a_constant_number_of_queries(client, members):
    lead = members[Role.LEAD]
    counts = {}
    for n in (3, 12):
        p = taxonomy_of(n, lead)
        login(client, lead)
        with CaptureQueriesContext(connection) as ctx:
            html = client.get(f"/p/{p.slug}/taxonomy/").content.decode()
        assert html.count('<tr id="cat-') == n and '<td class="num">1</td>' in html
        counts[n] = len(ctx.captured_queries)
    assert counts[3] == counts[12] <= 8, counts  # session, user, role, project, tree, picker, labels


def test_a_parents_label_count_is_its_subtrees_each_label_once(client, project, members):
    """The dashboards count a parent's badcases over its subtree (Tool use = its subcategories'), so the
    taxonomy page does too and says so: a label naming two siblings counts once for their parent, a
    grandchild's label for every ancestor, drafts for none. Leaves keep their own count."""
    tool_use, not_called, wrong_args = (
        cat(project, "Tool use"),
        cat(project, "Tool not called"),
        cat(project, "Wrong arguments"),
    )
    deep = create_category(project, name="Called too late", parent=not_called)
    annotator = members["annotator"]
    label(make_conversation(project, 0)[1][0], annotator, not_called, wrong_args)  # two siblings
    label(make_conversation(project, 1)[1][0], annotator, wrong_args)
    label(make_conversation(project, 2)[1][0], annotator, deep, status="approved")  # a grandchild
    label(make_conversation(project, 3)[1][0], annotator, deep, status="draft")  # not counted

    html = login(client, members[Role.LEAD]).get(PAGE).content.decode()
    note = r'<span class="from" title="{} of them name {} itself">incl\. subcategories</span></td>'
    assert re.search(r'<td class="num">3' + note.format(0, "Tool use"), row(html, tool_use))
    # "Tool not called" is now a parent too: its own label (1) and its grandchild's (1)
    assert re.search(r'<td class="num">2' + note.format(1, "Tool not called"), row(html, not_called))
    assert '<td class="num">2</td>' in row(html, wrong_args)
    assert '<td class="num">1</td>' in row(html, deep)
    assert "incl. subcategories" not in row(html, deep)
    assert re.search(
        r'<td class="num">0<span class="from"[^>]*>incl\. subcategories', row(html, cat(project, "Format"))
    )
    assert "a parent's include its subcategories" in html
