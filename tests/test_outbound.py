"""Endpoint keys are write-only secrets; outbound calls and model folders go only where allowed.

- an endpoint key lives in ModelVersion.api_key, never in metadata, never in an answer, page or history;
- inference/endpoints.py: which URLs the server may call (checked when given and when connecting);
- inference/model_folders.py: which folders a model version may name (checked when given and at load).
"""

import importlib
import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.apps import apps as django_apps

from annotator.model_lineage import ModelNotFound, model_paths
from annotator.models import ModelVersion, Role
from evaluation import runner
from inference.client import ChatClient, EndpointError
from inference.endpoints import check_endpoint_url
from inference.model_folders import check_model_folder
from training.judge.judges import EndpointJudge

from .test_eval_support import make_suite

LOOPBACK = ["127.0.0.1"]  # the stub servers below listen on loopback, which a client must be told to allow

SECRET = "sk-live-0123456789abcdef"
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_backoff_sleep():
    with mock.patch("inference.client.time.sleep"):
        yield


@contextmanager
def serve(answer):
    """A local HTTP server; answer(handler) -> (status, headers, body bytes). Yields (base URL, requests)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            status, headers, body = answer(self)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def fake_dns(table):
    """A getaddrinfo that answers names from `table` ({name: [ip, ...]}) and passes the rest on."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            ips = table[host]() if callable(table[host]) else table[host]
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, port) if ":" not in ip else (ip, port, 0, 0),
                )
                for ip in ips
            ]
        return real(host, port, *args, **kwargs)

    return getaddrinfo


# ======================================================================== finding 1: keys


@pytest.fixture
def keyed(project):
    """An external judge endpoint with a key, made the way an admin makes one through the API."""
    return ModelVersion.objects.create(
        project=project,
        name="gpt-judge",
        origin="external",
        api_key=SECRET,
        metadata={"judge": True, "base_url": "http://127.0.0.1:9/v1", "model": "j"},
    )


def test_no_member_ever_reads_the_key(api, members, keyed):
    for role in (Role.ANNOTATOR, Role.LEAD, Role.ADMIN):
        client = api(members[role])
        listing = client.get("/api/model-versions/", {"project__slug": "sales"})
        detail = client.get(f"/api/model-versions/{keyed.pk}/")
        assert listing.status_code == detail.status_code == 200
        for response in (listing, detail):
            assert SECRET not in response.content.decode()
        assert detail.json()["api_key_set"] is True and "api_key" not in detail.json()
        assert "api_key" not in detail.json()["metadata"]
        judges = client.get("/api/judges/")
        assert SECRET not in judges.content.decode()
        if role != Role.ANNOTATOR:  # leads and admins see judges, as set/not set
            assert judges.json()["results"][0]["api_key_set"] is True


def test_the_key_is_written_never_read_back(api, members, project):
    admin = api(members[Role.ADMIN])
    made = admin.post(
        "/api/model-versions/",
        {
            "project": "sales",
            "name": "served",
            "origin": "external",
            "api_key": SECRET,
            "metadata": {"base_url": "http://127.0.0.1:9/v1"},
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    assert SECRET not in made.content.decode() and made.json()["api_key_set"] is True
    version = ModelVersion.objects.get(pk=made.json()["id"])
    assert version.api_key == SECRET and "api_key" not in version.metadata
    # a key sent inside metadata lands in the field, not in metadata
    patched = admin.patch(
        f"/api/model-versions/{version.pk}/",
        {"metadata": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-other"}},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    assert "sk-other" not in patched.content.decode()
    version.refresh_from_db()
    assert version.api_key == "sk-other" and version.metadata == {"base_url": "http://127.0.0.1:9/v1"}
    # history keeps no key either, in metadata or beside it
    for row in version.history.all():
        assert "api_key" not in (row.metadata or {}) and not hasattr(row, "api_key")
    # a PATCH without it keeps it; an empty one clears it
    assert admin.patch(f"/api/model-versions/{version.pk}/", {"notes": "x"}, format="json").json()[
        "api_key_set"
    ]
    cleared = admin.patch(f"/api/model-versions/{version.pk}/", {"api_key": ""}, format="json")
    assert cleared.json()["api_key_set"] is False


def test_the_admin_shows_a_password_input_never_the_key(client, make_user, keyed):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    html = client.get(f"/admin/annotator/modelversion/{keyed.pk}/change/").content.decode()
    assert SECRET not in html and 'type="password"' in html
    listing = client.get("/admin/annotator/modelversion/").content.decode()
    assert SECRET not in listing


def test_the_judge_sends_the_key_from_the_field(keyed):
    assert EndpointJudge(keyed).client.api_key == SECRET
    assert SECRET not in repr(EndpointJudge(keyed).client)


def test_the_migration_moves_keys_out_of_metadata_and_history(project):
    migration = importlib.import_module("annotator.migrations.0013_modelversion_api_key")
    old = ModelVersion.objects.create(
        project=project,
        name="old-judge",
        origin="external",
        metadata={"base_url": "http://127.0.0.1:9/v1", "api_key": SECRET},
    )
    plain = ModelVersion.objects.create(project=project, name="plain", metadata={"x": 1})
    assert old.history.get().metadata["api_key"] == SECRET  # what the old code left in the history rows
    migration.move_keys_out_of_metadata(django_apps, None)
    old.refresh_from_db()
    plain.refresh_from_db()
    assert old.api_key == SECRET and old.metadata == {"base_url": "http://127.0.0.1:9/v1"}
    assert plain.metadata == {"x": 1} and plain.api_key == ""
    assert "api_key" not in old.history.get().metadata
    migration.keys_back_into_metadata(django_apps, None)  # the way back keeps the key
    old.refresh_from_db()
    assert old.metadata["api_key"] == SECRET


# =================================================================== finding 2: outbound


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "http://0/",
        "http://0.0.0.0:8000/v1",
        "http://2130706433/",
        "http://0x7f.1/v1",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://user:pass@127.0.0.1:8000/v1",
        "ftp://127.0.0.1/v1",
    ],
)
def test_hostile_urls_are_refused(url):
    with pytest.raises(ValueError):
        check_endpoint_url(url, allowed_hosts=[])


def test_metadata_addresses_are_refused_even_when_listed():
    for url in ("http://169.254.169.254/", "http://[::ffff:169.254.169.254]/", "http://0/"):
        with pytest.raises(ValueError):
            check_endpoint_url(url, allowed_hosts=["169.254.169.254", "0", "0.0.0.0/0", "::/0"])


def test_loopback_and_private_only_for_listed_hosts(monkeypatch):
    with pytest.raises(ValueError, match="MODEL_ENDPOINT_ALLOWED_HOSTS"):
        check_endpoint_url("http://127.0.0.1:8000/v1", allowed_hosts=[])
    assert check_endpoint_url("http://127.0.0.1:8000/v1", ["localhost", "127.0.0.1", "::1"])
    assert check_endpoint_url("http://localhost:8000/v1", ["localhost"])
    assert check_endpoint_url("http://[::1]:8000/v1", ["::1"])
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        fake_dns(
            {
                "gpu-1.internal": ["10.0.0.5"],
                "api.example.com": ["93.184.216.34"],
                "sneaky.example.com": ["93.184.216.34", "169.254.169.254"],
                "cluster.internal": ["10.2.3.4"],
            }
        ),
    )
    with pytest.raises(ValueError, match="resolves to 10.0.0.5"):
        check_endpoint_url("http://gpu-1.internal:8000/v1", allowed_hosts=["localhost"])
    assert check_endpoint_url("http://gpu-1.internal:8000/v1", ["gpu-1.internal"])
    assert check_endpoint_url("http://cluster.internal/v1", ["10.0.0.0/8"])
    assert check_endpoint_url("https://api.example.com/v1", [])  # public: no listing needed
    with pytest.raises(ValueError, match="169.254.169.254"):  # every resolved address counts
        check_endpoint_url("https://sneaky.example.com/v1", [])


def test_the_client_checks_again_when_it_connects(monkeypatch):
    with serve(lambda h: (200, {}, b"{}")) as (url, seen):
        with pytest.raises(EndpointError, match="refused"):  # not listed (any more): no request leaves
            ChatClient(url, "m", allowed_hosts=[]).complete([{"role": "user", "content": "Hi"}], None)
        assert seen == []
    answers = iter([["93.184.216.34"], ["169.254.169.254"]])  # DNS rebinding: public when checked, then not
    monkeypatch.setattr(socket, "getaddrinfo", fake_dns({"rebind.example.com": lambda: next(answers)}))
    assert check_endpoint_url("http://rebind.example.com/v1", [])
    with pytest.raises(EndpointError, match="cloud metadata"):
        ChatClient("http://rebind.example.com/v1", "m", allowed_hosts=[]).complete(
            [{"role": "user", "content": "Hi"}], None
        )


def test_redirects_are_not_followed():
    with serve(lambda h: (200, {}, b'{"choices": []}')) as (target, target_seen):
        with serve(lambda h: (302, {"Location": target + "/chat/completions"}, b"")) as (url, seen):
            with pytest.raises(EndpointError, match="HTTP 302: the endpoint redirects"):
                ChatClient(url, "m", allowed_hosts=LOOPBACK).complete(
                    [{"role": "user", "content": "Hi"}], None
                )
    assert len(seen) == 1 and target_seen == []


LONG_BODY = (
    "<html>internal admin console \x1b[31m token=abc " + "x" * 4000 + " TAIL-OF-THE-BODY</html>"
).encode()


def test_a_remote_error_body_is_shown_as_a_short_excerpt(client, members, project, keyed):
    with serve(lambda h: (400, {"Content-Type": "text/html"}, LONG_BODY)) as (url, _):
        with pytest.raises(EndpointError) as exc:
            ChatClient(url, "m", allowed_hosts=LOOPBACK).complete([{"role": "user", "content": "Hi"}], None)
        message = str(exc.value)
        assert message.startswith("HTTP 400: <html>internal admin console") and len(message) < 230
        assert "\x1b" not in message and "TAIL-OF-THE-BODY" not in message

        suite = make_suite(project, 2)
        run = runner.create_run(
            project, suite, keyed, source="endpoint", start=False, settings={"base_url": url, "model": "m"}
        )
        run = runner.run_eval(run.pk)
        keyed.metadata = {**keyed.metadata, "base_url": url}
        verdicts = EndpointJudge(keyed).verdicts([[{"role": "user", "content": "A or B?"}]])
    assert run.status == "failed" and "HTTP 400" in run.message and "TAIL-OF-THE-BODY" not in run.message
    assert len(run.message) < 400
    client.force_login(members[Role.LEAD])
    page = client.get(f"/p/{project.slug}/eval/runs/{run.pk}/").content.decode()
    assert "internal admin console" in page and "TAIL-OF-THE-BODY" not in page
    assert "TAIL-OF-THE-BODY" not in verdicts[0].reason and len(verdicts[0].reason) <= 300


def test_endpoints_are_refused_when_given(api, client, members, project, settings):
    settings.MODEL_ENDPOINT_ALLOWED_HOSTS = []
    suite = make_suite(project, 2)
    version = ModelVersion.objects.create(project=project, name="served", origin="external")
    admin = api(members[Role.ADMIN])
    bad = admin.post(
        "/api/eval-runs/",
        {
            "project": "sales",
            "suite": suite.pk,
            "model_version": version.pk,
            "source": "endpoint",
            "settings": {"base_url": "http://127.0.0.1:6379/", "model": "m"},
        },
        format="json",
    )
    assert bad.status_code == 400 and "base_url" in bad.content.decode()
    assert "MODEL_ENDPOINT_ALLOWED_HOSTS" in bad.content.decode()
    bad = admin.post(
        "/api/model-versions/",
        {
            "project": "sales",
            "name": "meta",
            "origin": "external",
            "metadata": {"base_url": "http://169.254.169.254/v1"},
        },
        format="json",
    )
    assert bad.status_code == 400 and "base_url" in bad.json()["metadata"]
    client.force_login(members[Role.ADMIN])
    page = client.post(
        f"/p/{project.slug}/eval/runs/new/",
        {
            "suite": suite.pk,
            "model_version": version.pk,
            "source": "endpoint",
            "base_url": "http://2130706433/v1",
            "endpoint_model": "m",
        },
    ).content.decode()
    assert "is a number, not a name" in page
    page = client.post(
        f"/p/{project.slug}/training/judges/external/",
        {"name": "meta-judge", "base_url": "http://169.254.169.254/"},
        follow=True,
    ).content.decode()
    assert "cloud metadata address" in page and not ModelVersion.objects.filter(name="meta-judge").exists()


# ================================================================== finding 3: folders


@pytest.fixture
def model_dir(tmp_path, settings):
    root = tmp_path / "models"
    (root / "base").mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    (root / "escape").symlink_to(tmp_path / "secrets")
    settings.MODEL_DIR = root
    settings.MODEL_FOLDER_ROOTS = [root]
    return root


def test_model_folders_must_lie_under_model_dir(model_dir):
    assert check_model_folder(str(model_dir / "base"), [model_dir]) == str(model_dir / "base")
    assert check_model_folder("base", [model_dir]) == str(model_dir / "base")  # relative to MODEL_DIR
    for path in (
        "/etc",
        str(model_dir / ".." / "secrets"),
        "../secrets",
        str(model_dir / "escape"),
        "escape/x",
    ):
        with pytest.raises(ValueError, match="is not a folder under"):
            check_model_folder(path, [model_dir])


def test_the_api_refuses_folders_outside_model_dir(api, members, model_dir):
    admin = api(members[Role.ADMIN])
    for field, path in (
        ("path", "/etc"),
        ("path", "../secrets"),
        ("adapter_path", str(model_dir / "escape")),
    ):
        bad = admin.post(
            "/api/model-versions/", {"project": "sales", "name": "x", field: path}, format="json"
        )
        assert bad.status_code == 400 and field in bad.json(), bad.content
    good = admin.post(
        "/api/model-versions/",
        {"project": "sales", "name": "ok", "path": str(model_dir / "base")},
        format="json",
    )
    assert good.status_code == 201, good.content


def test_loading_checks_the_folder_again(project, model_dir):
    version = ModelVersion.objects.create(project=project, name="swapped", path=str(model_dir / "escape"))
    with pytest.raises(ModelNotFound, match="refused"):  # a symlink planted after the API check
        model_paths(version)
    fine = ModelVersion.objects.create(project=project, name="fine", path="base")
    assert model_paths(fine) == (str(model_dir / "base"), [])


def test_json_answers_still_parse(api, members):
    """The plain path keeps working: a chat answer from an allowed local endpoint."""
    answer = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
    with serve(lambda h: (200, {"Content-Type": "application/json"}, json.dumps(answer).encode())) as (
        url,
        _,
    ):
        assert (
            ChatClient(url, "m", allowed_hosts=LOOPBACK)
            .complete([{"role": "user", "content": "Hi"}], None)
            .text
            == "ok"
        )
