"""DPO rows: TRL's conversational preference format, ``prompt`` (messages), ``chosen`` and
``rejected`` (one assistant message each).

Pairs come from pairwise preferences (winner over loser; ties skipped; *both bad* → the
context's correction over each response), from corrections (the correction over the
response it corrects) and from online DPO rounds.
"""

from __future__ import annotations

from annotator.models import (
    Correction,
    Label,
    ModelResponse,
    Preference,
    Status,
)

from .rows import Row, _loads, clean_message, response_output
from .selection import corrections_qs, online_qs, preferences_qs, statuses
from .sources import Source, _col, _label_conflict, ids_in


class CorrectionPairSource(Source):
    """DPO: a correction (chosen) over the unreasonable response it corrects (rejected)."""

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
        return {
            "cats": self.label_categories([r[2] for r in chunk]),
            "live": self.live_labels([r[4] for r in chunk]),
        }

    def rows(self, chunk, aux):
        cats, live = aux["cats"], aux["live"]
        out = []
        for rec in chunk:
            (
                pk,
                msg,
                label_id,
                verdict,
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
                    target=clean_message({**_loads(msg), "role": "assistant"}),
                    rejected=response_output(_loads(resp_msg), raw),
                    categories=cats.get(label_id, ()),
                    conflict=_label_conflict(verdict, live.get(response_id, [])),
                )
            )
        return out


def _preference_conflict(winner: int, live: list[tuple[int, str]]) -> str | None:
    """`live`: (winning response id, status) of the pair's submitted/approved A-or-B preferences."""
    winners = {w for w, _ in live}
    if len(winners) < 2:
        return None
    approved = {w for w, s in live if s == Status.APPROVED}
    if len(approved) == 1:
        return (
            None if winner in approved else "overruled: a lead approved the opposite preference on this pair"
        )
    if len(approved) > 1:
        return "a lead approved opposite preferences on this pair"
    return "annotators prefer opposite responses of this pair and no lead has decided"


class PreferenceSource(Source):
    """DPO: winner over loser; "both bad" → the context's correction over each response; ties skipped."""

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
        return preferences_qs(self.build.project.pk, self.f).filter(choice__in=["a", "b", "both_bad"])

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

    def live_preferences(self, response_ids) -> dict[frozenset, list[tuple[int, str]]]:
        out: dict[frozenset, list] = {}
        for a, b, choice, status in Preference.objects.filter(
            ids_in(_col(Preference, "response_a_id"), _col(Preference, "response_b_id"), ids=response_ids),
            status__in=[Status.SUBMITTED, Status.APPROVED],
            choice__in=["a", "b"],
        ).values_list("response_a_id", "response_b_id", "choice", "status"):
            out.setdefault(frozenset((a, b)), []).append((a if choice == "a" else b, status))
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
        return {
            "live": self.live_preferences(ids) if any(r[1] != "both_bad" for r in good) else {},
            "corrections": self.corrections_for({(r[6], r[4]) for r in good if r[1] == "both_bad"}),
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
        live, corrections, cats = aux["live"], aux["corrections"], aux["cats"]
        skip_own = "corrections" in self.f["sources"]
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
            common = dict(
                conversation_id=conv_id,
                external_id=ext,
                context_length=length,
                split=split,
                ctx=build.contexts.context(conv_id, length, messages_text),
                toolset=build.contexts.tools(tools_text),
            )
            out_a, out_b = response_output(_loads(msg_a), raw_a), response_output(_loads(msg_b), raw_b)
            if choice in ("a", "b"):
                win, lose = (a, b) if choice == "a" else (b, a)
                chosen, rejected = (out_a, out_b) if choice == "a" else (out_b, out_a)
                out.append(
                    Row(
                        source="preference",
                        source_id=pk,
                        model_version_id=mv_b if lose == b else mv_a,
                        target=chosen,
                        rejected=rejected,
                        categories=sorted(cats.get(lose, ())),
                        conflict=_preference_conflict(win, live.get(frozenset((a, b)), [])),
                        **common,
                    )
                )
                continue
            best = corrections.get((conv_id, length))
            if best is None:
                build.skipped["both_bad_without_correction"] += 1
                continue
            _rank, _cpk, cmsg, corrected_rid, verdict = best
            chosen = clean_message({**cmsg, "role": "assistant"})
            for rid, rejected, mv in ((a, out_a, mv_a), (b, out_b, mv_b)):
                if skip_own and rid == corrected_rid and verdict == Label.Verdict.UNREASONABLE:
                    build.skipped["both_bad_pair_already_from_correction"] += 1
                    continue  # the corrections source emits exactly this pair
                out.append(
                    Row(
                        source="both_bad",
                        source_id=pk,
                        model_version_id=mv,
                        target=chosen,
                        rejected=rejected,
                        categories=sorted(cats.get(rid, ())),
                        **common,
                    )
                )
        return out


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
