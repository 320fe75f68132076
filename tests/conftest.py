import json
import os

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from annotator.models import (
    Conversation,
    Membership,
    ModelResponse,
    ModelVersion,
    Project,
    Role,
    content_hash,
)
from annotator.taxonomy import seed_default_taxonomy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_inventory",
            "description": "Stock for a SKU",
            "parameters": {
                "type": "object",
                "properties": {"sku": {"type": "string"}},
                "required": ["sku"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_order",
            "description": "Place an order",
            "parameters": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
                "required": ["sku", "quantity"],
            },
        },
    },
]


def conversation_record(i: int, **extra) -> dict:
    record = {
        "external_id": f"c-{i}",
        "messages": [
            {"role": "system", "content": "You are a sales assistant."},
            {"role": "user", "content": f"Is A-{i} in stock?"},
        ],
        "tools": TOOLS,
        "responses": [
            {
                "model": "agent-v1",
                "raw": (
                    f'<tool_call>{{"name": "check_inventory", "arguments": {{"sku": "A-{i}"}}}}</tool_call>'
                ),
            }
        ],
    }
    record.update(extra)
    return record


def jsonl(records) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n").encode()


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def plain_http(settings):
    """The test client and live servers speak plain HTTP: no redirect to HTTPS even with DEBUG=0 (CI).
    tests/test_security.py checks the production settings themselves."""
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture(autouse=True, scope="session")
def local_models_and_endpoints(tmp_path_factory):
    """Tests build tiny models under pytest's temp folder and serve stub endpoints on loopback: both are
    allowed here, also in worker processes (through the environment) and with DEBUG=0 (CI).
    tests/test_outbound.py checks the rules themselves."""
    from django.conf import settings
    from django.test import override_settings

    base = str(tmp_path_factory.getbasetemp())
    env = {"MODEL_EXTRA_DIRS": base, "MODEL_ENDPOINT_ALLOWED_HOSTS": "localhost,127.0.0.1,::1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    with override_settings(
        MODEL_FOLDER_ROOTS=[*settings.MODEL_FOLDER_ROOTS, base],
        MODEL_ENDPOINT_ALLOWED_HOSTS=env["MODEL_ENDPOINT_ALLOWED_HOSTS"].split(","),
    ):
        yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def make_user(db):
    def make(username, **kwargs):
        return get_user_model().objects.create_user(username=username, password="pw-" + username, **kwargs)

    return make


@pytest.fixture
def project(db):
    p = Project.objects.create(
        name="Sales agent", slug="sales", tools=TOOLS, guidelines="# Guide\nBe **strict**."
    )
    seed_default_taxonomy(p)
    return p


@pytest.fixture
def other_project(db):
    return Project.objects.create(name="Other", slug="other", tools=TOOLS)


@pytest.fixture
def members(project, other_project, make_user):
    """One user per role in `project`, plus an outsider who is an admin elsewhere."""
    users = {}
    for role in (Role.ANNOTATOR, Role.LEAD, Role.ADMIN):
        users[role] = make_user(role)
        Membership.objects.create(user=users[role], project=project, role=role)
    users["annotator2"] = make_user("annotator2")
    Membership.objects.create(user=users["annotator2"], project=project, role=Role.ANNOTATOR)
    users["outsider"] = make_user("outsider")
    Membership.objects.create(user=users["outsider"], project=other_project, role=Role.ADMIN)
    return users


@pytest.fixture
def api():
    def client_for(user=None):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return client_for


def make_conversation(project, i=0, split="train", n_responses=1):
    messages = [{"role": "user", "content": f"Is A-{i} in stock?"}]
    conv = Conversation.objects.create(
        project=project,
        external_id=f"conv-{i}",
        messages=messages,
        tools=project.tools,
        content_hash=content_hash(messages, project.tools),
        split=split,
    )
    mv, _ = ModelVersion.objects.get_or_create(project=project, name="agent-v1")
    responses = []
    for k in range(n_responses):
        msg = {"role": "assistant", "content": f"Answer {k} about A-{i}, let me check that for you."}
        responses.append(
            ModelResponse.objects.create(
                conversation=conv,
                model_version=mv,
                context_length=1,
                message=msg,
                response_hash=content_hash(msg),
            )
        )
    return conv, responses


@pytest.fixture
def conversation(project):
    return make_conversation(project, 1, n_responses=2)
