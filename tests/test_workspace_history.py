"""The annotator's own submitted work: reopened from the history page, changed and submitted again until a
lead reviews it (then final, or sent back), with the day roll-ups still counting each item once; progress
per kind; the context split; the per-argument difference on the compare page; a GET on a submit URL."""

import json
import re

import pytest
from django.db.models import Sum

from annotator import assignment
from annotator.labelling import submit_label, submit_preference
from annotator.models import (
    Conversation,
    Label,
    LabelDay,
    ModelResponse,
    ModelVersion,
    Preference,
    Review,
    Status,
    Task,
    TaxonomyCategory,
    content_hash,
)
from annotator.review import apply_review
from annotator.rollups import store
from annotator.workspace import compare_calls, split_context

from .conftest import make_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue(project, members):
    project.overlap = 1
    project.save()
    for i in range(3):
        make_conversation(project, i, n_responses=2)
    assignment.sync_tasks(project)
    return project


def leaves(project):
    return list(TaxonomyCategory.objects.filter(project=project, parent__isnull=False).order_by("pk"))


def take(client, kind="label") -> int:
    location = client.get("/p/sales/next/" + ("?kind=compare" if kind == "compare" else ""))["Location"]
    return int(location.rstrip("/").split("/")[-1])


def submitted_cells(project) -> int:
    """How many labels the day roll-ups count as submitted, over every day and split."""
    row = LabelDay.objects.filter(project=project).aggregate(
        n=Sum("n_train_submitted"), a=Sum("n_train_approved"), r=Sum("n_train_rejected")
    )
    return {k: v or 0 for k, v in row.items()}


def test_a_get_on_a_submit_url_goes_back_to_the_task(client, queue, members):
    client.force_login(members["annotator"])
    task_id = take(client)
    refused = client.post(f"/p/sales/tasks/{task_id}/submit/", {"verdict": "unreasonable"})
    assert refused.status_code == 422  # the page a refused submit renders sits on the submit URL
    again = client.get(f"/p/sales/tasks/{task_id}/submit/")  # reloading it, or opening it from history
    assert again.status_code == 302 and again["Location"] == f"/p/sales/tasks/{task_id}/"
    assert client.get("/p/sales/tasks/999999/submit/").status_code == 404
    client.force_login(members["outsider"])
    assert client.get(f"/p/sales/tasks/{task_id}/submit/").status_code == 404


def test_submitted_work_is_changed_from_history_and_counted_once(client, queue, members, project):
    ann = members["annotator"]
    client.force_login(ann)
    task_id = take(client)
    first, second = leaves(project)[:2]
    done = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"verdict": "unreasonable", "categories": [first.pk], "expected_status": "draft", "note": "v1"},
    )
    assert done.status_code == 302 and done["Location"] == "/p/sales/next/"
    label = Label.objects.get(annotator=ann)
    assert submitted_cells(project) == {"n": 1, "a": 0, "r": 0}

    history = client.get("/p/sales/history/").content.decode()
    assert f'href="/p/sales/tasks/{task_id}/"' in history and "Change" in history
    assert "not reviewed yet" in history

    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    assert 'data-mode="submitted"' in page and "Save changes" in page
    assert 'name="expected_status" value="submitted"' in page
    # autosave never writes over a submission a lead may be reading
    assert client.post(f"/p/sales/tasks/{task_id}/draft/", {"note": "half"}).status_code == 409
    changed = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"verdict": "unreasonable", "categories": [second.pk], "expected_status": "submitted", "note": "v2"},
    )
    assert changed.status_code == 302 and changed["Location"] == "/p/sales/history/"
    label.refresh_from_db()
    assert (label.status, label.note) == (Status.SUBMITTED, "v2")
    assert list(label.categories.values_list("pk", flat=True)) == [second.pk]
    assert Label.objects.filter(annotator=ann).count() == 1
    # the queue: still one filled slot, the task completed once
    task = Task.objects.get(pk=task_id)
    assert task.completed == 1
    assert submitted_cells(project) == {"n": 1, "a": 0, "r": 0}
    incremental = store.snapshot(project)
    store.rebuild(project)
    assert store.snapshot(project) == incremental

    # a validation error on a change keeps the submission as it was and shows what was typed
    bad = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"verdict": "unreasonable", "expected_status": "submitted", "note": "v3 unfinished"},
    )
    assert bad.status_code == 422 and "v3 unfinished" in bad.content.decode()
    label.refresh_from_db()
    assert label.note == "v2" and label.status == Status.SUBMITTED


def test_once_approved_it_is_final_and_once_sent_back_it_is_a_fix(client, queue, members, project):
    ann, lead = members["annotator"], members["lead"]
    client.force_login(ann)
    task_id = take(client)
    cat = leaves(project)[0]
    client.post(f"/p/sales/tasks/{task_id}/submit/", {"verdict": "unreasonable", "categories": [cat.pk]})
    label = Label.objects.get(annotator=ann)

    # the annotator opened it to change it; meanwhile the lead sends it back: the change is refused, the
    # page shows why and keeps what was typed, and the next submit is the fix
    apply_review(lead, label, "reject", "Wrong category")
    late = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"verdict": "reasonable", "expected_status": "submitted", "note": "my change"},
    )
    html = late.content.decode()
    assert late.status_code == 409 and "sent this item back while you were changing it" in html
    assert "Wrong category" in html and "my change" in html
    label.refresh_from_db()
    assert label.status == Status.REJECTED and label.verdict == "unreasonable"
    fixed = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"verdict": "reasonable", "expected_status": "rejected", "note": "my change"},
    )
    assert fixed.status_code == 302
    label.refresh_from_db()
    assert (label.status, label.verdict) == (Status.SUBMITTED, "reasonable")
    history = client.get("/p/sales/history/").content.decode()
    assert "you fixed it: waiting for review again" in history

    apply_review(lead, label, "approve")
    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    assert 'data-mode="done"' in page and "Save changes" not in page
    final = client.post(
        f"/p/sales/tasks/{task_id}/submit/", {"verdict": "unreasonable", "categories": [cat.pk]}
    )
    assert final.status_code == 409 and "approved and is final" in final.content.decode()
    label.refresh_from_db()
    assert (label.status, label.verdict) == (Status.APPROVED, "reasonable")
    assert submitted_cells(project) == {"n": 0, "a": 1, "r": 0}
    assert Review.objects.filter(label=label).count() == 2


def test_a_second_tab_does_not_submit_over_the_first(client, queue, members, project):
    client.force_login(members["annotator"])
    task_id = take(client)
    form = {"verdict": "reasonable", "expected_status": "draft"}
    assert client.post(f"/p/sales/tasks/{task_id}/submit/", form).status_code == 302
    second = client.post(f"/p/sales/tasks/{task_id}/submit/", {**form, "note": "from the other tab"})
    assert second.status_code == 409 and "already submitted" in second.content.decode()
    assert Label.objects.get(annotator=members["annotator"]).note == ""


def test_a_submitted_comparison_is_changed_keeping_its_sides(client, queue, members):
    client.force_login(members["annotator"])
    task_id = take(client, "compare")
    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    left = "b" if 'name="left_side" value="b"' in page else "a"
    client.post(
        f"/p/sales/tasks/{task_id}/submit/", {"choice": left, "left_side": left, "expected_status": "draft"}
    )
    pref = Preference.objects.get(annotator=members["annotator"])
    assert pref.status == Status.SUBMITTED
    history = client.get("/p/sales/history/?what=compare").content.decode()
    assert "left is better" in history and f"/p/sales/tasks/{task_id}/" in history
    changed = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {"choice": "tie", "left_side": left, "reason": "same", "expected_status": "submitted"},
    )
    assert changed.status_code == 302
    pref.refresh_from_db()
    assert (pref.choice, pref.left_side, pref.reason, pref.status) == ("tie", left, "same", Status.SUBMITTED)
    assert Preference.objects.filter(annotator=members["annotator"]).count() == 1


def test_history_lists_only_ones_own_submitted_work_newest_first_in_pages(client, project, members):
    project.overlap = 2
    project.save()
    for i in range(30):
        make_conversation(project, i, n_responses=1)
    make_conversation(project, 99, n_responses=2)
    assignment.sync_tasks(project)
    ann, other = members["annotator"], members["annotator2"]
    for _ in range(28):
        slot = assignment.next_task(project, ann, "label")
        submit_label(slot.task, ann, {"verdict": "reasonable"})
    slot = assignment.next_task(project, ann, "compare")
    submit_preference(slot.task, ann, {"choice": "tie"})
    draft_slot = assignment.next_task(project, ann, "label")  # a draft is not submitted work
    client.force_login(ann)
    client.post(f"/p/sales/tasks/{draft_slot.task_id}/draft/", {"note": "draft"})
    theirs = assignment.next_task(project, other, "label")
    submit_label(theirs.task, other, {"verdict": "reasonable", "note": "NOT-MINE"})

    first = client.get("/p/sales/history/")
    html = first.content.decode()
    assert first.status_code == 200
    assert html.count("<tr data-kind=") == 25 and "page 1 of 2 · 29 items" in html
    assert html.index('data-kind="compare"') < html.index('data-kind="label"')  # the newest first
    assert "NOT-MINE" not in html
    second = client.get("/p/sales/history/?page=2").content.decode()
    assert second.count("<tr data-kind=") == 4
    only = client.get("/p/sales/history/?what=compare").content.decode()
    assert only.count("<tr data-kind=") == 1
    assert client.get("/p/sales/history/?status=approved").content.decode().count("<tr data-kind=") == 0
    assert client.get("/p/sales/history/?what=<script>&page=x").status_code == 200  # bad filters: ignored
    home = client.get("/p/sales/").content.decode()
    assert 'href="/p/sales/history/"' in home
    client.force_login(members["outsider"])
    assert client.get("/p/sales/history/").status_code == 404


def test_progress_counts_labels_and_comparisons(client, queue, members, project):
    client.force_login(members["annotator"])
    task_id = take(client)
    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    assert "<strong>1 of 6</strong>" in page  # 3 conversations × 2 responses, overlap 1
    assert "0 done · 6 left" in page and "0 done · 3 left" in page  # labels (this one too); comparisons
    client.post(f"/p/sales/tasks/{task_id}/submit/", {"verdict": "reasonable"})
    compare_id = take(client, "compare")
    page = client.get(f"/p/sales/tasks/{compare_id}/").content.decode()
    assert "1 done · 5 left" in page and "<strong>1 of 3</strong>" in page and "0 done · 3 left" in page
    history = client.get("/p/sales/history/").content.decode()
    assert "1 done · 5 left" in history and "0 done · 3 left" in history  # the pair in hand is still to do


def test_the_response_under_review_comes_after_a_collapsed_earlier_context(client, project, members):
    context = [
        {"role": "system", "content": "You sell lamps."},
        {"role": "user", "content": "Hi, is ORD-39260 shipped?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "check_inventory", "arguments": '{"sku": "L-1"}'}}
            ],
        },
        {"role": "tool", "content": '{"stock": 3}'},
        {"role": "assistant", "content": "It is in stock."},
        {"role": "user", "content": "EARLIER-TURN-END and now order two"},
        {"role": "user", "content": "LAST-USER-TURN please"},
    ]
    earlier, recent = split_context(context)
    assert [m["content"] for m in recent] == ["LAST-USER-TURN please"] and len(earlier) == 6
    assert split_context(context[:2]) == ([], context[:2])  # one hidden message is not worth a click
    conv = Conversation.objects.create(
        project=project,
        external_id="long",
        messages=context,
        tools=project.tools,
        content_hash=content_hash(context, project.tools),
    )
    mv = ModelVersion.objects.create(project=project, name="v1")
    msg = {"role": "assistant", "content": "Ordered."}
    ModelResponse.objects.create(
        conversation=conv, model_version=mv, context_length=7, message=msg, response_hash=content_hash(msg)
    )
    assignment.sync_tasks(project)
    client.force_login(members["annotator"])
    html = client.get(f"/p/sales/tasks/{take(client)}/").content.decode()
    assert "6 earlier messages <kbd>M</kbd></summary>" in html
    collapsed = html.index('<details class="earlier"')
    closed = html.index("</ol>\n</details>", collapsed)
    earlier_turn, last_turn = html.index("EARLIER-TURN-END"), html.index("LAST-USER-TURN")
    assert collapsed < earlier_turn < closed < last_turn < html.index("data-focus")


def test_compare_marks_the_arguments_that_differ():
    def call(name, **args):
        return {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    a = {"content": "x", "tool_calls": [call("cancel_order", order_id="ORD-39260", reason="late")]}
    b = {
        "content": "y",
        "tool_calls": [call("cancel_order", order_id="ORD-47959", reason="late", note="<b>")],
    }
    left, right = compare_calls(a, b)
    rows = {r["text"].split(":")[0].strip(): r["differs"] for r in left[0]["rows"]}
    assert rows == {'"order_id"': True, '"reason"': False}
    assert left[0]["missing"] == ["note"] and not left[0]["name_differs"]
    assert {r["text"].split(":")[0].strip(): r["differs"] for r in right[0]["rows"]}['"note"'] is True
    only_a, only_b = compare_calls({"tool_calls": [call("check_inventory", sku="A")]}, {"content": "no call"})
    assert only_a[0]["only_here"] and only_b == []
    renamed, _ = compare_calls(a, {"tool_calls": [call("refund_order", order_id="ORD-39260", reason="late")]})
    assert renamed[0]["name_differs"] and not any(r["differs"] for r in renamed[0]["rows"])


def test_the_compare_page_shows_the_difference_escaped(client, project, members):
    conv, (r1, r2) = make_conversation(project, 1, n_responses=2)
    evil = '<img src=x onerror="alert(1)">'
    for response, order in ((r1, "ORD-39260"), (r2, "ORD-47959")):
        response.message = {
            "role": "assistant",
            "content": "Cancelling.",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": "cancel_order",
                        "arguments": json.dumps({"order_id": order, "why": evil}),
                    },
                }
            ],
        }
        response.save()
    assignment.sync_tasks(project)
    client.force_login(members["annotator"])
    html = client.get(f"/p/sales/tasks/{take(client, 'compare')}/").content.decode()
    assert '<span class="arg diff">  &quot;order_id&quot;: &quot;ORD-39260&quot;</span>' in html
    assert '<span class="arg diff">  &quot;order_id&quot;: &quot;ORD-47959&quot;</span>' in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert '<span class="arg">  &quot;why&quot;' in html  # the same on both sides: not marked


def test_an_untouched_correction_editor_is_no_correction_even_for_an_unknown_tool(client, project, members):
    """The editor starts from the response; a response that calls a tool the project lacks must not block a
    submit the annotator never touched the editor for (its verdict and category say what is wrong)."""
    conv, (response,) = make_conversation(project, 1)
    calls = [{"type": "function", "function": {"name": "teleport", "arguments": '{"to": "moon"}'}}]
    response.message = {"role": "assistant", "content": "Done.", "tool_calls": calls}
    response.save()
    assignment.sync_tasks(project)
    client.force_login(members["annotator"])
    task_id = take(client)
    page = client.get(f"/p/sales/tasks/{task_id}/").content.decode()
    assert "teleport" in page  # the editor shows the response's own calls
    check = client.post(
        f"/p/sales/tasks/{task_id}/check-correction/",
        {
            "correction_content": "Done.",
            "correction_tool_calls": '[{"name": "teleport", "arguments": {"to": "moon"}}]',
        },
    )
    assert "unknown tool" not in check.content.decode()
    wrong_tool = leaves(project)[1]
    done = client.post(
        f"/p/sales/tasks/{task_id}/submit/",
        {
            "verdict": "unreasonable",
            "categories": [wrong_tool.pk],
            "correction_content": "Done.",
            "correction_tool_calls": '[{"name": "teleport", "arguments": {"to": "moon"}}]',
        },
    )
    assert done.status_code == 302
    label = Label.objects.get(annotator=members["annotator"])
    assert label.status == Status.SUBMITTED and not hasattr(label, "correction")
    # a changed editor is a correction and is checked against the tools
    assert (
        client.post(
            f"/p/sales/tasks/{task_id}/check-correction/",
            {"correction_tool_calls": '[{"name": "teleport", "arguments": {"to": "mars"}}]'},
        )
        .content.decode()
        .count("unknown tool")
        == 1
    )


def test_an_empty_queue_points_to_the_history(client, project, members):
    client.force_login(members["annotator"])
    page = client.get("/p/sales/next/?kind=compare")
    html = page.content.decode()
    assert page.status_code == 200 and "Your comparison queue is empty" in html
    assert 'href="/p/sales/history/"' in html and 'href="/p/sales/next/"' in html


def test_a_review_of_work_changed_since_the_lead_saw_it_is_refused(client, api, queue, members, project):
    """The annotator may change submitted work until it is reviewed: a lead's review names the version it
    saw (`seen`), and a review of a version the lead never saw is refused with 409 on the page and API."""
    ann, lead = members["annotator"], members["lead"]
    client.force_login(ann)
    task_id = take(client)
    cat = leaves(project)[0]
    form = {"verdict": "unreasonable", "categories": [cat.pk], "expected_status": "draft", "note": "v1"}
    assert client.post(f"/p/sales/tasks/{task_id}/submit/", form).status_code == 302
    label = Label.objects.get(annotator=ann)
    client.force_login(lead)
    stream = client.get("/p/sales/review/").content.decode()
    seen = stream.split('name="seen" value="', 1)[1].split('"', 1)[0]
    assert seen  # the version the lead is looking at

    client.force_login(ann)  # the annotator changes it meanwhile
    form.update(expected_status="submitted", note="v2")
    assert client.post(f"/p/sales/tasks/{task_id}/submit/", form).status_code == 302

    client.force_login(lead)
    stale = client.post(
        f"/p/sales/review/label/{label.pk}/", {"decision": "approve", "seen": seen, "stream": "1"}
    )
    label.refresh_from_db()
    assert label.status == Status.SUBMITTED and not Review.objects.filter(label=label).exists()
    assert stale.status_code == 302  # back to the item, with the reason
    shown = client.get(stale["Location"]).content.decode()
    assert "changed this item after you opened it" in shown and "v2" in shown

    api = api(lead)
    refused = api.post(
        "/api/reviews/", {"label": label.pk, "decision": "approve", "seen": seen}, format="json"
    )
    assert refused.status_code == 409 and "seen" in refused.json()
    fresh = shown.split('name="seen" value="', 1)[1].split('"', 1)[0]
    assert fresh != seen
    ok = api.post("/api/reviews/", {"label": label.pk, "decision": "approve", "seen": fresh}, format="json")
    assert ok.status_code == 201
    label.refresh_from_db()
    assert label.status == Status.APPROVED


def test_history_names_the_model_of_each_labelled_response_at_a_constant_cost(client, project, members):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    conv, (first,) = make_conversation(project, 1, n_responses=1)
    versions = [ModelVersion.objects.create(project=project, name=f"other-v{i}") for i in range(4)]

    def answer(mv, k):
        msg = {"role": "assistant", "content": f"Answer {k} of {mv.name}."}
        return ModelResponse.objects.create(
            conversation=conv,
            model_version=mv,
            context_length=1,
            message=msg,
            response_hash=content_hash(msg),
        )

    ann = members["annotator"]
    client.force_login(ann)
    Label.objects.create(response=first, annotator=ann, verdict="reasonable", status=Status.SUBMITTED)
    Label.objects.create(
        response=answer(versions[0], 0), annotator=ann, verdict="unreasonable", status=Status.SUBMITTED
    )
    assignment.sync_tasks(project)

    def page():
        with CaptureQueriesContext(connection) as ctx:
            html = client.get("/p/sales/history/").content.decode()
        return html, len(ctx.captured_queries)

    html, few = page()
    rows = re.findall(r'<tr data-kind="label".*?</tr>', html, re.S)
    assert len(rows) == 2 and all("conv-1" in r for r in rows)  # one conversation twice ...
    assert sorted(re.search(r'model-name"[^>]*>([^<]+)<', r).group(1) for r in rows) == [
        "agent-v1",
        "other-v0",
    ]  # ... told apart by the model that answered
    for k, mv in enumerate(versions[1:], start=1):
        Label.objects.create(
            response=answer(mv, k), annotator=ann, verdict="reasonable", status=Status.SUBMITTED
        )
    html, more = page()
    assert html.count('<tr data-kind="label"') == 5 and more == few
