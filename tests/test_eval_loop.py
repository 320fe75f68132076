"""Close the loop: failed or regressed cases become badcases in the annotator queue, exactly once."""

import pytest
from django.core.exceptions import ValidationError

from annotator.models import Conversation, ModelResponse, Split, Task, content_hash
from evaluation import loop, suites
from evaluation.models import EvalBadcase

from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db


def counts(project):
    return (
        Conversation.objects.filter(project=project).count(),
        ModelResponse.objects.filter(conversation__project=project).count(),
        Task.objects.filter(project=project, kind="label").count(),
        Task.objects.filter(project=project, kind="compare").count(),
    )


def test_failed_cases_are_sent_once_with_the_models_response(project, members):
    suite = make_suite(project, 8)
    mv = model(project, "agent-v2")
    run = crafted_run(project, suite, mv, right={1, 2, 3, 5, 6})  # 4, 7, 8 fail
    out = loop.send_to_queue(run, members["admin"])
    assert out == {"sent": 3, "already": 0, "responses": 3, "label_tasks": 3, "compare_tasks": 0}
    conv = Conversation.objects.get(external_id="eval:case-7")
    assert conv.split == Split.EVAL and conv.priority == loop.DEFAULT_PRIORITY
    assert conv.messages == suite.cases.get(position=7).messages and conv.metadata["eval_case"] == "case-7"
    response = conv.responses.get()
    assert response.model_version == mv and response.context_length == len(conv.messages)
    assert response.raw_text == run.results.get(case__position=7).output
    assert response.message["tool_calls"][0]["function"]["name"] == "check_inventory"  # parsed like an import
    assert Task.objects.get(response=response).priority == loop.DEFAULT_PRIORITY

    before = counts(project)
    again = loop.send_to_queue(run, members["admin"])
    assert again["sent"] == 0 and again["already"] == 3 and counts(project) == before
    assert EvalBadcase.objects.filter(run=run).count() == 3


def test_the_same_failure_of_another_run_adds_nothing_and_another_model_adds_a_pair(project):
    suite = make_suite(project, 4)
    v2, v3 = model(project, "v2"), model(project, "v3")
    first = crafted_run(project, suite, v2, right={1, 2, 3})
    loop.send_to_queue(first)
    rerun = crafted_run(project, suite, v2, right={1, 2, 3})  # same model, same output
    out = loop.send_to_queue(rerun)
    assert out["sent"] == 1 and out["responses"] == 0  # recorded for the run, no duplicate response
    assert ModelResponse.objects.count() == 1
    other = crafted_run(
        project, suite, v3, right={1, 2, 3}, overrides={4: "OK."}
    )  # fails differently: too short
    out = loop.send_to_queue(other)
    assert out["responses"] == 1 and out["compare_tasks"] == 1  # two models on one context: a pair to compare
    assert Conversation.objects.filter(external_id="eval:case-4").count() == 1


def test_regressions_against_a_baseline(project):
    suite = make_suite(project, 6)
    base = crafted_run(project, suite, model(project, "base"), right={1, 2, 3, 4})
    new = crafted_run(project, suite, model(project, "new"), right={1, 2, 5, 6})
    assert sorted(r.case.position for r in loop.candidates(new, "regressed", base)) == [3, 4]
    out = loop.send_to_queue(new, scope="regressed", baseline=base, split=Split.TRAIN, priority=50)
    assert out["sent"] == 2
    badcase = EvalBadcase.objects.filter(run=new).first()
    assert badcase.reason == "regressed" and badcase.baseline_run == base
    assert badcase.response.conversation.split == Split.TRAIN and badcase.response.conversation.priority == 50
    with pytest.raises(ValidationError):
        loop.send_to_queue(new, scope="regressed")  # no baseline


def test_a_case_cut_from_a_conversation_answers_that_conversation(project):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"}]
    conv = Conversation.objects.create(
        project=project,
        external_id="h-1",
        messages=msgs,
        tools=project.tools,
        content_hash=content_hash(msgs, project.tools),
        split=Split.HOLDOUT,
    )
    suite, _ = suites.suite_from_conversations(project, "held-out")
    run = crafted_run(project, suite, model(project, "v1"), right=set())
    loop.send_to_queue(run)
    response = ModelResponse.objects.get()
    assert response.conversation == conv and response.context_length == 1
    assert Conversation.objects.count() == 1


def test_the_api_action_needs_the_admin_role(project, members, api):
    suite = make_suite(project, 3)
    run = crafted_run(project, suite, model(project, "v1"), right={1})
    url = f"/api/eval-runs/{run.pk}/send-to-queue/"
    assert api(members["lead"]).post(url, {}, format="json").status_code == 403
    res = api(members["admin"]).post(url, {"scope": "failed"}, format="json")
    assert res.status_code == 200 and res.json()["sent"] == 2
    assert api(members["admin"]).post(url, {}, format="json").json() == {
        "sent": 0,
        "already": 2,
        "responses": 0,
        "label_tasks": 0,
        "compare_tasks": 0,
    }
