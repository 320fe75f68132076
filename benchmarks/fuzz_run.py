"""Fuzz the importer and the metrics with many more examples than the suite runs.

    python benchmarks/fuzz_run.py [--examples 20000] [--import-examples 500]

The properties are tests/fuzz_strategies.py's (the same the suite checks with a few hundred
examples): a line is parsed or reported with a field, never raises; parse_output and score_case
never raise on any text; a whole hostile file imports its good lines and reports every bad one,
storing nothing from a rejected line (on the benchmark database, PostgreSQL by default, where NUL
characters and 64-bit integers used to break a batch). Prints one JSON line, kept in
benchmarks/results/fuzz.json.
"""

import argparse
import itertools
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import report, setup_django  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/badcase_fuzz"


def run_property(name, fn, strategies, examples, results):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    calls = itertools.count()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(*strategies))
    def prop(args):
        next(calls)
        fn(*args)

    start = time.perf_counter()
    try:
        prop()
        failure = None
    except Exception as exc:  # noqa: BLE001 (the failure is the figure)
        failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
    results[name] = {
        "cases": next(calls),
        "failure": failure,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{name}: {results[name]['cases']} cases, {'FAILED: ' + failure if failure else 'ok'}",
        file=sys.stderr,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per pure property")
    parser.add_argument(
        "--import-examples", type=int, default=500, help="whole files imported into the database"
    )
    args = parser.parse_args()

    setup_django(
        os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
        if "DATABASE_URL" not in os.environ
        else os.environ["DATABASE_URL"]
    )
    from django.conf import settings as django_settings
    from django.db import connection
    from hypothesis import strategies as st

    from annotator.models import Project
    from tests import fuzz_strategies as fz
    from tests.test_fuzz import check_import, file_lines

    media = tempfile.mkdtemp(prefix="fuzz-media-")
    django_settings.MEDIA_ROOT = media
    django_settings.IMPORT_MAX_LINE_BYTES = 4000

    def import_file(lines):
        try:
            check_import(lines)
        finally:
            Project.objects.filter(slug__startswith="fuzz-").delete()

    Project.objects.filter(slug__startswith="fuzz-").delete()
    n = args.examples
    results = {}
    start = time.perf_counter()
    run_property(
        "line_mutated", lambda r: fz.check_line(fz.encode_record(r)), [fz.mutated_records()], n, results
    )
    run_property("line_valid", lambda r: fz.check_line(fz.encode_record(r)), [fz.valid_records()], n, results)
    run_property("line_garbage", fz.check_line, [fz.garbage_lines], n, results)
    run_property("parse_output", fz.check_parse_output, [fz.raw_outputs, fz.tool_name_sets], n, results)
    run_property(
        "score_case",
        fz.check_score_case,
        [fz.gold_messages, fz.raw_outputs, fz.tool_lists, st.sampled_from([None, True, False])],
        n,
        results,
    )
    run_property("import_file", import_file, [file_lines], args.import_examples, results)
    report(
        "fuzz",
        {
            "cases": sum(r["cases"] for r in results.values()),
            "failures": sum(1 for r in results.values() if r["failure"]),
            "properties": results,
            "database": connection.vendor,
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    main()
