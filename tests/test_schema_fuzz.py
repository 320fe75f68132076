"""schemathesis over the OpenAPI schema with each role's token (bounded; benchmarks/schema_fuzz.py runs
more)."""

import pytest

from config import login_throttle

from .schema_fuzzing import build_world, leaks, run


@pytest.mark.django_db
def test_api_under_schemathesis_as_every_role(make_user):
    login_throttle.clear_all()
    world = build_world(make_user)
    counts = run(world, max_examples=1, rotate=True, negative=True)
    assert counts["operations"] > 50 and counts["requests"] > 2 * counts["operations"]
    assert counts["modes"] == ["positive", "negative"]
    assert counts["failures"] == [], "\n\n".join(
        f"{f['operation']} as {f['role']}: {f['error']}\n{f['detail']}" for f in counts["failures"]
    )


def test_leak_finder_names_foreign_rows():
    body = {
        "results": [
            {"id": 1, "project": "sales"},
            {"id": 2, "project": "other-secret"},
            {"nested": [{"project": 7}]},
        ]
    }
    assert leaks(body, {1}, {1: "sales", 7: "other-secret"}) == [
        "$.results[2].nested[0].project=7",
        "$.results[1].project='other-secret'",
    ]


@pytest.mark.django_db
def test_value_the_database_cannot_hold_is_a_400_not_a_500(members, api):
    """Found by schemathesis on PostgreSQL: a +17:34 UTC offset in a datetime filter raised DataError."""
    response = api(members["admin"]).get(
        "/api/labels/?submitted_at__lte=0111-10-24T17%3A17%3A38.69%2B17%3A34"
    )
    assert response.status_code in (200, 400)  # SQLite answers; PostgreSQL refuses the value -> 400
