"""The taxonomy page in Chromium: a lead changes a fix route with the select and it saves in place
(htmx), the children's inherited routes follow, the focus stays on the select; a screenshot at
1400×900 goes to var/screenshots/taxonomy.png."""

import pytest
from django.contrib.auth import get_user_model

from annotator.models import Membership, Project, Role, TaxonomyCategory
from annotator.taxonomy import fix_routes, seed_default_taxonomy

from ..conftest import TOOLS
from .conftest import SHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_reroutes_a_category_in_place(browser, live_server, insecure_cookies):
    project = Project.objects.create(name="Sales agent", slug="sales", tools=TOOLS)
    seed_default_taxonomy(project)
    lead = get_user_model().objects.create_user("lead", password="lead-pass-123")
    Membership.objects.create(user=lead, project=project, role=Role.LEAD)
    tool_use = TaxonomyCategory.objects.get(project=project, name="Tool use")
    wrong_tool = TaxonomyCategory.objects.get(project=project, name="Wrong tool")

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "lead")
    page.fill("input[name=password]", "lead-pass-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/p/sales/taxonomy/")
    assert page.locator(".subnav a[aria-current=page]").inner_text() == "Taxonomy"
    assert not page.locator("noscript button").is_visible()  # with JavaScript the select saves by itself

    url = page.url
    page.focus(f"#route-{tool_use.pk}")  # as a keyboard user would be
    page.select_option(f"#route-{tool_use.pk}", "sft")
    page.wait_for_selector("#taxonomy-saved:has-text('Tool use: fixes now go to SFT.')")
    assert page.url == url  # no navigation
    assert page.locator(f"#cat-{wrong_tool.pk}").get_attribute("data-route") == "sft"  # inherited, redrawn
    assert page.evaluate("document.activeElement.id") == f"route-{tool_use.pk}"
    assert fix_routes(project.pk)[wrong_tool.pk] == "sft"
    page.select_option(f"#route-{tool_use.pk}", "dpo")
    page.wait_for_selector("#taxonomy-saved:has-text('Tool use: fixes now go to DPO.')")
    assert fix_routes(project.pk)[wrong_tool.pk] == "dpo"

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "taxonomy.png"))
    assert not errors
    context.close()
