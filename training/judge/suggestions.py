"""The pairwise judge: "given this context, is answer A or answer B better?"

Read top to bottom: how a pair is put to a judge (one prompt format for training and
inference), the training rows built from a DPO snapshot of human preferences (both orders
of each pair, so position bias can be measured), the verdict of a local judge (the log
probability of completing "A" vs "B", in both orders) or of an external OpenAI-compatible
endpoint, the judge's evaluation against held-out human pairs beside the human ceiling,
and the suggestions leads see on comparison tasks (which also reorder the queue).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from inference.client import ChatClient, message_to_text

JUDGE_SYSTEM = ("You compare two answers of an assistant that can call tools. The better answer calls the right "
                "tool with the right arguments when a tool is needed, answers directly when none is, and never "
                "invents tool results. Reply with the letter of the better answer.")
QUESTION = "Which answer is better, A or B?"
VERDICT_PREFIX = "Verdict: "
HELD_OUT_SHARE = 0.2
MAX_PROMPT_CHARS = 3000


# --- the prompt -----------------------------------------------------------------------------

def answer_text(message) -> str:
    """An assistant message (OpenAI format, or a list holding one) as the raw text a model writes."""
    if isinstance(message, list):
        message = next((m for m in reversed(message) if m.get("role") == "assistant"), message[-1] if message else {})
    if isinstance(message, str):
        return message
    return message_to_text(message or {})


def _turn(m: dict) -> str:
    role = m.get("role", "?")
    if role == "assistant":
        return f"assistant: {answer_text(m)}"
    content = m.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return f"{role}: {content or ''}"


def _tool_names(tools) -> list[str]:
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            tools = []
    names = []
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            names.append(str(fn["name"]))
    return names


def judge_prompt(context: list[dict], tools, first, second) -> list[dict]:
    """The judge's chat messages for one order of a pair (first is shown as A)."""
    turns = [_turn(m) for m in context if m.get("role") != "system"]
    body = "\n".join(turns)
    if len(body) > MAX_PROMPT_CHARS:  # keep the end of long contexts: the question being answered
        body = "…" + body[-MAX_PROMPT_CHARS:]
    names = ", ".join(_tool_names(tools)) or "none"
    text = (f"Tools: {names}\nConversation:\n{body}\n\n[A]\n{answer_text(first)}\n\n[B]\n{answer_text(second)}\n\n"
            f"{QUESTION}")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


def completion_text(letter: str, reason: str = "") -> str:
    reason = " ".join((reason or "").split())[:300]
    return f"{reason}\n{VERDICT_PREFIX}{letter}" if reason else letter


# --- training rows --------------------------------------------------------------------------

def _held_out(row: dict, share: float) -> bool:
    key = json.dumps(row.get("prompt"), sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") / 2**32 < share


def read_pairs(path: str) -> list[dict]:
    """DPO snapshot rows (trl_preference layout) as pairs: context, tools, chosen, rejected."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            tools = row.get("tools")
            pairs.append({"context": row["prompt"], "tools": json.loads(tools) if isinstance(tools, str) else tools,
                          "chosen": row["chosen"], "rejected": row["rejected"], "row": row,
                          "reason": row.get("reason") or ""})
    return pairs


def split_pairs(pairs: list[dict], share: float = HELD_OUT_SHARE) -> tuple[list[dict], list[dict]]:
    """A stable split by context: the same prompt is never on both sides."""
    train, held = [], []
    for p in pairs:
        (held if _held_out({"prompt": p["context"]}, share) else train).append(p)
    return train, held


def training_rows(pairs: list[dict], reasons: bool = False) -> list[dict]:
    """Prompt/completion rows for TRL's SFTTrainer: each pair in both orders."""
    rows = []
    for p in pairs:
        reason = p.get("reason", "") if reasons else ""
        rows.append({"prompt": judge_prompt(p["context"], p["tools"], p["chosen"], p["rejected"]),
                     "completion": [{"role": "assistant", "content": completion_text("A", reason)}]})
        rows.append({"prompt": judge_prompt(p["context"], p["tools"], p["rejected"], p["chosen"]),
                     "completion": [{"role": "assistant", "content": completion_text("B", reason)}]})
    return rows


# --- verdicts -------------------------------------------------------------------------------

@dataclass
class Verdict:
    prob_a: float  # P(the first-shown answer is better), this order only
    reason: str = ""


@dataclass
class PairVerdict:
    """Both orders of one pair. p_first: P(x better) with x shown as A; p_second: with x shown as B."""

    p_first: float
    p_second: float
    reason: str = ""

    @property
    def prob(self) -> float:
        """P(x is better), averaged over both orders (position bias cancels)."""
        return (self.p_first + self.p_second) / 2

    @property
    def consistent(self) -> bool:
        """The same answer wins whichever slot it is shown in."""
        return (self.p_first >= 0.5) == (self.p_second >= 0.5)


class LocalJudge:
    """A causal LM (base + adapters) read as a judge: compare log P("A") with log P("B")."""

    def __init__(self, version, device: str = "auto", batch_size: int = 16):
        from annotator.model_lineage import model_paths
        from inference.loading import load_model

        path, adapters = model_paths(version)
        self.loaded = load_model(path, adapters, device=device)
        self.tokenizer = self.loaded.tokenizer
        self.batch_size = batch_size
        self.reasons = bool((version.metadata or {}).get("judge_reasons"))
        self.name = version.name

    def _encode(self, messages: list[dict], completion: str) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(messages + [{"role": "assistant", "content": completion}], tokenize=False)
        suffix = full[len(prompt):] if full.startswith(prompt) else completion
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(suffix, add_special_tokens=False)["input_ids"]
        limit = (self.loaded.max_positions or 4096) - len(c_ids)
        return p_ids[-limit:], c_ids

    def _logprobs(self, items: list[tuple[list[int], list[int]]]) -> list[float]:
        """Sum of log P(completion tokens | prompt) for each (prompt ids, completion ids)."""
        import torch

        model = self.loaded.model
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                width = max(len(items[i][0]) + len(items[i][1]) for i in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    seq = items[i][0] + items[i][1]
                    ids[r, :len(seq)] = torch.tensor(seq)
                    mask[r, :len(seq)] = 1
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                for r, i in enumerate(rows):
                    p_len, c_len = len(items[i][0]), len(items[i][1])
                    targets = torch.tensor(items[i][1], device=logp.device)
                    positions = torch.arange(p_len - 1, p_len - 1 + c_len, device=logp.device)
                    out[i] = float(logp[r, positions, targets].sum())
        return out

    def _reasons(self, prompts: list[list[dict]]) -> list[str]:
        from inference.generation import generate

        gens = generate(self.loaded, [(m, None) for m in prompts], max_new_tokens=96, batch_size=self.batch_size)
        return [" ".join(g.text.split(VERDICT_PREFIX)[0].split())[:300] for g in gens]

    def verdicts(self, prompts: list[list[dict]]) -> list[Verdict]:
        reasons = self._reasons(prompts) if self.reasons else [""] * len(prompts)
        items = []
        for messages, reason in zip(prompts, reasons, strict=True):
            items.append(self._encode(messages, completion_text("A", reason)))
            items.append(self._encode(messages, completion_text("B", reason)))
        from inference.generation import threads_for

        with threads_for(self.loaded):
            lp = self._logprobs(items)
        out = []
        for k, reason in enumerate(reasons):
            a, b = lp[2 * k], lp[2 * k + 1]
            out.append(Verdict(prob_a=1 / (1 + math.exp(max(-50.0, min(50.0, b - a)))), reason=reason))
        return out


class EndpointJudge:
    """A judge behind an OpenAI-compatible chat endpoint: the last A or B of its reply is the verdict."""

    def __init__(self, version, client=None):
        meta = version.metadata or {}
        if client is None:
            if not meta.get("base_url"):
                raise ValueError(f"{version.name} has no endpoint: set metadata.base_url (and model)")
            client = ChatClient(meta["base_url"], meta.get("model") or version.name, api_key=version.api_key,
                                allowed_hosts=settings.MODEL_ENDPOINT_ALLOWED_HOSTS)
        self.client = client
        self.name = version.name

    def verdicts(self, prompts: list[list[dict]]) -> list[Verdict]:
        done = self.client.complete_many([(m, None) for m in prompts], max_tokens=128)
        out = []
        for c in done:
            letters = re.findall(r"\b([AB])\b", c.text or "")
            letter = letters[-1] if letters else None
            reason = (c.text or "").split(VERDICT_PREFIX)[0].strip()[:300] if letter else (c.error or c.text or "")[:300]
            out.append(Verdict(prob_a=0.5 if letter is None else (1.0 if letter == "A" else 0.0), reason=reason))
        return out


def load_judge(version, device: str = "auto"):
    from annotator.models import ModelVersion

    if version.origin == ModelVersion.Origin.EXTERNAL or (version.metadata or {}).get("base_url"):
        return EndpointJudge(version)
    return LocalJudge(version, device=device)


def judge_pairs(judge, pairs: list[tuple[list, list, object, object]]) -> list[PairVerdict]:
    """pairs: (context, tools, x, y). Each is judged in both orders; the result is about x."""
    prompts = []
    for context, tools, x, y in pairs:
        prompts.append(judge_prompt(context, tools, x, y))
        prompts.append(judge_prompt(context, tools, y, x))
    v = judge.verdicts(prompts) if prompts else []
    return [PairVerdict(p_first=v[2 * k].prob_a, p_second=1 - v[2 * k + 1].prob_a, reason=v[2 * k].reason)
            for k in range(len(pairs))]


# --- evaluation against held-out human pairs ------------------------------------------------

@dataclass
class Report:
    pairs: int = 0
    accuracy: float | None = None
    accuracy_se: float | None = None
    single_order_accuracy: float | None = None
    position_bias_rate: float | None = None
    first_position_rate: float | None = None
    ece: float | None = None
    brier: float | None = None
    bins: list = field(default_factory=list)


def score_verdicts(verdicts: list[PairVerdict], bins: int = 10) -> Report:
    """Judge figures where x (the argument judged) is the human winner of every pair.

    accuracy: the order-averaged P(winner) > 0.5 (a 0.5 tie counts half), with its binomial SE;
    single_order_accuracy: each order's verdict on its own (2n verdicts);
    position_bias_rate: share of pairs whose verdict flips when A and B swap;
    first_position_rate: share of the 2n verdicts that pick the first slot;
    ece / brier: calibration of the 2n single-order probabilities (10 equal-width confidence bins).
    """
    n = len(verdicts)
    if n == 0:
        return Report()
    hits = sum(1.0 if v.prob > 0.5 else 0.5 if v.prob == 0.5 else 0.0 for v in verdicts)
    acc = hits / n
    singles = [(v.p_first, True) for v in verdicts] + [(v.p_second, False) for v in verdicts]
    single_acc = sum(1 for p, _ in singles if p > 0.5) / (2 * n)
    flips = sum(1 for v in verdicts if not v.consistent) / n
    # the first slot is picked when x shown first wins (p_first >= .5) or when y shown first wins (p_second < .5)
    first = sum((1 if v.p_first >= 0.5 else 0) + (1 if v.p_second < 0.5 else 0) for v in verdicts) / (2 * n)
    table = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of confidence, correct
    brier = 0.0
    for p, _ in singles:
        conf = max(p, 1 - p)
        correct = 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5
        k = min(bins - 1, int((conf - 0.5) * 2 * bins)) if conf >= 0.5 else 0
        table[k][0] += 1
        table[k][1] += conf
        table[k][2] += correct
        brier += (1 - p) ** 2
    total = 2 * n
    ece = sum(abs(c[2] / c[0] - c[1] / c[0]) * c[0] / total for c in table if c[0])
    bin_rows = [{"low": round(0.5 + k / (2 * bins), 3), "high": round(0.5 + (k + 1) / (2 * bins), 3),
                 "count": c[0], "confidence": round(c[1] / c[0], 4) if c[0] else None,
                 "accuracy": round(c[2] / c[0], 4) if c[0] else None} for k, c in enumerate(table)]
    return Report(pairs=n, accuracy=acc, accuracy_se=math.sqrt(acc * (1 - acc) / n),
                  single_order_accuracy=single_acc, position_bias_rate=flips, first_position_rate=first,
                  ece=ece, brier=brier / total, bins=bin_rows)


def human_agreement(project) -> tuple[float | None, int]:
    """Annotator-vs-annotator agreement on the winner of the same pair (ties and "both bad" left out):
    over every pair with two or more such votes, the share of agreeing annotator pairs."""
    from annotator.models import Preference, Status

    votes: dict[frozenset, list[int]] = {}
    for a, b, choice in (Preference.objects.filter(response_a__conversation__project=project,
                                                   status__in=[Status.SUBMITTED, Status.APPROVED],
                                                   choice__in=["a", "b"])
                         .values_list("response_a_id", "response_b_id", "choice").iterator()):
        votes.setdefault(frozenset((a, b)), []).append(a if choice == "a" else b)
    agree = total = items = 0
    for winners in votes.values():
        if len(winners) < 2:
            continue
        items += 1
        counts = Counter(winners)
        k = len(winners)
        total += k * (k - 1) // 2
        agree += sum(c * (c - 1) // 2 for c in counts.values())
    return (agree / total if total else None), items


def evaluate(judge_version, pairs: list[dict], *, job=None, source: str = "", judge=None):
    """Judge held-out human pairs (chosen = the human winner) and store a JudgeEvaluation."""
    from .models import JudgeEvaluation

    judge = judge or load_judge(judge_version)
    verdicts = judge_pairs(judge, [(p["context"], p["tools"], p["chosen"], p["rejected"]) for p in pairs])
    rep = score_verdicts(verdicts)
    ceiling, human_items = human_agreement(judge_version.project)
    examples = [{"context": (p["context"][-1].get("content") or "")[:200] if p["context"] else "",
                 "winner": answer_text(p["chosen"])[:300], "loser": answer_text(p["rejected"])[:300],
                 "p_first": round(v.p_first, 4), "p_second": round(v.p_second, 4), "reason": v.reason}
                for p, v in list(zip(pairs, verdicts, strict=True))[:200]]
    return JudgeEvaluation.objects.create(
        judge=judge_version, job=job, source=source, pairs=rep.pairs, accuracy=rep.accuracy,
        accuracy_se=rep.accuracy_se, single_order_accuracy=rep.single_order_accuracy,
        position_bias_rate=rep.position_bias_rate, first_position_rate=rep.first_position_rate, ece=rep.ece,
        brier=rep.brier, human_agreement=ceiling, human_pairs=human_items,
        details={"bins": rep.bins, "examples": examples})


# --- suggestions on comparison tasks (leads only) and queue priority -----------------------

DISAGREE_BOOST = 20
UNSURE_BOOST = 10
UNSURE_BELOW = 0.6
WORSE_BELOW = 1 - UNSURE_BELOW  # a response judged against a known good answer: clearly worse below this


def _context_of(response) -> tuple[list, list]:
    conv = response.conversation
    return conv.messages[:response.context_length], conv.tools or response.conversation.project.tools


def _majority(choices: list[str]) -> str:
    wins = Counter(c for c in choices if c in ("a", "b"))
    if not wins:
        return ""
    (top, k), *rest = wins.most_common()
    return "" if rest and rest[0][1] == k else top


def suggest(project, judge_version, limit: int = 2000, judge=None) -> dict:
    """Judge open and labelled comparison tasks that have no suggestion from this judge yet, then
    raise the queue priority of the ones where the judge disagrees with the humans (first) or is
    unsure, so that the next annotator's vote goes where it settles most. Labelling tasks get the
    same through suggest_verdicts (their counts under "responses_*")."""
    from django.db.models import Exists, OuterRef

    from annotator.models import Preference, Status, Task

    from .models import JudgeSuggestion

    loaded = []

    def the_judge():  # loaded once, and only when there is something to judge
        if not loaded:
            loaded.append(judge or load_judge(judge_version))
        return loaded[0]

    done = JudgeSuggestion.objects.filter(judge=judge_version, response_a=OuterRef("response_id"),
                                          response_b=OuterRef("response_b_id"))
    tasks = list(Task.objects.filter(project=project, kind=Task.Kind.COMPARE).exclude(Exists(done))
                 .select_related("response__conversation__project", "response_b").order_by("id")[:limit])
    out = {"judged": 0, "disagree": 0, "unsure": 0}
    if tasks:
        items = []
        for t in tasks:
            context, tools = _context_of(t.response)
            items.append((context, tools, t.response.message or t.response.raw_text,
                          t.response_b.message or t.response_b.raw_text))
        verdicts = judge_pairs(the_judge(), items)
        humans: dict[tuple[int, int], list[str]] = {}
        for a, b, choice in Preference.objects.filter(
                response_a_id__in=[t.response_id for t in tasks] + [t.response_b_id for t in tasks],
                status__in=[Status.SUBMITTED, Status.APPROVED]).values_list("response_a_id", "response_b_id", "choice"):
            humans.setdefault((a, b), []).append(choice)
            humans.setdefault((b, a), []).append({"a": "b", "b": "a"}.get(choice, choice))
        disagree, unsure, rows = [], [], []
        for t, v in zip(tasks, verdicts, strict=True):
            human = _majority(humans.get((t.response_id, t.response_b_id), []))
            verdict = "a" if v.prob >= 0.5 else "b"
            differs = bool(human) and human != verdict
            rows.append(JudgeSuggestion(project=project, judge=judge_version, response_a_id=t.response_id,
                                        response_b_id=t.response_b_id, prob_a=round(v.prob, 6),
                                        position_consistent=v.consistent, reason=v.reason, human_choice=human,
                                        disagrees=differs))
            if differs:
                disagree.append(t.pk)
            elif max(v.prob, 1 - v.prob) < UNSURE_BELOW or not v.consistent:
                unsure.append(t.pk)
        _store(JudgeSuggestion, rows, disagree, unsure)
        out = {"judged": len(rows), "disagree": len(disagree), "unsure": len(unsure)}
    out.update(suggest_verdicts(project, judge_version, limit, the_judge))
    return out


def _store(model, rows, disagree: list[int], unsure: list[int]):
    """Save the suggestions and raise the priority of their tasks (and the tasks' slots) in one transaction."""
    from django.db import transaction
    from django.db.models import F

    from annotator.models import Slot, Task

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
    from django.db.models import Count, Q

    from annotator.models import Label, Status

    good, bad = Label.Verdict.REASONABLE, Label.Verdict.UNREASONABLE
    ranked: dict[tuple[int, int], list[tuple]] = {}
    majority: dict[int, str] = {}
    rows = (Label.objects.filter(response__conversation_id__in={c for c, _ in contexts},
                                 status__in=[Status.SUBMITTED, Status.APPROVED])
            .values("response_id", "response__conversation_id", "response__context_length")
            .annotate(good=Count("id", filter=Q(verdict=good)), bad=Count("id", filter=Q(verdict=bad)),
                      approved=Count("id", filter=Q(verdict=good, status=Status.APPROVED))).order_by())
    for row in rows:
        r = row["response_id"]
        majority[r] = good if row["good"] > row["bad"] else bad if row["bad"] > row["good"] else ""
        context = (row["response__conversation_id"], row["response__context_length"])
        if majority[r] == good and context in contexts:
            ranked.setdefault(context, []).append((-row["approved"], row["bad"] - row["good"], r))
    return {c: [r for *_, r in sorted(v)] for c, v in ranked.items()}, majority


def suggest_verdicts(project, judge_version, limit: int, the_judge) -> dict:
    """Judge labelling tasks' responses that have no suggestion from this judge yet, each against a known
    good answer in its context (see references; a response with none is left for later). P(at least as
    good as the reference) >= 0.5 suggests reasonable, below WORSE_BELOW unreasonable, between unsure.
    Disagreeing with the humans' majority verdict raises the task's priority by DISAGREE_BOOST, unsure
    (or flipping with the order) by UNSURE_BOOST, as for comparisons."""
    from django.db.models import Exists, OuterRef

    from annotator.models import ModelResponse, Task

    from .models import JudgeVerdictSuggestion

    done = JudgeVerdictSuggestion.objects.filter(judge=judge_version, response=OuterRef("response_id"))
    tasks = list(Task.objects.filter(project=project, kind=Task.Kind.LABEL).exclude(Exists(done))
                 .select_related("response__conversation__project").order_by("id")[:limit])
    ranked, majority = references({(t.response.conversation_id, t.response.context_length) for t in tasks}) \
        if tasks else ({}, {})
    picked = []
    for t in tasks:
        best = [r for r in ranked.get((t.response.conversation_id, t.response.context_length), []) if r != t.response_id]
        if best:
            picked.append((t, best[0]))
    out = {"responses_judged": 0, "responses_disagree": 0, "responses_unsure": 0,
           "responses_without_reference": len(tasks) - len(picked)}
    if not picked:
        return out
    refs = ModelResponse.objects.in_bulk([ref for _, ref in picked])
    items = []
    for t, ref in picked:
        context, tools = _context_of(t.response)
        items.append((context, tools, t.response.message or t.response.raw_text,
                      refs[ref].message or refs[ref].raw_text))
    verdicts = judge_pairs(the_judge(), items)
    rows, disagree, unsure = [], [], []
    for (t, ref), v in zip(picked, verdicts, strict=True):
        suggested = (JudgeVerdictSuggestion.Suggested.REASONABLE if v.prob >= 0.5 else
                     JudgeVerdictSuggestion.Suggested.UNREASONABLE if v.prob < WORSE_BELOW else
                     JudgeVerdictSuggestion.Suggested.UNSURE)
        human = majority.get(t.response_id, "")
        differs = bool(suggested and human) and suggested != human
        rows.append(JudgeVerdictSuggestion(
            project=project, judge=judge_version, response_id=t.response_id, reference_id=ref,
            prob_better=round(v.prob, 6), position_consistent=v.consistent, reason=v.reason,
            suggested=suggested, human_verdict=human, disagrees=differs))
        if differs:
            disagree.append(t.pk)
        elif not suggested or not v.consistent:
            unsure.append(t.pk)
    _store(JudgeVerdictSuggestion, rows, disagree, unsure)
    out.update(responses_judged=len(rows), responses_disagree=len(disagree), responses_unsure=len(unsure))
    return out


def verdict_suggestions_for(project, response_ids) -> dict[int, object]:
    """The newest verdict suggestion per response (any judge)."""
    from .models import JudgeVerdictSuggestion

    out: dict[int, object] = {}
    for s in (JudgeVerdictSuggestion.objects.filter(project=project, response_id__in=list(response_ids))
              .select_related("judge").order_by("-id")):
        out.setdefault(s.response_id, s)
    return out


def suggestions_for(project, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], object]:
    """The newest suggestion per (response_a, response_b), in either order, oriented to the asked order."""
    from django.db.models import Q

    from .models import JudgeSuggestion

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
        else:  # stored the other way round: flip it for the caller
            s.prob_a, s.response_a_id, s.response_b_id = 1 - s.prob_a, s.response_b_id, s.response_a_id
            out[key[::-1]] = s
    return out
