"""Security hardening: CSRF on every POST route, login throttling (page, admin, API token),
`check --deploy` clean with production settings, secrets only from the environment."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.utils.regex_helper import normalize
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config import login_throttle

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ CSRF

SAMPLE = {
    "slug": "sales",
    "table": "pareto",
    "what": "label",
    "app_label": "annotator",
    "url": "x",
    "format": "json",
}


def _walk(patterns, prefix=""):
    for p in patterns:
        regex = p.pattern.regex.pattern.lstrip("^").rstrip("$").replace(r"\Z", "")
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + regex)
        elif isinstance(p, URLPattern):
            yield prefix + regex, p


def post_routes():
    """One concrete URL per URL pattern (admin included), filled with sample values."""
    urls = {}
    for regex, pattern in _walk(get_resolver().url_patterns):
        fmt, params = normalize(regex)[0]
        url = "/" + fmt % {name: SAMPLE.get(name, "1") for name in params}
        try:
            match = resolve(url)
        except Resolver404:
            continue
        if match.func is pattern.callback or getattr(match.func, "__wrapped__", None) is not None:
            urls[url] = match.view_name or url
    return urls


def test_every_post_route_refuses_a_request_without_csrf_token(project, members, make_user):
    boss = make_user("boss", is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(boss)
    routes = post_routes()
    assert len(routes) > 60  # pages, API, dashboards, admin
    allowed = []
    for url in routes:
        # no CSRF cookie either (an error page rendered with the token, e.g. a 403 page, sets one)
        client.cookies.pop(settings.CSRF_COOKIE_NAME, None)
        response = client.post(url, {"name": "x"})
        if response.status_code != 403:
            allowed.append((url, response.status_code))
    assert allowed == [], f"POST without a CSRF token was not refused: {allowed}"


def test_a_form_post_with_the_token_goes_through(members):
    client = Client(enforce_csrf_checks=True)
    client.force_login(members["annotator"])
    client.get("/")
    token = client.cookies["csrftoken"].value
    assert client.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302


def test_api_enforces_csrf_for_session_auth_but_not_for_token_auth(project, members):
    admin = members["admin"]
    payload = {"project": project.slug, "name": "New category"}
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(admin)
    refused = session.post("/api/categories/", payload, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]

    token = Token.objects.create(user=admin)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    created = client.post("/api/categories/", payload, format="json")
    assert created.status_code == 201, created.content


# ---------------------------------------------------------------------------- throttling


@pytest.fixture
def throttle(settings, db):
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_FAILURE_IP_LIMIT = 5
    settings.LOGIN_FAILURE_WINDOW = 600
    settings.LOGIN_LOCKOUT_SECONDS = 300
    login_throttle.clear_all()
    yield settings
    login_throttle.clear_all()


def login_page(client, username, password, ip="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_login_page_refuses_after_repeated_failures_then_allows_again(throttle, make_user, monkeypatch):
    make_user("ann")
    client = Client()
    for _ in range(3):
        assert login_page(client, "ann", "wrong").status_code == 200
    refused = login_page(client, "ann", "pw-ann")  # even the right password
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 300
    assert (
        "Too many failed login attempts" in refused.content.decode()
        and "Try again in 5 minutes" in refused.content.decode()
    )
    assert "_auth_user_id" not in client.session
    # Another username from another address is unaffected.
    make_user("bob")
    assert login_page(Client(), "bob", "pw-bob", ip="10.0.0.2").status_code == 302
    # After the lockout, the right password works and clears the count.
    now = login_throttle.time.time()
    monkeypatch.setattr(login_throttle.time, "time", lambda: now + 301)
    assert login_page(client, "ANN ", "pw-ann").status_code in (200, 302)  # same account, other spelling
    assert login_page(Client(), "ann", "pw-ann").status_code == 302


def test_one_address_trying_many_usernames_is_refused(throttle):
    client = Client()
    for i in range(5):
        assert login_page(client, f"user{i}", "guess", ip="10.9.9.9").status_code == 200
    assert login_page(client, "someone-else", "guess", ip="10.9.9.9").status_code == 429
    assert login_page(client, "someone-else", "guess", ip="10.9.9.8").status_code == 200


def test_api_token_endpoint_is_throttled_too(throttle, make_user):
    make_user("ann")
    client = APIClient()
    for _ in range(3):
        assert (
            client.post(
                "/api/auth/token/", {"username": "ann", "password": "nope"}, REMOTE_ADDR="10.1.1.1"
            ).status_code
            == 400
        )
    refused = client.post(
        "/api/auth/token/", {"username": "ann", "password": "pw-ann"}, format="json", REMOTE_ADDR="10.1.1.1"
    )
    assert refused.status_code == 429 and refused["Retry-After"] == "300"
    assert "Too many failed login attempts" in refused.json()["detail"]
    # The login page shares the count.
    assert login_page(Client(), "ann", "pw-ann", ip="10.1.1.2").status_code == 429
    ok = APIClient().post("/api/auth/token/", {"username": "bob", "password": "x"}, REMOTE_ADDR="10.1.1.3")
    assert ok.status_code == 400


def test_success_resets_the_username_count(throttle, make_user):
    make_user("ann")
    client = APIClient()
    for _ in range(2):
        client.post("/api/auth/token/", {"username": "ann", "password": "nope"}, REMOTE_ADDR="10.2.2.2")
    assert (
        client.post(
            "/api/auth/token/", {"username": "ann", "password": "pw-ann"}, REMOTE_ADDR="10.2.2.2"
        ).status_code
        == 200
    )
    for _ in range(2):
        client.post("/api/auth/token/", {"username": "ann", "password": "nope"}, REMOTE_ADDR="10.2.2.3")
    assert (
        client.post(
            "/api/auth/token/", {"username": "ann", "password": "pw-ann"}, REMOTE_ADDR="10.2.2.3"
        ).status_code
        == 200
    )


def test_admin_login_is_throttled(throttle, make_user):
    make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    for _ in range(3):
        assert (
            client.post(
                "/admin/login/", {"username": "root", "password": "x"}, REMOTE_ADDR="10.3.3.3"
            ).status_code
            == 200
        )
    refused = client.post(
        "/admin/login/", {"username": "root", "password": "pw-root"}, REMOTE_ADDR="10.3.3.3"
    )
    assert refused.status_code == 429 and b"Try again in" in refused.content


def test_client_ip_header_is_used_only_when_configured(throttle, rf):
    request = rf.post("/accounts/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_REAL_IP="1.2.3.4")
    assert login_throttle.client_ip(request) == "10.0.0.1"
    throttle.LOGIN_CLIENT_IP_HEADER = "HTTP_X_REAL_IP"
    assert login_throttle.client_ip(request) == "1.2.3.4"


# ---------------------------------------------------------------------- production settings


def manage(*args, **env):
    drop = {
        "DEBUG",
        "SECRET_KEY",
        "SECURE_COOKIES",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "DJANGO_ALLOW_ASYNC_UNSAFE",
    }  # the test run's own plain-HTTP switches (.ci/run) are not production's
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="badcase.example.com",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_without_secret_key_production_refuses_to_start():
    result = manage("check", DEBUG="0", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set in the environment when DEBUG is off" in result.stderr


def test_production_defaults(settings):
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_REDIRECT_EXEMPT, s.DEBUG)"
    )
    result = manage("shell", "-c", code, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50))
    assert result.stdout.splitlines()[-1].split() == [
        "True",
        "True",
        "True",
        "31536000",
        "['^healthz$']",
        "False",
    ], result.stderr
    off = manage(
        "shell",
        "-c",
        code,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="0",
        SECURE_COOKIES="0",
    )
    assert off.stdout.splitlines()[-1].split()[:4] == ["False", "False", "False", "0"], off.stderr


def test_passwords_are_hashed_not_stored(db):
    user = get_user_model().objects.create_user("hashed", password="correct horse")
    assert "correct horse" not in user.password
