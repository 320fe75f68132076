"""schemathesis against our own OpenAPI schema, in-process over WSGI, once per role's token.

Shared by tests/test_schema_fuzz.py (a couple of examples per operation) and
benchmarks/schema_fuzz.py (many more). For every operation and every role: no 5xx, the response
matches the schema (documented status codes, content type, body), and no row of a project the
user is not a member of shows up anywhere in the body.
"""

import itertools
from dataclasses import dataclass, field

import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from annotator.models import Label, Membership, Project, Role, Status
from annotator.taxonomy import seed_default_taxonomy

from .conftest import TOOLS, make_conversation

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# negative data (values the schema forbids): the answer must be a 4xx, never a 5xx; a 4xx body need
# not match the success schema
NEGATIVE_CHECKS = [not_a_server_error]
ROLES = ("annotator", "lead", "admin", "outsider")
# Operations whose job is to start work on a worker or the GPU: a fuzzed request would queue real jobs.
SKIP = {("POST", "/api/training-jobs/"), ("POST", "/api/online-runs/"), ("POST", "/api/eval-runs/")}


@dataclass
class World:
    tokens: dict
    member_of: dict  # role -> set of project ids it may see
    projects: dict  # project id -> slug
    results: dict = field(default_factory=dict)


def build_world(make_user) -> World:
    """Project A (annotator, lead, admin) and project B (its admin is the outsider), each with data."""
    a = Project.objects.create(name="Sales agent", slug="sales", tools=TOOLS)
    b = Project.objects.create(name="Other", slug="other-secret", tools=TOOLS)
    users = {}
    for role, project in (("annotator", a), ("lead", a), ("admin", a), ("outsider", b)):
        users[role] = make_user(f"sf-{role}")
        Membership.objects.create(
            user=users[role], project=project, role={"outsider": Role.ADMIN}.get(role, role)
        )
    for project, annotator in ((a, users["annotator"]), (b, users["outsider"])):
        seed_default_taxonomy(project)
        for i in range(2):
            _, responses = make_conversation(project, i + (0 if project is a else 100), n_responses=2)
            Label.objects.create(
                response=responses[0], annotator=annotator, verdict="unreasonable", status=Status.SUBMITTED
            )
    return World(
        tokens={role: Token.objects.create(user=user).key for role, user in users.items()},
        member_of={role: {b.pk} if role == "outsider" else {a.pk} for role in users},
        projects={a.pk: a.slug, b.pk: b.slug},
    )


def leaks(body, allowed: set, projects: dict) -> list[str]:
    """Places in a JSON body that name a project outside `allowed` (by id or slug)."""
    foreign_ids = {pk for pk in projects if pk not in allowed}
    foreign_slugs = {projects[pk] for pk in foreign_ids}
    found, stack = [], [(body, "$")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(value, (int, str)):
                    pass
                elif key in ("project", "project_id") and (value in foreign_ids or value in foreign_slugs):
                    found.append(f"{path}.{key}={value!r}")
                elif key in ("slug", "project_slug") and value in foreign_slugs:
                    found.append(f"{path}.{key}={value!r}")
                stack.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
    return found


def load_schema():
    from config.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


def operations(schema):
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in SKIP:
            yield op


def run(
    world: World, max_examples: int, roles=ROLES, rotate: bool = False, only: str = "", negative: bool = False
) -> dict:
    """Fuzz every operation as every role; returns counts and the failures (never raises).

    rotate: the quick in-suite mode: each operation as one role in turn, plus every list
    operation (where a leak would show) as every role. negative: also send data the schema forbids
    (wrong types, out-of-range numbers, missing fields), which must be refused with a 4xx."""
    # Like Django's test client: the WSGI handler must not close the connection the test runs in.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        return _run(world, max_examples, roles, rotate, only, negative)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _run(world: World, max_examples: int, roles, rotate: bool, only: str, negative: bool) -> dict:
    schema = load_schema()
    ops = [op for op in operations(schema) if only in f"{op.method.upper()} {op.path}"]
    counts = {"operations": len(ops), "roles": list(roles), "requests": 0, "checks_passed": 0, "failures": []}
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negative else [GenerationMode.POSITIVE]
    counts["modes"] = [m.value for m in modes]
    for (i, op), mode in itertools.product(enumerate(ops), modes):
        strategy = op.as_strategy(generation_mode=mode)
        checks = CHECKS if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS
        listing = op.method.upper() == "GET" and "{" not in op.path
        for role in roles if not rotate or listing else [roles[i % len(roles)]]:
            try:
                _fuzz(strategy, role, world, max_examples, counts, checks)()
            except Unsatisfiable:  # negative mode, an operation whose only input is a free string (a slug)
                counts["no_negative_data"] = counts.get("no_negative_data", 0) + 1
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 (collected, reported together)
                text = str(exc).strip().splitlines()
                text = text[:12] + [line.strip() for line in text[12:] if "curl " in line]  # the reproduction
                counts["failures"].append(
                    {
                        "operation": f"{op.method.upper()} {op.path} ({mode.value})",
                        "role": role,
                        "error": type(exc).__name__,
                        "detail": "\n".join(text),
                    }
                )
    return counts


def _fuzz(strategy, role, world, max_examples, counts, checks):
    headers = {"Authorization": f"Token {world.tokens[role]}"}

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case):
        response = case.call(headers=headers)
        counts["requests"] += 1
        case.validate_response(response, checks=checks)
        counts["checks_passed"] += len(checks)
        if "json" in (response.headers.get("content-type") or [""])[0] and response.content:
            found = leaks(response.json(), world.member_of[role], world.projects)
            assert not found, f"{role} sees another project's rows: {found[:5]}"
            counts["checks_passed"] += 1

    return check
