"""schemathesis over the whole API, every operation as every role, many examples each.

    python benchmarks/schema_fuzz.py [--examples 50] [--positive-only]

The same checks as tests/test_schema_fuzz.py (tests/schema_fuzzing.py): no 5xx, responses match
the OpenAPI schema, no row of another project in any body, and (negative data: values the schema
forbids) a 4xx, never a 5xx; here every operation runs as the
annotator, lead and admin of project A and as the admin of project B, on a fresh benchmark
database (PostgreSQL by default). Prints one JSON line, kept in benchmarks/results/schemathesis.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import report, setup_django  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/badcase_schemafuzz"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50, help="examples per operation, role and mode")
    parser.add_argument(
        "--positive-only", action="store_true", help="only data the schema allows (no negative data)"
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    setup_django(os.environ.get("SCHEMA_FUZZ_DATABASE_URL", DEFAULT_DB), fresh=True)
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from config import login_throttle
    from tests.schema_fuzzing import ROLES, build_world, run

    settings.ALLOWED_HOSTS = ["*"]
    login_throttle.clear_all()
    world = build_world(
        lambda name: get_user_model().objects.create_user(username=name, password="pw-" + name)
    )
    start = time.perf_counter()
    counts = run(world, max_examples=args.examples, roles=ROLES, negative=not args.positive_only)
    for f in counts["failures"]:
        print(f"{f['operation']} as {f['role']}: {f['error']}\n{f['detail']}\n", file=sys.stderr)
    report(
        "schemathesis",
        {
            "operations": counts["operations"],
            "roles": counts["roles"],
            "examples_per_operation_role_and_mode": args.examples,
            "modes": counts["modes"],
            "requests": counts["requests"],
            "checks_passed": counts["checks_passed"],
            "failures": len(counts["failures"]),
            "failed": [f"{f['operation']} as {f['role']}: {f['error']}" for f in counts["failures"]],
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    main()
