"""Score raw model outputs against gold calls, one JSONL case per line.

    python manage.py score_outputs cases.jsonl        # or - for stdin
    python manage.py score_outputs cases.jsonl --max-line-bytes 50000000 --strict

Each input line: {"tools": [...OpenAI tool specs...], "expected": {assistant message},
"output": "raw model text", "stopped_at_limit": bool (optional),
"categories": [str] (optional), "turn_depth": int (optional)}.

Prints one JSON line per case (metrics and defects by their metrics.md names, 1 / 0
or null, plus "line"), then one JSON line with the summary, which counts the lines scored
("lines_scored") and the lines rejected ("lines_rejected").

Every line stands alone: a bad line (not UTF-8, not JSON, nested too deeply, a number too
large, longer than --max-line-bytes, a missing or mistyped field, a gold message that cannot
be read) prints one {"line": N, "error": "..."} to stderr and the rest are still scored.
Strings are written as UTF-8; one holding a lone surrogate is written escaped.

Exit status: 0 when at least one line was scored; 1 when none could be (an empty input
included), and with --strict also when any line was rejected.
"""

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from toolcalls.errors import FieldError
from toolcalls.jsonl import DEFAULT_MAX_LINE_BYTES, dumps_line, read_jsonl_lines
from toolcalls.score import HEADLINE_METRICS, score_case, summarize

ROW_EXTRAS = ("false_call", "missed_call", "calls_tp", "calls_predicted", "calls_expected")


def _case_from_record(case):
    """Validate one decoded line; return score_case arguments or raise ValueError."""
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


def _message(error: FieldError) -> str:
    return f"{error.field}: {error.message}" if error.field else error.message


def score_jsonl(source, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
    """Score a JSONL source: a binary file, or an iterable of lines (str or bytes).

    Returns (case_rows, summary, errors): one flat row per good line, the
    ``summarize`` result over them (with by_category / by_turn_depth), and
    [{"line": N, "error": "..."}] for bad lines, one per line. Blank lines are skipped;
    line numbers count from 1.
    """
    rows, scores, cats, depths, errors = [], [], [], [], []
    for n, record in read_jsonl_lines(source, max_line_bytes):
        if isinstance(record, FieldError):
            errors.append({"line": n, "error": _message(record)})
            continue
        try:
            expected, output, tools, stopped, categories, depth = _case_from_record(record)
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
        parser.add_argument(
            "--max-line-bytes",
            type=int,
            default=getattr(settings, "IMPORT_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES),
            help="longer lines are reported and skipped without being read whole "
            "(default: the import limit, IMPORT_MAX_LINE_BYTES)",
        )
        parser.add_argument(
            "--strict", action="store_true", help="exit with status 1 when any line is rejected"
        )

    def handle(self, *args, **options):
        path = options["cases"]
        max_bytes = options["max_line_bytes"]
        if max_bytes < 1:
            raise CommandError("--max-line-bytes must be a positive number of bytes")
        if path == "-":
            rows, summary, errors = score_jsonl(sys.stdin, max_bytes)
        else:
            try:
                with open(path, "rb") as fh:
                    rows, summary, errors = score_jsonl(fh, max_bytes)
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc}") from None
        plain = lambda s: s  # noqa: E731 - no colour codes inside JSON
        for err in errors:
            self.stderr.write(dumps_line(err), style_func=plain)
        if not options["summary_only"]:
            for row in rows:
                self.stdout.write(dumps_line(row))
        summary = {"summary": True, "lines_scored": len(rows), "lines_rejected": len(errors), **summary}
        self.stdout.write(dumps_line(summary))
        if not rows:
            raise CommandError(f"no line could be scored ({len(errors)} rejected)")
        if errors and options["strict"]:
            raise CommandError(f"{len(errors)} line(s) rejected")
