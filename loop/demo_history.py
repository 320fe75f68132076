"""The demo project's past: scripted annotators who labelled and compared its items over the last three
weeks, and a lead who reviewed their work and recorded gold decisions.

Everything goes through the product's own services — the queue hands out the items (next_task), labels and
comparisons are submitted (submit_label, submit_preference), reviewed (apply_review) and decided
(adjudicate) — so every rule applies as it does for people. Afterwards the rows are moved back in time (the
services stamp "now") and the dashboard roll-ups are rebuilt from them.

What a newcomer finds afterwards: most items still waiting in the queue, `annotator` with a few submitted
labels to reopen, a review stream with recent work in it, and open disagreements.

The careful annotator's rules (judge, human_score) are shared with `manage.py demo_loop`.
"""

import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotator import assignment
from annotator.labelling import submit_label, submit_preference
from annotator.models import (
    Adjudication,
    Conversation,
    Correction,
    ImportJob,
    Label,
    Membership,
    ModelResponse,
    Preference,
    Project,
    Review,
    Role,
    Task,
    TaxonomyCategory,
)
from annotator.review import adjudicate, apply_review
from annotator.rollups.signals import batched
from annotator.rollups.store import rebuild
from toolcalls.openai_format import stored_assistant_message
from toolcalls.score import score_case

# --- a careful annotator's rules (also used by manage.py demo_loop) ----------------------------

# failure -> default taxonomy category
CATEGORY_FOR = {
    "missed_call": "Tool not called",
    "false_call": "Unneeded tool call",
    "wrong_name": "Wrong tool",
    "wrong_args": "Wrong arguments",
    "fabricated_tool_result": "Fabricated tool result",
    "malformed_call": "Malformed tool call",
    "too_short": "Too short",
    "end_repetition": "Repetition",
    "think_tags": "Think-tag or format defect",
    "template_leak": "Think-tag or format defect",
}


def judge(expected: dict, raw: str, tools: list) -> tuple[bool, list[str]]:
    """What a careful annotator decides: reasonable only if strictly right and free of defects."""
    s = score_case(expected, raw, tools)
    failures = [d for d, v in s["defects"].items() if v]
    if s["false_call"]:
        failures.append("false_call")
    if s["missed_call"]:
        failures.append("missed_call")
    if s["tool_name_accuracy"] == 0:
        failures.append("wrong_name")
    elif s["tool_args_accuracy"] == 0 and "malformed_call" not in failures:
        failures.append("wrong_args")
    if s["facts_right"] == 0:  # an outdated or wrong fact (e.g. the old policy): a knowledge fix
        failures.append("wrong_fact")
    ok = s["tool_call_accuracy"] == 1 and s["response_quality"] == 1 and s["facts_right"] != 0
    return ok, sorted({CATEGORY_FOR.get(f, "Hallucinated fact") for f in failures}) if failures else (
        [] if ok else ["Hallucinated fact"]
    )


def human_score(expected: dict, raw: str, tools: list) -> int:
    """How a careful annotator ranks two answers: right call first, then the right tool at least, then
    a clean answer (0-4; equal scores are a tie, or "both bad" when neither is right)."""
    s = score_case(expected, raw, tools)
    right = s["tool_call_accuracy"] or 0
    # no call made: the tool name is right exactly when no call was due (a right answer scores 4, a tie)
    name = s["tool_name_accuracy"] if s["tool_name_accuracy"] is not None else right
    stale = 2 if s["facts_right"] == 0 else 0  # an outdated fact (the old policy) is a wrong answer
    return max(0, 2 * right + name + (s["response_quality"] or 0) - stale)


def correction_fields(expected: dict) -> dict:
    """The right answer as the correction editor's two fields."""
    fixed = stored_assistant_message(expected)
    return {
        "correction_content": fixed.get("content") or "",
        "correction_tool_calls": json.dumps(
            [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                for c in fixed.get("tool_calls", [])
            ]
        ),
    }


# --- who worked on the demo project ------------------------------------------------------------


@dataclass(frozen=True)
class Scripted:
    """A scripted annotator: how often they get a verdict (or a choice) wrong, how often they pick a
    neighbouring category, their median seconds per item, and when they work."""

    username: str
    name: str
    error_rate: float
    category_slip: float
    seconds: float
    joined_days_ago: int
    day_off: float  # chance of not labelling on a working day
    per_day: tuple[int, int]  # items on a day they label (least, most)


SCRIPTED = (
    Scripted("maria", "Maria", 0.04, 0.05, 34, 21, 0.1, (18, 34)),
    Scripted("tomas", "Tomás", 0.15, 0.18, 78, 21, 0.35, (10, 22)),
    Scripted("li", "Li", 0.08, 0.08, 50, 11, 0.1, (15, 28)),
)
SCRIPTED_NAMES = tuple(s.username for s in SCRIPTED)
DAYS = 21  # how far back the history starts
LABEL_SHARE = 0.45  # of the label slots (items x overlap) the scripted annotators fill
COMPARE_SHARE = 0.5  # of the compare slots
NEWCOMER_LABELS = 6  # the demo user `annotator`'s own submitted labels, not reviewed yet
OPEN_DISAGREEMENTS = 4  # the most recent disagreements wait for the lead's gold decision
SPOT_CHECKS = 4  # gold decisions on items both annotators agreed on

# a neighbouring category: what a hurried annotator picks instead
NEIGHBOUR = {
    "Wrong arguments": "Wrong tool",
    "Wrong tool": "Wrong arguments",
    "Tool not called": "Hallucinated fact",
    "Fabricated tool result": "Hallucinated fact",
    "Unneeded tool call": "Business flow error",
    "Too short": "Tone or persona",
    "Malformed tool call": "Think-tag or format defect",
}
FLIP = {"a": "b", "b": "a", "tie": "a", "both_bad": "tie"}


@dataclass
class Work:
    """One submitted label or comparison of the history, with when it happened and the truth."""

    obj: Label | Preference
    task: Task
    who: Scripted | None
    at: datetime
    spent_ms: int
    truth: dict
    right: bool
    events: list = field(default_factory=list)  # (review or adjudication, when)
    fixed_at: datetime | None = None  # resubmitted after the lead sent it back


def has_history(project: Project) -> bool:
    return Label.objects.filter(project=project, annotator__username__in=SCRIPTED_NAMES).exists()


def seed_history(project: Project, lead, newcomer=None, seed: int = 7, now: datetime | None = None) -> dict:
    """Three weeks of scripted work on `project`, once (nothing when it has happened). Returns counts."""
    if has_history(project):
        return {}
    now = now or timezone.now()
    rng = random.Random(seed)
    users = _scripted_users(project, now)
    assignment.sync_tasks(project)
    cats = dict(TaxonomyCategory.objects.filter(project=project).values_list("name", "pk"))
    label_tasks = Task.objects.filter(project=project, kind=Task.Kind.LABEL).count()
    compare_tasks = Task.objects.filter(project=project, kind=Task.Kind.COMPARE).count()
    targets = {
        Task.Kind.LABEL: round(LABEL_SHARE * label_tasks * project.overlap),
        Task.Kind.COMPARE: round(COMPARE_SHARE * compare_tasks * project.overlap),
    }
    start = now - timedelta(days=DAYS)
    # one roll-up pass for the whole history (the services' writes join this batch), then a rebuild from the
    # rows as moved back in time
    with transaction.atomic(), batched():
        work = _annotate(project, users, cats, targets, _timeline(rng, start, now), rng)
        _review(project, lead, work, cats, now, rng)
        mine = _newcomer(project, newcomer, cats, now, rng) if newcomer else []
        _move_in_time(project, work + mine, start)
    rebuild(project)
    labels = [w for w in work if isinstance(w.obj, Label)]
    return {
        "labels": len(labels),
        "comparisons": len(work) - len(labels),
        "reviews": Review.objects.filter(reviewer=lead).count(),
        "gold": Adjudication.objects.filter(task__project=project).count(),
        "newcomer_labels": len(mine),
    }


def _scripted_users(project, now) -> dict:
    User = get_user_model()
    users = {}
    for s in SCRIPTED:
        user, created = User.objects.get_or_create(username=s.username, defaults={"first_name": s.name})
        if created:
            user.set_unusable_password()  # scripted: nobody logs in as them
            user.save()
        member, _ = Membership.objects.get_or_create(
            user=user, project=project, defaults={"role": Role.ANNOTATOR}
        )
        Membership.objects.filter(pk=member.pk).update(
            created_at=now - timedelta(days=s.joined_days_ago, hours=2)
        )
        users[s.username] = user
    return users


def _timeline(rng, start, end) -> list[tuple[datetime, Scripted, int]]:
    """When each scripted annotator labelled: working days since they joined, one sitting a day from about
    9:00, an item every `seconds` or so (log-normal), a short pause between items. Sorted by time."""
    tz = timezone.get_default_timezone()
    out = []
    for s in SCRIPTED:
        day = timezone.localtime(max(start, end - timedelta(days=s.joined_days_ago)), tz).date()
        last = timezone.localtime(end, tz).date()
        while day <= last:
            if day.weekday() < 5 and rng.random() >= s.day_off:
                t = datetime.combine(day, time(9), tzinfo=tz) + timedelta(minutes=rng.uniform(0, 150))
                for _ in range(rng.randint(*s.per_day)):
                    spent = int(1000 * min(1500, rng.lognormvariate(math.log(s.seconds), 0.5)))
                    t += timedelta(milliseconds=spent)
                    if t >= end - timedelta(hours=2):
                        break
                    out.append((t, s, spent))
                    t += timedelta(seconds=rng.uniform(3, 40))
            day += timedelta(days=1)
    out.sort(key=lambda e: e[0])
    return out


def _thin(events: list, n: int) -> list:
    """n events spread evenly over the whole list (the history keeps its three weeks, whatever its size)."""
    if len(events) <= n:
        return events
    return [events[math.floor(i * len(events) / n)] for i in range(n)]


def _annotate(project, users, cats, targets, timeline, rng) -> list[Work]:
    """The scripted annotators take their next item from the real queue, in time order, and submit."""
    total = sum(targets.values())
    left = dict(targets)
    work = []
    for at, who, spent in _thin(timeline, total):
        user = users[who.username]
        compare_share = left[Task.Kind.COMPARE] / max(1, sum(left.values()))
        kinds = (
            [Task.Kind.COMPARE, Task.Kind.LABEL]
            if rng.random() < compare_share
            else [Task.Kind.LABEL, Task.Kind.COMPARE]
        )
        for kind in kinds:
            if left[kind] <= 0:
                continue
            slot = assignment.next_task(project, user, kind)
            if slot is None:
                continue
            task = Task.objects.select_related("response__conversation", "response_b").get(pk=slot.task_id)
            if kind == Task.Kind.LABEL:
                data, truth, right = _label_data(task, who, cats, rng)
                obj = submit_label(task, user, {**data, "time_spent_ms": spent})
            else:
                data, truth, right = _compare_data(task, who, rng)
                obj = submit_preference(task, user, {**data, "time_spent_ms": spent})
            work.append(Work(obj, task, who, at, spent, truth, right))
            left[kind] -= 1
            break
    return work


def _truth_of_label(task) -> dict:
    conv = task.response.conversation
    ok, categories = judge(conv.metadata["expected"], task.response.raw_text, conv.tools)
    return {
        "verdict": Label.Verdict.REASONABLE if ok else Label.Verdict.UNREASONABLE,
        "categories": categories,
    }


def _label_data(task, who: Scripted | None, cats, rng) -> tuple[dict, dict, bool]:
    """What this annotator submits for a label task: the truth, unless they slip."""
    truth = _truth_of_label(task)
    reasonable = truth["verdict"] == Label.Verdict.REASONABLE
    if who is not None and rng.random() < who.error_rate:
        reasonable = not reasonable
    if reasonable:
        data = {"verdict": Label.Verdict.REASONABLE}
    else:
        chosen = truth["categories"] or [rng.choice(["Hallucinated fact", "Tone or persona"])]
        if who is not None and rng.random() < who.category_slip:
            chosen = [NEIGHBOUR.get(chosen[0], chosen[0]), *chosen[1:]]
        data = {
            "verdict": Label.Verdict.UNREASONABLE,
            "categories": [cats[c] for c in chosen if c in cats],
            **correction_fields(task.response.conversation.metadata["expected"]),
        }
        if chosen[0] in NOTES and rng.random() < 0.25:
            data["note"] = NOTES[chosen[0]]
    right = data["verdict"] == truth["verdict"] and (
        reasonable or sorted(chosen) == sorted(truth["categories"])
    )
    return data, truth, right


NOTES = {  # what an annotator sometimes adds to a category
    "Tool not called": "The shopper asked for something live; the agent answered from memory.",
    "Wrong arguments": "Arguments must match the spec exactly: SKU casing, whole-number quantities.",
    "Fabricated tool result": "It wrote the tool's answer itself instead of calling the tool.",
    "Unneeded tool call": "A policy question: no tool was needed.",
    "Wrong tool": "The call goes to the wrong tool for what the shopper asked.",
    "Too short": "Nothing the shopper can use.",
}


def _compare_data(task, who: Scripted | None, rng) -> tuple[dict, dict, bool]:
    conv = task.response.conversation
    expected = conv.metadata["expected"]
    # the guidelines: a response is only "better" when it is right; two wrong ones are both bad (a DPO pair
    # never teaches a call that breaks the tool's schema)
    a_right, _ = judge(expected, task.response.raw_text, conv.tools)
    b_right, _ = judge(expected, task.response_b.raw_text, conv.tools)
    truth = {(True, False): "a", (False, True): "b", (True, True): "tie"}.get((a_right, b_right), "both_bad")
    choice = truth
    if who is not None and rng.random() < 1.5 * who.error_rate:
        choice = FLIP[truth]
    return (
        {"choice": choice, "reason": _reason(choice, task), "left_side": rng.choice("ab")},
        {"choice": truth},
        choice == truth,
    )


def _reason(choice: str, task) -> str:
    conv = task.response.conversation
    expected = conv.metadata["expected"]
    if choice in ("a", "b"):
        loser = task.response_b if choice == "a" else task.response
        _, wrong = judge(expected, loser.raw_text, conv.tools)
        return f"{choice.upper()} is right; the other one: {', '.join(wrong).lower() or 'less complete'}."
    return "Both answer correctly." if choice == "tie" else "Neither makes the right call."


# --- the lead --------------------------------------------------------------------------------


def _review(project, lead, work: list[Work], cats, now, rng):
    """The lead reviews all but the most recent work, settles older disagreements with a gold decision, and
    sends back most of the mistakes; the annotators fix most of what came back."""
    labels = [w for w in work if isinstance(w.obj, Label)]
    prefs = [w for w in work if isinstance(w.obj, Preference)]
    tail = min(14, max(3, len(labels) // 20))
    waiting = {id(w) for w in sorted(labels, key=lambda w: w.at)[-tail:]}
    waiting |= {id(w) for w in sorted(prefs, key=lambda w: w.at)[-max(2, tail // 4) :]}

    def by_item(items, key):
        groups = {}
        for w in items:
            groups.setdefault(key(w), []).append(w)
        return groups

    label_items = by_item(labels, lambda w: w.task.pk)
    split = [g for g in label_items.values() if len({w.obj.verdict for w in g}) > 1]
    split.sort(key=lambda g: max(w.at for w in g))
    for group in split[-OPEN_DISAGREEMENTS:]:  # open: both wait for a gold decision
        waiting |= {id(w) for w in group}
    decided = split[:-OPEN_DISAGREEMENTS] if len(split) > OPEN_DISAGREEMENTS else []
    agreed = [g for g in label_items.values() if len(g) == 2 and len({w.obj.verdict for w in g}) == 1]
    gold = set()
    for group in decided + rng.sample(agreed, min(SPOT_CHECKS, len(agreed))):
        gold.add(group[0].task.pk)
        truth = group[0].truth
        at = _after(max(w.at for w in group), now, rng)
        adj = adjudicate(
            lead,
            group[0].task,
            verdict=truth["verdict"],
            categories=[cats[c] for c in truth["categories"] if c in cats]
            if truth["verdict"] == Label.Verdict.UNREASONABLE
            else [],
            note="Checked against the tool specs." if len(group) == 2 else "",
        )
        group[0].events.append((adj, at))
    pref_items = by_item(prefs, lambda w: w.task.pk)
    for group in pref_items.values():
        if len({w.obj.choice for w in group}) > 1 and not any(id(w) in waiting for w in group):
            gold.add(group[0].task.pk)
            adj = adjudicate(lead, group[0].task, choice=group[0].truth["choice"])
            group[0].events.append((adj, _after(max(w.at for w in group), now, rng)))

    for w in sorted(work, key=lambda w: w.at):
        if id(w) in waiting:
            continue
        at = _after(w.at, now, rng)
        missed = w.task.pk not in gold and rng.random() < 0.25  # without gold, a quarter slip through
        if w.right or missed:
            w.events.append((apply_review(lead, w.obj, "approve"), at))
            continue
        w.events.append((apply_review(lead, w.obj, "reject", _reject_comment(w)), at))
        if rng.random() < 0.8 and at < now - timedelta(hours=3):  # the annotator fixes it
            w.fixed_at = _after(at, now - timedelta(hours=2), rng, hours=(1, 20))
            user = w.obj.annotator
            if isinstance(w.obj, Label):
                data, _, _ = _label_data(w.task, None, cats, rng)
                w.obj = submit_label(w.task, user, data)
            else:
                data, _, _ = _compare_data(w.task, None, rng)
                w.obj = submit_preference(w.task, user, data)
            if w.fixed_at < now - timedelta(hours=6):
                w.events.append((apply_review(lead, w.obj, "approve"), _after(w.fixed_at, now, rng)))


def _after(t: datetime, now: datetime, rng, hours=(2, 30)) -> datetime:
    """Some hours after t, in working hours (a night or a weekend waits for the next morning), never in the
    future."""
    later = timezone.localtime(t + timedelta(hours=rng.uniform(*hours)))
    if later.weekday() >= 5 or not 8 <= later.hour < 18:
        day = later.date() + timedelta(days=1 if later.hour >= 8 else 0)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        later = datetime.combine(day, time(9), tzinfo=later.tzinfo) + timedelta(minutes=rng.uniform(0, 120))
    return min(later, now - timedelta(minutes=rng.uniform(20, 90)))


def _reject_comment(w: Work) -> str:
    if isinstance(w.obj, Preference):
        choice = w.truth["choice"]
        return f"Look again: {_reason(choice, w.task)}"
    truth = w.truth
    if truth["verdict"] == Label.Verdict.UNREASONABLE and w.obj.verdict == Label.Verdict.REASONABLE:
        wrong = ", ".join(truth["categories"]).lower()
        return f"Not reasonable: {wrong}. Check the tool call against the guidelines."
    if truth["verdict"] == Label.Verdict.REASONABLE:
        return "This answer is right as given: the call matches what the shopper asked. Mark it reasonable."
    return f"Right verdict, but the category is {', '.join(truth['categories'])}."


# --- the newcomer and the clock ------------------------------------------------------------------


def _newcomer(project, user, cats, now, rng) -> list[Work]:
    """`annotator` has started this morning: a few careful labels, submitted, not reviewed yet."""
    work = []
    at = now - timedelta(minutes=95)
    for _ in range(NEWCOMER_LABELS):
        slot = assignment.next_task(project, user, Task.Kind.LABEL)
        if slot is None:
            break
        task = Task.objects.select_related("response__conversation").get(pk=slot.task_id)
        spent = int(1000 * rng.uniform(60, 150))
        data, truth, right = _label_data(task, None, cats, rng)
        at += timedelta(milliseconds=spent, seconds=rng.uniform(5, 60))
        work.append(
            Work(
                submit_label(task, user, {**data, "time_spent_ms": spent}),
                task,
                None,
                at,
                spent,
                truth,
                right,
            )
        )
    return work


def _move_in_time(project, work: list[Work], start):
    """The services stamped everything "now": put each row at the time the history says."""
    labels, prefs, reviews, adjudications, corrections = [], [], [], [], []
    for w in work:
        obj = w.obj
        obj.created_at = w.at - timedelta(milliseconds=w.spent_ms)
        obj.submitted_at = w.fixed_at or w.at
        obj.updated_at = max([obj.submitted_at] + [t for _, t in w.events])
        (labels if isinstance(obj, Label) else prefs).append(obj)
        if isinstance(obj, Label):
            corrections.append((obj.pk, obj.submitted_at))
        for event, t in w.events:
            event.created_at = t
            if isinstance(event, Review):
                reviews.append(event)
            else:
                event.updated_at = t
                adjudications.append(event)
    Label.objects.bulk_update(labels, ["created_at", "submitted_at", "updated_at"], batch_size=500)
    Preference.objects.bulk_update(prefs, ["created_at", "submitted_at", "updated_at"], batch_size=500)
    Review.objects.bulk_update(reviews, ["created_at"], batch_size=500)
    Adjudication.objects.bulk_update(adjudications, ["created_at", "updated_at"], batch_size=500)
    fixes = list(Correction.objects.filter(label_id__in=[pk for pk, _ in corrections]))
    when = dict(corrections)
    for c in fixes:
        c.created_at = c.updated_at = when[c.label_id]
    Correction.objects.bulk_update(fixes, ["created_at", "updated_at"], batch_size=500)
    imported = start - timedelta(days=2)
    Conversation.objects.filter(project=project).update(created_at=imported)
    ModelResponse.objects.filter(conversation__project=project).update(created_at=imported)
    ImportJob.objects.filter(project=project).update(
        created_at=imported, started_at=imported, finished_at=imported + timedelta(seconds=20)
    )
    Task.objects.filter(project=project).update(created_at=imported)
