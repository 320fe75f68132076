"""Judge suggestions on comparison and labelling tasks (leads only), and the queue priority they raise."""

from __future__ import annotations

from collections import Counter

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q

from annotator.models import Label, ModelResponse, Preference, Slot, Status, Task

from ..models import JudgeSuggestion, JudgeVerdictSuggestion
from .judges import UNSURE, X, Y, judge_pairs, load_judge

DISAGREE_BOOST = 20
UNSURE_BOOST = 10


def _context_of(response) -> tuple[list, list]:
    conv = response.conversation
    return conv.messages[: response.context_length], conv.tools or response.conversation.project.tools


def _majority(choices: list[str]) -> str:
    wins = Counter(c for c in choices if c in ("a", "b"))
    if not wins:
        return ""
    (top, k), *rest = wins.most_common()
    return "" if rest and rest[0][1] == k else top


def suggest(project, judge_version, limit: int = 2000, judge=None) -> dict:
    """Judge open and labelled comparison tasks that have no suggestion from this judge yet (the
    symmetric verdict: A, B, or unsure when the two orders do not agree beyond the judge's margin), then
    raise the queue priority of the ones where the judge disagrees with the humans (first) or is
    unsure, so that the next annotator's vote goes where it settles most. Labelling tasks get the
    same through suggest_verdicts (their counts under "responses_*")."""
    loaded = []

    def the_judge():  # loaded once, and only when there is something to judge
        if not loaded:
            loaded.append(judge or load_judge(judge_version))
        return loaded[0]

    done = JudgeSuggestion.objects.filter(
        judge=judge_version, response_a=OuterRef("response_id"), response_b=OuterRef("response_b_id")
    )
    tasks = list(
        Task.objects.filter(project=project, kind=Task.Kind.COMPARE)
        .exclude(Exists(done))
        .select_related("response__conversation__project", "response_b")
        .order_by("id")[:limit]
    )
    out = {"judged": 0, "disagree": 0, "unsure": 0}
    if tasks:
        items = []
        for t in tasks:
            context, tools = _context_of(t.response)
            items.append(
                (
                    context,
                    tools,
                    t.response.message or t.response.raw_text,
                    t.response_b.message or t.response_b.raw_text,
                )
            )
        verdicts = judge_pairs(the_judge(), items)
        humans: dict[tuple[int, int], list[str]] = {}
        for a, b, choice in Preference.objects.filter(
            response_a_id__in=[t.response_id for t in tasks] + [t.response_b_id for t in tasks],
            status__in=[Status.SUBMITTED, Status.APPROVED],
        ).values_list("response_a_id", "response_b_id", "choice"):
            humans.setdefault((a, b), []).append(choice)
            humans.setdefault((b, a), []).append({"a": "b", "b": "a"}.get(choice, choice))
        disagree, unsure, rows = [], [], []
        for t, v in zip(tasks, verdicts, strict=True):
            human = _majority(humans.get((t.response_id, t.response_b_id), []))
            verdict = {X: "a", Y: "b", UNSURE: ""}[v.verdict]
            differs = bool(human and verdict) and human != verdict
            rows.append(
                JudgeSuggestion(
                    project=project,
                    judge=judge_version,
                    response_a_id=t.response_id,
                    response_b_id=t.response_b_id,
                    prob_a=round(v.prob, 6),
                    verdict=verdict,
                    position_consistent=v.consistent,
                    reason=v.reason,
                    human_choice=human,
                    disagrees=differs,
                )
            )
            if differs:
                disagree.append(t.pk)
            elif not verdict:
                unsure.append(t.pk)
        _store(JudgeSuggestion, rows, disagree, unsure)
        out = {"judged": len(rows), "disagree": len(disagree), "unsure": len(unsure)}
    out.update(suggest_verdicts(project, judge_version, limit, the_judge))
    return out


def _store(model, rows, disagree: list[int], unsure: list[int]):
    """Save the suggestions and raise the priority of their tasks (and the tasks' slots) in one
    transaction."""
    with transaction.atomic():
        model.objects.bulk_create(rows, ignore_conflicts=True)
        for ids, boost in ((disagree, DISAGREE_BOOST), (unsure, UNSURE_BOOST)):
            if ids:
                Task.objects.filter(pk__in=ids).update(priority=F("priority") + boost)
                Slot.objects.filter(task_id__in=ids).update(priority=F("priority") + boost)


def references(contexts: set[tuple[int, int]]) -> tuple[dict, dict]:
    """For each context (conversation, context length): the responses the humans' majority found
    reasonable there, best-endorsed first ({context: [response id, ...]}), and every response's majority
    verdict ({response: "reasonable" | "unreasonable" | ""}) from submitted and approved labels."""
    good, bad = Label.Verdict.REASONABLE, Label.Verdict.UNREASONABLE
    ranked: dict[tuple[int, int], list[tuple]] = {}
    majority: dict[int, str] = {}
    rows = (
        Label.objects.filter(
            response__conversation_id__in={c for c, _ in contexts},
            status__in=[Status.SUBMITTED, Status.APPROVED],
        )
        .values("response_id", "response__conversation_id", "response__context_length")
        .annotate(
            good=Count("id", filter=Q(verdict=good)),
            bad=Count("id", filter=Q(verdict=bad)),
            approved=Count("id", filter=Q(verdict=good, status=Status.APPROVED)),
        )
        .order_by()
    )
    for row in rows:
        r = row["response_id"]
        majority[r] = good if row["good"] > row["bad"] else bad if row["bad"] > row["good"] else ""
        context = (row["response__conversation_id"], row["response__context_length"])
        if majority[r] == good and context in contexts:
            ranked.setdefault(context, []).append((-row["approved"], row["bad"] - row["good"], r))
    return {c: [r for *_, r in sorted(v)] for c, v in ranked.items()}, majority


def suggest_verdicts(project, judge_version, limit: int, the_judge) -> dict:
    """Judge labelling tasks' responses that have no suggestion from this judge yet, each against a known
    good answer in its context (see references; a response with none is left for later). The symmetric
    verdict decides: the response better suggests reasonable, the reference better unreasonable, an
    unsure judge suggests nothing. Disagreeing with the humans' majority verdict raises the task's
    priority by DISAGREE_BOOST, unsure by UNSURE_BOOST, as for comparisons."""
    done = JudgeVerdictSuggestion.objects.filter(judge=judge_version, response=OuterRef("response_id"))
    tasks = list(
        Task.objects.filter(project=project, kind=Task.Kind.LABEL)
        .exclude(Exists(done))
        .select_related("response__conversation__project")
        .order_by("id")[:limit]
    )
    ranked, majority = (
        references({(t.response.conversation_id, t.response.context_length) for t in tasks})
        if tasks
        else ({}, {})
    )
    picked = []
    for t in tasks:
        best = [
            r
            for r in ranked.get((t.response.conversation_id, t.response.context_length), [])
            if r != t.response_id
        ]
        if best:
            picked.append((t, best[0]))
    out = {
        "responses_judged": 0,
        "responses_disagree": 0,
        "responses_unsure": 0,
        "responses_without_reference": len(tasks) - len(picked),
    }
    if not picked:
        return out
    refs = ModelResponse.objects.in_bulk([ref for _, ref in picked])
    items = []
    for t, ref in picked:
        context, tools = _context_of(t.response)
        items.append(
            (
                context,
                tools,
                t.response.message or t.response.raw_text,
                refs[ref].message or refs[ref].raw_text,
            )
        )
    verdicts = judge_pairs(the_judge(), items)
    rows, disagree, unsure = [], [], []
    for (t, ref), v in zip(picked, verdicts, strict=True):
        suggested = {
            X: JudgeVerdictSuggestion.Suggested.REASONABLE,
            Y: JudgeVerdictSuggestion.Suggested.UNREASONABLE,
            UNSURE: JudgeVerdictSuggestion.Suggested.UNSURE,
        }[v.verdict]
        human = majority.get(t.response_id, "")
        differs = bool(suggested and human) and suggested != human
        rows.append(
            JudgeVerdictSuggestion(
                project=project,
                judge=judge_version,
                response_id=t.response_id,
                reference_id=ref,
                prob_better=round(v.prob, 6),
                position_consistent=v.consistent,
                reason=v.reason,
                suggested=suggested,
                human_verdict=human,
                disagrees=differs,
            )
        )
        if differs:
            disagree.append(t.pk)
        elif not suggested:
            unsure.append(t.pk)
    _store(JudgeVerdictSuggestion, rows, disagree, unsure)
    out.update(responses_judged=len(rows), responses_disagree=len(disagree), responses_unsure=len(unsure))
    return out


def verdict_suggestions_for(project, response_ids) -> dict[int, object]:
    """The newest verdict suggestion per response (any judge)."""
    out: dict[int, object] = {}
    for s in (
        JudgeVerdictSuggestion.objects.filter(project=project, response_id__in=list(response_ids))
        .select_related("judge")
        .order_by("-id")
    ):
        out.setdefault(s.response_id, s)
    return out


def suggestions_for(project, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], object]:
    """The newest suggestion per (response_a, response_b), in either order, oriented to the asked order."""
    if not pairs:
        return {}
    q = Q()
    for a, b in pairs:
        q |= Q(response_a_id=a, response_b_id=b) | Q(response_a_id=b, response_b_id=a)
    out: dict = {}
    for s in JudgeSuggestion.objects.filter(q, project=project).select_related("judge").order_by("-id"):
        key = (s.response_a_id, s.response_b_id)
        if key in out or (key[::-1] in out):
            continue
        if key in pairs:
            out[key] = s
        else:  # stored the other way round: the mirror verdict for the caller
            s.prob_a, s.response_a_id, s.response_b_id = 1 - s.prob_a, s.response_b_id, s.response_a_id
            s.verdict = {"a": "b", "b": "a"}.get(s.verdict, s.verdict)
            out[key[::-1]] = s
    return out
