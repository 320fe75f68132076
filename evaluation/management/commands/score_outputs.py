"""Score raw model outputs against gold calls, one JSONL case per line.

    python manage.py score_outputs cases.jsonl        # or - for stdin

Each input line: {"tools": [...OpenAI tool specs...], "expected": {assistant message},
"output": "raw model text", "stopped_at_limit": bool (optional),
"categories": [str] (optional), "turn_depth": int (optional)}.

Prints one JSON line per case (metrics and defects by their metrics.md names, 1 / 0
or null, plus "line"), then one JSON line with the summary. A bad line prints
{"line": N, "error": "..."} to stderr; the command then exits non-zero.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from toolcalls.score import HEADLINE_METRICS, score_case, summarize

ROW_EXTRAS = ("false_call", "missed_call", "calls_tp", "calls_predicted", "calls_expected")


def _case_from_line(text):
    """Validate one decoded line; return score_case arguments or raise ValueError."""
    try:
        case = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(case, dict):
        raise ValueError("line is not a JSON object")
    for key in ("tools", "expected", "output"):
        if key not in case:
            raise ValueError(f"missing {key!r}")
    tools = case["tools"]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValueError("'tools' is not a list of objects")
    expected = case["expected"]
    if not isinstance(expected, dict):
        raise ValueError("'expected' is not an object")
    output = case["output"]
    if not isinstance(output, str):
        raise ValueError("'output' is not a string")
    stopped = case.get("stopped_at_limit")
    if stopped is not None and not isinstance(stopped, bool):
        raise ValueError("'stopped_at_limit' is not a boolean")
    categories = case.get("categories")
    if categories is None:
        categories = []
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise ValueError("'categories' is not a list of strings")
    depth = case.get("turn_depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
        raise ValueError("'turn_depth' is not an integer")
    return expected, output, tools, stopped, categories, depth


def score_jsonl(lines):
    """Score an iterable of JSONL lines.

    Returns (case_rows, summary, errors): one flat row per good line, the
    ``summarize`` result over them (with by_category / by_turn_depth), and
    [{"line": N, "error": "..."}] for bad lines. Blank lines are skipped; line
    numbers count from 1.
    """
    rows, scores, cats, depths, errors = [], [], [], [], []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            expected, output, tools, stopped, categories, depth = _case_from_line(text)
            s = score_case(expected, output, tools, stopped_at_limit=stopped)
        except (ValueError, TypeError) as exc:
            errors.append({"line": n, "error": str(exc)})
            continue
        row = {"line": n}
        for m in HEADLINE_METRICS:
            row[m] = s[m]
        row.update(s["defects"])
        for k in ROW_EXTRAS:
            row[k] = s[k]
        row["malformed_reasons"] = s["parsed"]["malformed_reasons"]
        rows.append(row)
        scores.append(s)
        cats.append(categories)
        depths.append(depth)
    summary = summarize(scores, categories=cats, turn_depths=depths)
    return rows, summary, errors


class Command(BaseCommand):
    help = "Score model outputs in a JSONL file (or - for stdin) with the metrics.md metrics."

    def add_arguments(self, parser):
        parser.add_argument("cases", help="JSONL file of cases, or - for stdin")
        parser.add_argument("--summary-only", action="store_true", help="print only the summary line")

    def handle(self, *args, **options):
        path = options["cases"]
        if path == "-":
            rows, summary, errors = score_jsonl(sys.stdin)
        else:
            try:
                with open(path, encoding="utf-8") as fh:
                    rows, summary, errors = score_jsonl(fh)
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read {path}: {exc}") from None
        plain = lambda s: s  # noqa: E731 - no colour codes inside JSON
        for err in errors:
            self.stderr.write(json.dumps(err, ensure_ascii=False), style_func=plain)
        if not options["summary_only"]:
            for row in rows:
                self.stdout.write(json.dumps(row, ensure_ascii=False))
        summary = {"summary": True, "cases": len(rows), "bad_lines": len(errors), **summary}
        self.stdout.write(json.dumps(summary, ensure_ascii=False))
        if errors:
            raise CommandError(f"{len(errors)} bad line(s)")
