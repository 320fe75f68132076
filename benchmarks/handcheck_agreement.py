"""Agreement of our tool_call_accuracy with an independent reading of 200 hand-checked cases.

    python benchmarks/handcheck_agreement.py [--cases PATH] [--verdicts PATH]

Reads benchmarks/data/handcheck/cases.jsonl (score_outputs format: id, tools, expected, output;
made by make_cases.py) and verdicts.jsonl, written by a reader who applied metrics.md by hand
without our code: one line {"id", "tool_call_accuracy": 1 | 0 | null, "note"} per case (null:
the reader could not decide). Scores every case with toolcalls.score.score_case and prints one
JSON line (also kept in benchmarks/results/handcheck.json): cases agreeing out of those both
readings decided, Cohen's kappa, and every disagreeing case with both readings and the note.
Exits 2 when verdicts.jsonl is absent (the reading is not done yet).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import ROOT, report  # noqa: E402
from toolcalls.score import score_case  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "handcheck"


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def cohens_kappa(pairs: list[tuple[int, int]]) -> float | None:
    """Kappa of two binary readings; None when undefined (no pairs, or chance agreement is 1)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    p_a = sum(a for a, _ in pairs) / n
    p_b = sum(b for _, b in pairs) / n
    chance = p_a * p_b + (1 - p_a) * (1 - p_b)
    if chance == 1:
        return None
    return (observed - chance) / (1 - chance)


def agreement(cases: list[dict], verdicts: list[dict]) -> dict:
    by_id = {str(v.get("id")): v for v in verdicts}
    pairs, disagree, undecided, missing = [], [], [], []
    by_source: dict[str, dict] = {}
    for c in cases:
        ours = score_case(c["expected"], c["output"], c["tools"], stopped_at_limit=c.get("stopped_at_limit"))[
            "tool_call_accuracy"
        ]
        v = by_id.get(str(c["id"]))
        if v is None:
            missing.append(c["id"])
            continue
        theirs = v.get("tool_call_accuracy")
        if isinstance(theirs, bool) or theirs not in (0, 1):
            undecided.append(c["id"])
            continue
        pairs.append((ours, theirs))
        src = by_source.setdefault(c.get("source") or "", {"compared": 0, "agree": 0})
        src["compared"] += 1
        src["agree"] += ours == theirs
        if ours != theirs:
            disagree.append(
                {
                    "id": c["id"],
                    "source": c.get("source"),
                    "ours": ours,
                    "reader": theirs,
                    "note": v.get("note", ""),
                }
            )
    agree = len(pairs) - len(disagree)
    kappa = cohens_kappa(pairs)
    return {
        "cases": len(cases),
        "compared": len(pairs),
        "agree": agree,
        "agreement": f"{agree}/{len(cases)}",
        "agreement_rate": round(agree / len(pairs), 4) if pairs else None,
        "cohens_kappa": None if kappa is None else round(kappa, 4),
        "ours_correct": sum(a for a, _ in pairs),
        "reader_correct": sum(b for _, b in pairs),
        "by_source": dict(sorted(by_source.items())),
        "reader_undecided": undecided,
        "no_verdict": missing,
        "disagreements": disagree,
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=str(DATA / "cases.jsonl"))
    parser.add_argument("--verdicts", default=str(DATA / "verdicts.jsonl"))
    parser.add_argument("--name", default="handcheck")
    args = parser.parse_args()
    verdicts_path = Path(args.verdicts)
    if not verdicts_path.exists():
        print(
            json.dumps(
                {
                    "bench": args.name,
                    "error": f"{verdicts_path} is absent: the independent reading is not done yet",
                }
            )
        )
        sys.exit(2)
    figures = agreement(read_jsonl(Path(args.cases)), read_jsonl(verdicts_path))
    figures["cases_file"] = (
        str(Path(args.cases).relative_to(ROOT)) if Path(args.cases).is_relative_to(ROOT) else args.cases
    )
    report(args.name, figures)


if __name__ == "__main__":
    main()
