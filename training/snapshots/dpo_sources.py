"""DPO rows: TRL's conversational preference format, ``prompt`` (messages), ``chosen`` and
``rejected`` (one assistant message each).

Pairs come from pairwise preferences (winner over loser; ties skipped; *both bad* → the
context's correction over each response), from corrections (the correction over the
response it corrects) and from online DPO rounds.

One row per item (resolve.py): the preferences on one unordered pair of responses, and the
corrections that say what the other response of that pair says, are the votes on the pair
(decided by the compare task's gold choice, else the majority, else left out); the labels of
one corrected response make one correction pair. A correction that voted on a pair makes no
row of its own: the preference source, which runs first, records it (``resolve.Tally.absorb``).
"""

from __future__ import annotations

from annotator.models import (
    Adjudication,
    Correction,
    Label,
    ModelResponse,
    Preference,
    Status,
    Task,
)

from .audit import same_message
from .resolve import GOLD, MAJORITY, UNREASONABLE, Gold, decide, resolve_response
from .rows import Row, _loads, clean_message, response_output
from .selection import as_flag, corrections_qs, online_qs, preference_work_q, preferences_qs, statuses
from .sources import Source, _col, ids_in

# Why a preference made no row (Build.skipped's keys, counted below), in words for the snapshot page
# ("<words>: <count>").
SKIP_REASONS = {
    "tie": "ties (a tie prefers neither answer)",
    "context_mismatch": "pairs whose two responses answer different contexts",
    "both_bad_without_correction": "“both bad” with no correction in that context to prefer",
    "both_bad_pair_already_from_correction": (
        "“both bad” pairs already taught by a correction (the corrections source made that row)"
    ),
    "correction_pair_already_from_both_bad": (
        "corrections that a “both bad” preference already paired with the same answer, word for word"
    ),
}


class CorrectionPairSource(Source):
    """DPO: a correction (chosen) over the unreasonable response it corrects (rejected); one per response."""

    conversation_path = "label__response__conversation"
    fields = (
        "message",
        "label_id",
        "label__verdict",
        "label__response_id",
        "label__response__context_length",
        "label__response__model_version_id",
        "label__response__conversation_id",
        "label__response__conversation__external_id",
        "label__response__conversation__split",
        "label__response__message",
        "label__response__raw_text",
    )
    name = "correction"

    def queryset(self):
        return corrections_qs(self.build.project.pk, self.f, unreasonable_only=True)

    def lookups(self, chunk):
        return self.vote_details(self.label_votes({r[4] for r in chunk}), outputs=False)

    def rows(self, chunk, aux):
        votes, gold, cats, texts = aux["votes"], aux["gold"], aux["cats"], aux["texts"]
        build = self.build
        absorbed = build.resolved.absorbed_among([r[0] for r in chunk])
        out = []
        for rec in chunk:
            (
                pk,
                msg,
                label_id,
                _verdict,
                response_id,
                length,
                mv,
                conv_id,
                ext,
                split,
                resp_msg,
                raw,
                messages_text,
                tools_text,
            ) = rec
            item = votes.get(response_id) or ()
            alone = not item or (len(item) == 1 and item[0].label_id == label_id)
            if alone and response_id not in gold:
                if pk in absorbed:
                    continue  # it voted on a preference pair, which made the row (or overruled it)
                build.resolved.row(1, MAJORITY)
                chosen, chosen_label = clean_message({**_loads(msg), "role": "assistant"}), label_id
                source_id, votes_n, how, g = pk, 1, MAJORITY, None
            else:
                owners = [
                    v.correction_id
                    for v in item
                    if v.selected and v.correction_id and v.verdict == UNREASONABLE
                ]
                if min(owners, default=None) != pk:
                    continue  # another correction of this response writes its row
                g = gold.get(response_id)
                skip = build.resolved.absorbed_among([v.correction_id for v in item if v.correction_id])
                outcome = resolve_response(item, g, texts, allow_reasonable=False, pairs_only=True, skip=skip)
                if not outcome.source:
                    if outcome.how:
                        build.resolved.left_out(
                            outcome.how,
                            outcome.detail,
                            source=self.name,
                            source_id=pk,
                            conversation_id=conv_id,
                            external_id=ext,
                        )
                    continue
                source_id, chosen_label, votes_n, how = (
                    outcome.source_id,
                    outcome.label_id,
                    outcome.votes,
                    outcome.how,
                )
                chosen = clean_message({**texts[source_id][0], "role": "assistant"})
                build.resolved.row(votes_n, how)
            out.append(
                Row(
                    source=self.name,
                    source_id=source_id,
                    conversation_id=conv_id,
                    external_id=ext,
                    context_length=length,
                    split=split,
                    model_version_id=mv,
                    ctx=build.contexts.context(conv_id, length, messages_text),
                    toolset=build.contexts.tools(tools_text),
                    target=chosen,
                    rejected=response_output(_loads(resp_msg), raw),
                    categories=g.categories if g else cats.get(chosen_label, ()),
                )
            )
        return out


class PreferenceSource(Source):
    """DPO: winner over loser; "both bad" → the context's correction over each response; ties skipped.

    One row (or one both-bad set) per unordered pair, written by the pair's owner: its first
    selected preference by id.
    """

    conversation_path = "response_a__conversation"
    fields = (
        "choice",
        "response_a_id",
        "response_b_id",
        "response_a__context_length",
        "response_b__context_length",
        "response_a__conversation_id",
        "response_b__conversation_id",
        "response_a__message",
        "response_a__raw_text",
        "response_b__message",
        "response_b__raw_text",
        "response_a__model_version_id",
        "response_b__model_version_id",
        "response_a__conversation__external_id",
        "response_a__conversation__split",
    )
    name = "preference"

    def queryset(self):
        return preferences_qs(self.build.project.pk, self.f).exclude(choice="")

    def corrections_for(self, contexts: set[tuple[int, int]]) -> dict[tuple, tuple]:
        """The best correction per (conversation, context length): approved first, then the earliest."""
        if not contexts:
            return {}
        best: dict[tuple, tuple] = {}
        rank = {Status.APPROVED: 0, Status.SUBMITTED: 1}
        qs = Correction.objects.filter(
            ids_in(_col(ModelResponse, "conversation_id"), ids={c for c, _ in contexts}),
            label__status__in=statuses(self.f),
        ).values_list(
            "pk",
            "message",
            "label__status",
            "label__verdict",
            "label__response_id",
            "label__response__conversation_id",
            "label__response__context_length",
        )
        for pk, msg, status, verdict, rid, conv, length in qs:
            key = (conv, length)
            if key in contexts:
                candidate = (rank[status], pk, msg, rid, verdict)
                if key not in best or candidate[:2] < best[key][:2]:
                    best[key] = candidate
        return best

    def pair_votes(self, response_ids) -> dict[frozenset, list[tuple]]:
        """The admitted preferences on pairs touching these responses: pair -> [(id, vote, selected)],
        a vote being the winning response id, "tie" or "both_bad"."""
        qs = Preference.objects.filter(
            ids_in(_col(Preference, "response_a_id"), _col(Preference, "response_b_id"), ids=response_ids),
            status__in=statuses(self.f),
        ).exclude(choice="")
        work = preference_work_q(self.f)
        if work:
            qs = qs.annotate(selected=as_flag(work))
            rows = qs.values_list("pk", "response_a_id", "response_b_id", "choice", "selected")
        else:
            rows = ((*r, True) for r in qs.values_list("pk", "response_a_id", "response_b_id", "choice"))
        out: dict[frozenset, list] = {}
        for pk, a, b, choice, selected in rows:
            vote = a if choice == "a" else b if choice == "b" else choice
            out.setdefault(frozenset((a, b)), []).append((pk, vote, selected))
        return out

    def pair_gold(self, response_ids) -> dict[frozenset, Gold]:
        """The leads' gold choices on compare tasks touching these responses, as votes."""
        if not self.build.has_gold:
            return {}
        rows = list(
            Adjudication.objects.filter(
                ids_in(_col(Task, "response_id"), _col(Task, "response_b_id"), ids=response_ids),
                task__kind=Task.Kind.COMPARE,
            )
            .exclude(choice="")
            .values_list("pk", "task__response_id", "task__response_b_id", "choice", "lead_id")
        )
        cats = self.gold_categories([r[0] for r in rows])
        out = {}
        for pk, a, b, choice, lead in rows:
            vote = a if choice == "a" else b if choice == "b" else choice
            out[frozenset((a, b))] = Gold(vote, lead, cats.get(pk, ()))
        return out

    def correction_votes(self, response_ids) -> dict[int, list[tuple]]:
        """Admitted corrections of unreasonable labels on these responses: response id -> [(id, message)]."""
        out: dict[int, list] = {}
        for pk, rid, msg in Correction.objects.filter(
            ids_in(_col(Label, "response_id"), ids=response_ids),
            label__status__in=statuses(self.f),
            label__verdict=Label.Verdict.UNREASONABLE,
        ).values_list("pk", "label__response_id", "message"):
            out.setdefault(rid, []).append((pk, msg))
        return out

    def response_categories(self, response_ids) -> dict[int, set[int]]:
        out: dict[int, set] = {}
        for rid, cat in Label.categories.through.objects.filter(
            ids_in(_col(Label, "response_id"), ids=response_ids), label__status__in=statuses(self.f)
        ).values_list("label__response_id", "taxonomycategory_id"):
            out.setdefault(rid, set()).add(cat)
        return out

    @staticmethod
    def same_context(rec) -> bool:
        return rec[4] == rec[5] and rec[6] == rec[7]  # context length and conversation of a and b

    def lookups(self, chunk):
        good = [r for r in chunk if self.same_context(r)]
        ids = {r[2] for r in good} | {r[3] for r in good}
        if not ids:
            return {"votes": {}, "gold": {}, "fixes": {}, "corrections": {}, "cats": {}}
        votes = self.pair_votes(ids)
        gold = self.pair_gold(ids)
        both_bad = set()
        for r in good:
            key = frozenset((r[2], r[3]))
            g = gold.get(key)
            if (g and g.value == "both_bad") or any(v[1] == "both_bad" for v in votes.get(key, ())):
                both_bad.add((r[6], r[4]))
        return {
            "votes": votes,
            "gold": gold,
            "fixes": self.correction_votes(ids) if "corrections" in self.f["sources"] else {},
            "corrections": self.corrections_for(both_bad),
            "cats": self.response_categories(ids),
        }

    def rows(self, chunk, aux):
        build = self.build
        good = []
        for rec in chunk:
            if not self.same_context(rec):
                (pk, _choice, a, b, len_a, len_b, conv_a, conv_b, *_rest) = rec
                build.skipped["context_mismatch"] += 1
                build.auditor.flag(
                    "pair_context_mismatch",
                    f"response {a} answers {len_a} messages of conversation {conv_a}, "
                    f"response {b} answers {len_b} of conversation {conv_b}",
                    None,
                    source="preference",
                    source_id=pk,
                    conversation_id=conv_a,
                    external_id=rec[14],
                )
                continue
            good.append(rec)
        votes, gold, fixes, cats = aux["votes"], aux["gold"], aux["fixes"], aux["cats"]
        out = []
        for rec in good:
            (
                pk,
                choice,
                a,
                b,
                length,
                _lb,
                conv_id,
                _cb,
                msg_a,
                raw_a,
                msg_b,
                raw_b,
                mv_a,
                mv_b,
                ext,
                split,
                messages_text,
                tools_text,
            ) = rec
            key = frozenset((a, b))
            prefs = votes.get(key) or [(pk, a if choice == "a" else b if choice == "b" else choice, True)]
            g = gold.get(key)
            fix = fixes.get(a, ()) or fixes.get(b, ())
            if (len(prefs) > 1 or g or fix) and min((p[0] for p in prefs if p[2]), default=pk) != pk:
                continue  # the pair's first selected preference writes its row
            out_a, out_b = response_output(_loads(msg_a), raw_a), response_output(_loads(msg_b), raw_b)
            pair = [p[1] for p in prefs]
            fixed_by = {}  # correction id -> the response it votes for
            for rid, other, out_other in ((a, b, out_b), (b, a, out_a)):
                for cid, cmsg in fixes.get(rid, ()):
                    if same_message(clean_message({**cmsg, "role": "assistant"}), out_other):
                        fixed_by[cid] = other
            said = pair + list(fixed_by.values())
            decided, how = decide(said, g.value if g else None)
            build.resolved.absorb(fixed_by)
            n = len(said)
            if decided is None:
                reason = "mirrored_pair_unresolved" if a in said and b in said else "no_majority"
                build.resolved.left_out(
                    reason,
                    _describe_pair(a, b, pair, fixed_by),
                    source=self.name,
                    source_id=pk,
                    conversation_id=conv_id,
                    external_id=ext,
                )
                continue
            common = dict(
                conversation_id=conv_id,
                external_id=ext,
                context_length=length,
                split=split,
                ctx=build.contexts.context(conv_id, length, messages_text),
                toolset=build.contexts.tools(tools_text),
            )
            if decided == "tie":
                build.skipped["tie"] += 1
                build.resolved.no_row()
                continue
            if decided == "both_bad":
                made = self.both_bad_rows(pk, a, b, out_a, out_b, mv_a, mv_b, aux, common)
                if made:
                    build.resolved.row(n, how)
                else:
                    build.resolved.no_row()
                out.extend(made)
                continue
            win, lose = decided, (b if decided == a else a)
            by_preference = decided in pair or how == GOLD or not fixed_by
            build.resolved.row(n, how)
            out.append(
                Row(
                    source=self.name if by_preference else "correction",
                    source_id=pk if by_preference else min(c for c, w in fixed_by.items() if w == win),
                    model_version_id=mv_b if lose == b else mv_a,
                    target=out_a if win == a else out_b,
                    rejected=out_b if lose == b else out_a,
                    categories=g.categories if g and g.categories else sorted(cats.get(lose, ())),
                    **common,
                )
            )
        return out

    def both_bad_rows(self, pk, a, b, out_a, out_b, mv_a, mv_b, aux, common) -> list[Row]:
        """The context's correction over each response of a "both bad" pair."""
        build = self.build
        best = aux["corrections"].get((common["conversation_id"], common["context_length"]))
        if best is None:
            build.skipped["both_bad_without_correction"] += 1
            return []
        _rank, _cpk, cmsg, corrected_rid, verdict = best
        chosen = clean_message({**cmsg, "role": "assistant"})
        skip_own = "corrections" in self.f["sources"]
        made = []
        for rid, rejected, mv in ((a, out_a, mv_a), (b, out_b, mv_b)):
            if skip_own and rid == corrected_rid and verdict == Label.Verdict.UNREASONABLE:
                build.skipped["both_bad_pair_already_from_correction"] += 1
                continue  # the corrections source emits exactly this pair
            # (the other response's own correction, when it says the same, is dropped where the
            # corrections source's rows are written: Build.once)
            made.append(
                Row(
                    source="both_bad",
                    source_id=pk,
                    model_version_id=mv,
                    target=chosen,
                    rejected=rejected,
                    categories=sorted(aux["cats"].get(rid, ())),
                    **common,
                )
            )
        return made


def _describe_pair(a: int, b: int, pair: list, fixed_by: dict) -> str:
    def words(vote) -> str:
        return f"response {vote} better" if isinstance(vote, int) else str(vote).replace("_", " ")

    said = [words(v) for v in pair] + [f"a correction says response {w} better" for w in fixed_by.values()]
    return (
        f"pair of responses {min(a, b)} and {max(a, b)} ({'; '.join(said)}), no lead decision and no majority"
    )


class OnlinePairSource(Source):
    """DPO: pairs an online round ranked from the policy's own samples (training/online.py)."""

    conversation_path = "conversation"
    fields = (
        "chosen_message",
        "rejected_id",
        "context_length",
        "rejected__model_version_id",
        "conversation_id",
        "conversation__external_id",
        "conversation__split",
        "rejected__message",
        "rejected__raw_text",
    )
    name = "online"

    def queryset(self):
        return online_qs(self.build.project.pk, self.f)

    def rows(self, chunk, aux):
        out = []
        for rec in chunk:
            (pk, chosen, _rid, length, mv, conv_id, ext, split, resp_msg, raw, messages_text, tools_text) = (
                rec
            )
            self.build.resolved.row(1, MAJORITY)  # a round's pair: one item, no annotators to merge
            out.append(
                Row(
                    source=self.name,
                    source_id=pk,
                    conversation_id=conv_id,
                    external_id=ext,
                    context_length=length,
                    split=split,
                    model_version_id=mv,
                    ctx=self.build.contexts.context(conv_id, length, messages_text),
                    toolset=self.build.contexts.tools(tools_text),
                    target=clean_message({**_loads(chosen), "role": "assistant"}),
                    rejected=response_output(_loads(resp_msg), raw),
                )
            )
        return out
