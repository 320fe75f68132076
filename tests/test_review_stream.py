"""The lead's review stream: filters, one item at a time, rejection messages, bulk approval (service, page,
API), and the grouped gold-category picker of the disagreements page."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotator import assignment, review
from annotator.models import (
    Adjudication,
    Label,
    LabelDay,
    Membership,
    Preference,
    Review,
    Role,
    Status,
    Task,
    TaxonomyCategory,
)
from annotator.review import QueueFilters, approve_many, review_queue
from annotator.reviewing import awaiting_review
from annotator.rollups import store

from .conftest import make_conversation

pytestmark = pytest.mark.django_db

User = get_user_model()
T0 = timezone.make_aware(dt.datetime(2025, 3, 1, 9, 0))


def leaves(project):
    return list(TaxonomyCategory.objects.filter(project=project, parent__isnull=False).order_by("id"))


class World:
    """Labels of two annotators on six responses (they disagree on the first), two compared pairs (they
    disagree on the first), and a label in another project."""

    def __init__(self, project, other_project, members):
        self.project, self.members = project, members
        self.a1, self.a2, self.lead = members[Role.ANNOTATOR], members["annotator2"], members[Role.LEAD]
        cats = leaves(project)
        self.leaf_a, self.leaf_b = cats[0], cats[-1]
        self.responses = [make_conversation(project, i)[1][0] for i in range(6)]
        self.minute = 0
        plan1 = [("unreasonable", [self.leaf_a]), ("reasonable", []), ("unreasonable", [self.leaf_b])]
        plan1 += [("reasonable", []), ("reasonable", []), ("unreasonable", [self.leaf_a])]
        self.l1 = [self.label(r, self.a1, v, c) for r, (v, c) in zip(self.responses, plan1, strict=True)]
        plan2 = [("reasonable", []), ("reasonable", []), ("unreasonable", [self.leaf_a])]
        self.l2 = [self.label(r, self.a2, v, c) for r, (v, c) in zip(self.responses, plan2, strict=False)]
        pairs = [make_conversation(project, 10 + i, n_responses=2)[1] for i in range(2)]
        self.p1 = [self.pref(a, b, self.a1, "a") for a, b in pairs]
        self.p2 = [self.pref(pairs[0][0], pairs[0][1], self.a2, "b"), self.pref(*pairs[1], self.a2, "a")]
        assignment.sync_tasks(project)
        foreign = make_conversation(other_project, 99)[1][0]
        self.foreign = self.label(foreign, members["outsider"], "reasonable", [])

    def when(self):
        self.minute += 1
        return T0 + dt.timedelta(minutes=self.minute)

    def label(self, response, user, verdict, cats, status=Status.SUBMITTED):
        label = Label.objects.create(
            response=response, annotator=user, verdict=verdict, status=status, submitted_at=self.when()
        )
        label.categories.set(cats)
        return label

    def pref(self, a, b, user, choice):
        return Preference.objects.create(
            response_a=a,
            response_b=b,
            annotator=user,
            choice=choice,
            status=Status.SUBMITTED,
            submitted_at=self.when(),
        )


@pytest.fixture
def world(project, other_project, members):
    return World(project, other_project, members)


def ids(qs):
    return list(qs.values_list("pk", flat=True))


def parse(project, **params):
    return QueueFilters.parse(project, params)


def assert_rebuild_matches(project):
    incremental = store.snapshot(project)
    store.rebuild(project)
    assert store.snapshot(project) == incremental


# --- filters ---------------------------------------------------------------------------------------


def test_filters_narrow_the_queue_oldest_first(world, project):
    w = world
    everything = [lb.pk for lb in sorted(w.l1 + w.l2, key=lambda lb: lb.submitted_at)]
    assert ids(review_queue(project, parse(project))) == everything
    assert ids(review_queue(project, parse(project, annotator="annotator2"))) == [lb.pk for lb in w.l2]
    assert ids(review_queue(project, parse(project, verdict="unreasonable"))) == [
        w.l1[0].pk,
        w.l1[2].pk,
        w.l1[5].pk,
        w.l2[2].pk,
    ]
    # a category takes the labels in it or below it
    assert ids(review_queue(project, parse(project, category=w.leaf_a.pk))) == [
        w.l1[0].pk,
        w.l1[5].pk,
        w.l2[2].pk,
    ]
    group = w.leaf_b.parent
    in_group = {lb.pk for lb in w.l1 + w.l2 if any(c.parent_id == group.pk for c in lb.categories.all())}
    assert set(ids(review_queue(project, parse(project, category=group.pk)))) == in_group and in_group
    # disagreement: the labels of the response they judged differently, and nothing else
    assert ids(review_queue(project, parse(project, disagreement="1"))) == [w.l1[0].pk, w.l2[0].pk]
    assert ids(review_queue(project, parse(project, disagreement="1", annotator="annotator2"))) == [
        w.l2[0].pk
    ]
    # an approved label still counts as a judgement; a rejected one does not
    w.l2[0].status = Status.REJECTED
    w.l2[0].save()
    assert ids(review_queue(project, parse(project, disagreement="1"))) == []
    w.l2[0].status = Status.APPROVED
    w.l2[0].save()
    assert ids(review_queue(project, parse(project, disagreement="1"))) == [w.l1[0].pk]
    # comparisons: verdict is the choice; disagreement on the same pair
    prefs = parse(project, what="preferences")
    assert ids(review_queue(project, prefs)) == [p.pk for p in w.p1 + w.p2]
    assert ids(review_queue(project, parse(project, what="preferences", disagreement="true"))) == [
        w.p1[0].pk,
        w.p2[0].pk,
    ]
    assert ids(review_queue(project, parse(project, what="preferences", verdict="b"))) == [w.p2[0].pk]
    assert w.foreign.pk not in ids(review_queue(project, parse(project)))


@pytest.mark.parametrize(
    "params, field",
    [
        ({"what": "everything"}, "what"),
        ({"annotator": "nobody"}, "annotator"),
        ({"annotator": "outsider"}, "annotator"),  # a user, but not a member of this project
        ({"category": "abc"}, "category"),
        ({"category": "99999999999999999999999"}, "category"),
        ({"verdict": "maybe"}, "verdict"),
        ({"what": "preferences", "verdict": "reasonable"}, "verdict"),
        ({"disagreement": "perhaps"}, "disagreement"),
        ({"annotator": ["a", "b"]}, "annotator"),
    ],
)
def test_bad_filters_name_the_parameter(world, project, params, field):
    with pytest.raises(ValidationError) as exc:
        QueueFilters.parse(project, params)
    assert field in exc.value.message_dict


def test_a_category_of_another_project_is_refused(world, project, other_project):
    theirs = TaxonomyCategory.objects.create(project=other_project, name="Theirs")
    with pytest.raises(ValidationError) as exc:
        parse(project, category=theirs.pk)
    assert "category" in exc.value.message_dict


# --- the stream page ---------------------------------------------------------------------------------


def test_the_stream_shows_one_item_with_its_context_and_walks_the_list(client, world, project):
    w = world
    client.force_login(w.lead)
    page = client.get("/p/sales/review/").content.decode()
    first = w.l1[0]
    assert page.count('class="stream-item review-card"') == 1 and f'id="label-{first.pk}"' in page
    assert "Is A-0 in stock?" in page  # what the user asked, shown, not folded away
    assert "Item <strong>1</strong> of <strong>9 waiting</strong>" in page
    assert "annotator2" in page  # the other judgement on the same response
    for key in ("<kbd>A</kbd>", "<kbd>R</kbd>", "<kbd>J</kbd>", "<kbd>K</kbd>", "<kbd>?</kbd>"):
        assert key in page
    # next / previous follow the order of the list and keep the filters
    second = w.l1[1]
    assert f"at={second.pk}" in page
    page = client.get(f"/p/sales/review/?at={second.pk}").content.decode()
    assert (
        f'id="label-{second.pk}"' in page and "Item <strong>2</strong>" in page and f"at={first.pk}" in page
    )
    narrowed = client.get(f"/p/sales/review/?annotator=annotator2&at={w.l2[1].pk}").content.decode()
    assert "Item <strong>2</strong> of <strong>3 waiting</strong>" in narrowed
    assert f"annotator=annotator2&amp;at={w.l2[0].pk}" in narrowed and f"at={w.l2[2].pk}" in narrowed
    # an htmx step swaps only the item
    part = client.get(f"/p/sales/review/?at={second.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in part and f'id="label-{second.pk}"' in part
    # comparisons
    page = client.get("/p/sales/review/?what=preferences").content.decode()
    assert f'id="preference-{w.p1[0].pk}"' in page and "A is better" in page


def test_bad_filters_on_the_page_are_a_400_that_says_which(client, world):
    client.force_login(world.lead)
    res = client.get("/p/sales/review/?annotator=nobody&verdict=maybe")
    html = res.content.decode()
    assert res.status_code == 400 and "annotator" in html and "No member of this project is called" in html
    assert "verdict" in html and "&#x27;maybe&#x27;" in html
    assert client.get("/p/sales/review/bulk-approve/?disagreement=x").status_code == 400


def test_the_list_view_is_compact_and_filtered(client, world):
    client.force_login(world.lead)
    html = client.get("/p/sales/review/?view=list&verdict=unreasonable").content.decode()
    assert html.count('class="review-card"') == 4 and "<strong>4 waiting</strong>" in html


def test_only_leads_see_the_stream(client, world):
    client.force_login(world.a1)
    assert client.get("/p/sales/review/").status_code == 403
    assert client.get("/p/sales/review/bulk-approve/").status_code == 403
    client.force_login(world.members["outsider"])
    assert client.get("/p/sales/review/").status_code == 404


def stream_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?annotator=annotator&verdict=unreasonable&disagreement=1",
        "?view=list&disagreement=1",
        "?what=preferences&disagreement=1",
    ],
)
def test_the_stream_costs_the_same_with_ten_items_or_fifty(client, world, project, query):
    w = world
    client.force_login(w.lead)

    def add(n, start):  # responses judged both ways (labels with categories), compared pairs both ways
        for i in range(start, start + n):
            response = make_conversation(project, 100 + i)[1][0]
            w.label(response, w.a1, "unreasonable", [w.leaf_a, w.leaf_b])
            w.label(response, w.a2, "reasonable", [])
            a, b = make_conversation(project, 200 + i, n_responses=2)[1]
            w.pref(a, b, w.a1, "a")
            w.pref(a, b, w.a2, "tie")

    add(2, 0)  # every list holds a next item in both measurements
    url = f"/p/sales/review/{query}"
    few = stream_queries(client, url)
    add(20, 2)
    assert stream_queries(client, url) == few
    assert few <= 20


# --- one review at a time --------------------------------------------------------------------------


def test_reject_without_a_comment_answers_the_form_with_the_message(client, world):
    w = world
    client.force_login(w.lead)
    label = w.l1[0]
    res = client.post(
        f"/p/sales/review/label/{label.pk}/",
        {"decision": "reject", "comment": "  ", "stream": "1", "annotator": "annotator"},
        HTTP_HX_REQUEST="true",
    )
    html = res.content.decode()
    assert res.status_code == 400
    assert "Say why it is rejected" in html and 'role="alert"' in html and 'aria-invalid="true"' in html
    assert res["HX-Retarget"] == f"#review-form-label-{label.pk}" and res["HX-Reswap"] == "outerHTML"
    assert f'id="review-form-label-{label.pk}"' in html and 'name="annotator" value="annotator"' in html
    label.refresh_from_db()
    assert label.status == Status.SUBMITTED and not Review.objects.exists()
    # the list (non-stream) form answers the same way
    res = client.post(f"/p/sales/review/label/{label.pk}/", {"decision": "reject"}, HTTP_HX_REQUEST="true")
    assert res.status_code == 400 and "Say why it is rejected" in res.content.decode()
    # without JavaScript: back to the item with the message
    res = client.post(f"/p/sales/review/label/{label.pk}/", {"decision": "reject"}, follow=True)
    assert "Say why it is rejected" in res.content.decode()


def test_a_stream_review_answers_the_next_item_of_the_same_list(client, world):
    w = world
    client.force_login(w.lead)
    first, second = w.l2[0], w.l2[1]
    res = client.post(
        f"/p/sales/review/label/{first.pk}/",
        {"decision": "approve", "stream": "1", "annotator": "annotator2"},
        HTTP_HX_REQUEST="true",
    )
    html = res.content.decode()
    assert (
        res.status_code == 200 and f'id="label-{second.pk}"' in html and "Item <strong>1</strong> of" in html
    )
    assert res["HX-Push-Url"].endswith(f"annotator=annotator2&at={second.pk}")
    res = client.post(
        f"/p/sales/review/label/{second.pk}/",
        {"decision": "reject", "comment": "Pick a category", "stream": "1", "annotator": "annotator2"},
        HTTP_HX_REQUEST="true",
    )
    assert f'id="label-{w.l2[2].pk}"' in res.content.decode()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.APPROVED, Status.REJECTED)
    assert second.reviews.get().comment == "Pick a category"


# --- bulk approval: the service ----------------------------------------------------------------------


def test_approve_many_approves_exactly_the_confirmed_list(world, project):
    w = world
    f = parse(project, annotator="annotator2")
    confirmed = ids(review_queue(project, f))
    history_before = Label.history.count()
    assert approve_many(w.lead, project, f, confirmed) == 3
    for label in w.l2:
        label.refresh_from_db()
        assert label.status == Status.APPROVED
        review_row = label.reviews.get()
        assert (review_row.reviewer, review_row.decision) == (w.lead, Review.Decision.APPROVE)
    assert all(Label.objects.get(pk=lb.pk).status == Status.SUBMITTED for lb in w.l1)
    assert Label.objects.get(pk=w.foreign.pk).status == Status.SUBMITTED
    # history as a save() would write it: the new status, by the lead, with the label's categories
    assert Label.history.count() == history_before + 3
    last = Label.history.filter(id=w.l2[2].pk).latest("history_id")
    assert (last.status, last.history_user, last.history_type) == (Status.APPROVED, w.lead, "~")
    assert [c.taxonomycategory_id for c in last.categories.all()] == [w.leaf_a.pk]
    assert Review.history.count() == 3
    assert_rebuild_matches(project)
    assert awaiting_review(LabelDay, project) == 6  # the page's count (the day roll-ups) moved


def test_approve_many_comparisons_keep_the_roll_ups(world, project):
    w = world
    f = parse(project, what="preferences", disagreement="1")
    assert approve_many(w.lead, project, f, ids(review_queue(project, f))) == 2
    assert {p.status for p in Preference.objects.filter(pk__in=[w.p1[0].pk, w.p2[0].pk])} == {Status.APPROVED}
    assert Preference.objects.get(pk=w.p1[1].pk).status == Status.SUBMITTED
    assert_rebuild_matches(project)


def test_approve_many_costs_the_same_for_three_items_or_thirty(world, project):
    w = world
    f = parse(project, annotator="annotator2")
    confirmed = ids(review_queue(project, f))
    with CaptureQueriesContext(connection) as few:  # a fresh user object: its roles are read once in both
        approve_many(User.objects.get(pk=w.lead.pk), project, f, confirmed)
    for i in range(30):
        response = make_conversation(project, 300 + i)[1][0]
        w.label(response, w.a2, "unreasonable", [w.leaf_a, w.leaf_b])
        w.label(response, w.a1, "reasonable", [])
    confirmed = ids(review_queue(project, f))
    assert len(confirmed) == 30
    with CaptureQueriesContext(connection) as many:
        assert approve_many(User.objects.get(pk=w.lead.pk), project, f, confirmed) == 30
    assert len(many.captured_queries) == len(few.captured_queries) <= 40
    assert_rebuild_matches(project)


def test_approve_many_refuses_a_list_that_changed(world, project):
    w = world
    f = parse(project, annotator="annotator2")
    confirmed = ids(review_queue(project, f))
    # a new submission joins the list after the lead looked
    w.label(make_conversation(project, 50)[1][0], w.a2, "reasonable", [])
    with pytest.raises(review.ListChanged) as exc:
        approve_many(w.lead, project, f, confirmed)
    assert "changed since you confirmed" in str(exc.value) and "now holds 4" in str(exc.value)
    # an item reviewed elsewhere leaves it
    fresh = ids(review_queue(project, f))
    review.apply_review(w.lead, w.l2[0], "reject", "no")
    with pytest.raises(review.ListChanged):
        approve_many(w.lead, project, f, fresh)
    assert not Label.objects.filter(annotator=w.a2, status=Status.APPROVED).exists()
    with pytest.raises(ValidationError) as exc:
        approve_many(w.lead, project, f, [])
    assert "ids" in exc.value.message_dict
    with pytest.raises(ValidationError):
        approve_many(w.lead, project, f, ["x"])


def test_approve_many_never_touches_another_project(world, project, other_project):
    w = world
    f = parse(project, annotator="annotator2")
    mixed = [*ids(review_queue(project, f)), w.foreign.pk]
    with pytest.raises(review.ListChanged):
        approve_many(w.lead, project, f, mixed)
    with pytest.raises(PermissionDenied):  # a lead here is nobody there
        approve_many(w.lead, other_project, QueueFilters(), [w.foreign.pk])
    with pytest.raises(PermissionDenied):  # annotators do not approve
        approve_many(w.a1, project, f, ids(review_queue(project, f)))
    assert Label.objects.get(pk=w.foreign.pk).status == Status.SUBMITTED
    assert not Review.objects.exists()


# --- bulk approval: the page -------------------------------------------------------------------------


def test_bulk_page_confirms_then_approves_and_refuses_a_changed_list(client, world, project):
    w = world
    client.force_login(w.lead)
    stream = client.get("/p/sales/review/?verdict=unreasonable").content.decode()
    assert "Approve all 4 in this list" in stream
    page = client.get("/p/sales/review/bulk-approve/?verdict=unreasonable")
    html = page.content.decode()
    confirmed = ",".join(str(pk) for pk in ids(review_queue(project, parse(project, verdict="unreasonable"))))
    assert page.status_code == 200 and f'value="{confirmed}"' in html and "Approve these 4" in html
    assert "verdict unreasonable" in html
    # someone submits meanwhile: 409, the new list to confirm, nothing approved
    w.label(make_conversation(project, 60)[1][0], w.a2, "unreasonable", [w.leaf_b])
    res = client.post("/p/sales/review/bulk-approve/", {"verdict": "unreasonable", "ids": confirmed})
    assert res.status_code == 409 and "changed since you confirmed" in res.content.decode()
    assert "Approve these 5" in res.content.decode()
    assert not Label.objects.filter(status=Status.APPROVED).exists()
    fresh = ",".join(str(pk) for pk in ids(review_queue(project, parse(project, verdict="unreasonable"))))
    res = client.post("/p/sales/review/bulk-approve/", {"verdict": "unreasonable", "ids": fresh})
    assert res.status_code == 302 and res["Location"] == "/p/sales/review/?what=labels&verdict=unreasonable"
    assert Label.objects.filter(status=Status.APPROVED).count() == 5
    assert "Approved 5 labels" in client.get(res["Location"]).content.decode()
    # a foreign id smuggled in: refused, untouched
    res = client.post("/p/sales/review/bulk-approve/", {"ids": f"{w.l1[1].pk},{w.foreign.pk}"})
    assert res.status_code == 409
    assert Label.objects.get(pk=w.foreign.pk).status == Status.SUBMITTED
    client.force_login(w.a1)
    assert client.post("/p/sales/review/bulk-approve/", {"ids": fresh}).status_code == 403


# --- bulk approval: the API --------------------------------------------------------------------------


def test_bulk_api_lists_then_approves_with_the_page_rules(api, world, project, other_project):
    w = world
    lead = api(w.lead)
    listed = lead.get("/api/reviews/bulk-approve/", {"project": "sales", "annotator": "annotator2"})
    assert listed.status_code == 200, listed.content
    body = listed.json()
    assert body["ids"] == [lb.pk for lb in w.l2] and body["count"] == 3 and body["more"] is False
    payload = {"project": "sales", "annotator": "annotator2", "ids": body["ids"]}
    # the list changes before the POST: 409
    w.label(make_conversation(project, 70)[1][0], w.a2, "reasonable", [])
    res = lead.post("/api/reviews/bulk-approve/", payload, format="json")
    assert res.status_code == 409 and "changed" in res.json()["ids"][0]
    payload["ids"] = lead.get(
        "/api/reviews/bulk-approve/", {"project": "sales", "annotator": "annotator2"}
    ).json()["ids"]
    res = lead.post("/api/reviews/bulk-approve/", payload, format="json")
    assert res.status_code == 200 and res.json() == {"approved": 4}
    assert Label.objects.filter(annotator=w.a2, status=Status.APPROVED).count() == 4
    assert_rebuild_matches(project)
    # bad filters are 400 by field
    res = lead.post(
        "/api/reviews/bulk-approve/", {"project": "sales", "verdict": "maybe", "ids": [1]}, format="json"
    )
    assert res.status_code == 400 and "verdict" in res.json()
    # another project's rows: not visible (400), not a lead there (403), smuggled ids (409)
    res = lead.post("/api/reviews/bulk-approve/", {"project": "other", "ids": [w.foreign.pk]}, format="json")
    assert res.status_code == 400 and "project" in res.json()
    Membership.objects.create(user=w.lead, project=other_project, role=Role.ANNOTATOR)
    res = api(User.objects.get(pk=w.lead.pk)).post(
        "/api/reviews/bulk-approve/", {"project": "other", "ids": [w.foreign.pk]}, format="json"
    )
    assert res.status_code == 403
    res = lead.post("/api/reviews/bulk-approve/", {"project": "sales", "ids": [w.foreign.pk]}, format="json")
    assert res.status_code == 409
    outsider = api(w.members["outsider"])
    res = outsider.post(
        "/api/reviews/bulk-approve/", {"project": "sales", "ids": [w.l1[0].pk]}, format="json"
    )
    assert res.status_code == 400
    assert api(w.a1).get("/api/reviews/bulk-approve/", {"project": "sales"}).status_code == 403
    assert Label.objects.get(pk=w.foreign.pk).status == Status.SUBMITTED
    assert Label.objects.get(pk=w.l1[0].pk).status == Status.SUBMITTED


# --- disagreements: the gold categories ----------------------------------------------------------------


def test_disagreements_offer_grouped_categories_with_full_names(client, world, project):
    w = world
    client.force_login(w.lead)
    html = client.get("/p/sales/disagreements/").content.decode()
    assert '<select name="categories"' not in html and "data-cat-picker" in html
    active = TaxonomyCategory.objects.filter(project=project, active=True)
    for group in active.filter(parent__isnull=True, children__isnull=False).distinct():
        assert f"<legend>{group.name}</legend>" in html
    for leaf in active.filter(children__isnull=True, parent__isnull=False):
        assert f'value="{leaf.pk}"' in html and f"<span>{leaf.name}</span>" in html
    # beside the category an annotator chose, who chose it
    assert 'title="chosen by annotator">annotator</span>' in html
    task = Task.objects.get(kind=Task.Kind.LABEL, response=w.responses[0])
    res = client.post(
        f"/p/sales/disagreements/{task.pk}/",
        {"verdict": "unreasonable", "categories": [w.leaf_a.pk, w.leaf_b.pk]},
    )
    assert res.status_code == 302
    assert set(Adjudication.objects.get(task=task).categories.values_list("pk", flat=True)) == {
        w.leaf_a.pk,
        w.leaf_b.pk,
    }


def test_the_disagreements_page_costs_the_same_with_one_disputed_pair_or_five(client, world, project):
    w = world
    client.force_login(w.lead)
    one = stream_queries(client, "/p/sales/disagreements/")
    page = client.get("/p/sales/disagreements/").content.decode()
    assert page.count('class="pair') >= 1 or "pair" in page
    for i in range(4):  # four more pairs the two annotators disagree on
        a, b = make_conversation(project, 30 + i, n_responses=2)[1]
        w.pref(a, b, w.a1, "a")
        w.pref(a, b, w.a2, "b")
    assignment.sync_tasks(project)
    assert stream_queries(client, "/p/sales/disagreements/") == one


def _article(html: str, task_pk: int) -> str:
    """The disagreements page's card of one item."""
    start = html.index(f'id="item-{task_pk}"')
    return html[start : html.index("</article>", start)]


def test_a_disputed_pair_shows_its_context_and_no_choice_is_pre_set(client, world, project):
    w = world
    client.force_login(w.lead)
    a, b = w.p1[0].response_a, w.p1[0].response_b
    task = Task.objects.get(kind=Task.Kind.COMPARE, response=a, response_b=b)
    card = _article(client.get("/p/sales/disagreements/").content.decode(), task.pk)
    # what A and B answer, above them, and from which conversation
    assert "Is A-10 in stock?" in card and a.conversation.external_id in card
    assert card.index("Is A-10 in stock?") < card.index("Answer 0 about A-10")
    assert "<select" not in card and "checked" not in card and "selected" not in card
    for value in ("a", "b", "tie", "both_bad"):
        assert f'name="choice" value="{value}" required' in card


def test_a_gold_decision_without_a_choice_is_refused_beside_its_form(client, world, project):
    w = world
    client.force_login(w.lead)
    task = Task.objects.get(kind=Task.Kind.COMPARE, response=w.p1[0].response_a)
    res = client.post(f"/p/sales/disagreements/{task.pk}/", {"note": "looked twice"})
    assert res.status_code == 302 and res["Location"].endswith(f"#item-{task.pk}")
    assert not Adjudication.objects.filter(task=task).exists()
    page = client.get("/p/sales/disagreements/").content.decode()
    card = _article(page, task.pk)
    assert "Not recorded: Choose the gold preference." in card and 'value="looked twice"' in card
    assert page.count("Not recorded:") == 1  # only at the item it belongs to
    assert "Not recorded:" not in client.get("/p/sales/disagreements/").content.decode()  # said once
    # a label's gold decision without a verdict: the same, at its own card
    label_task = Task.objects.get(kind=Task.Kind.LABEL, response=w.responses[0])
    client.post(f"/p/sales/disagreements/{label_task.pk}/", {"categories": [w.leaf_a.pk]})
    assert not Adjudication.objects.exists()
    page = client.get("/p/sales/disagreements/").content.decode()
    assert "Not recorded: Choose the gold verdict." in _article(page, label_task.pk)
    assert f'value="{w.leaf_a.pk}" checked' in _article(page, label_task.pk)  # what was ticked stays ticked
    ok = client.post(f"/p/sales/disagreements/{task.pk}/", {"choice": "b"})
    assert ok.status_code == 302 and Adjudication.objects.get(task=task).choice == "b"


# --- two responses of one conversation are told apart by their model ---------------------------------


def _second_model_answer(project, w, i):
    """Another model's response in conversation conv-{i} (the world's responses are agent-v1's)."""
    from annotator.models import ModelResponse, ModelVersion, content_hash

    first = w.responses[i]
    mv, _ = ModelVersion.objects.get_or_create(project=project, name=f"agent-v{i + 2}")
    msg = {"role": "assistant", "content": f"Another answer about A-{i}."}
    return ModelResponse.objects.create(
        conversation=first.conversation,
        model_version=mv,
        context_length=first.context_length,
        message=msg,
        response_hash=content_hash(msg),
    )


def _row(html: str, row_id: str) -> str:
    start = html.index(f'id="{row_id}"')
    return html[start : html.index("</tr>", start)]


def test_the_list_and_the_bulk_page_name_each_responses_model_at_a_constant_cost(client, world, project):
    w = world
    client.force_login(w.lead)
    other = w.label(_second_model_answer(project, w, 1), w.a1, "unreasonable", [w.leaf_a])
    url = "/p/sales/review/?view=list&annotator=annotator"
    for page in (
        client.get(url).content.decode(),
        client.get("/p/sales/review/bulk-approve/?annotator=annotator").content.decode(),
    ):
        assert "<th>Model</th>" in page
        same = _row(page, f"label-{w.l1[1].pk}")
        theirs = _row(page, f"label-{other.pk}")
        assert "conv-1" in same and "conv-1" in theirs  # one conversation, two responses
        assert "agent-v1" in same and "agent-v3" in theirs and "agent-v3" not in same
    pairs = client.get("/p/sales/review/?view=list&what=preferences").content.decode()
    assert "A: agent-v1<br>B: agent-v1" in _row(pairs, f"preference-{w.p1[0].pk}")
    few = stream_queries(client, url)
    for i in range(2, 5):  # more rows, each from another model
        w.label(_second_model_answer(project, w, i), w.a1, "reasonable", [])
    assert stream_queries(client, url) == few
