import pytest
import yaml
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]


def test_healthz_is_503_when_the_broker_is_unreachable(client, monkeypatch):
    from config.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    app.pool.force_close_all()
    response = client.get("/healthz")
    app.pool.force_close_all()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


def test_openapi_schema_is_valid_and_covers_every_family(client, make_user):
    client.force_login(make_user("reader"))
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate(schema)
    paths = set(schema["paths"])
    for family in (
        "projects",
        "memberships",
        "model-versions",
        "conversations",
        "responses",
        "categories",
        "labels",
        "corrections",
        "preferences",
        "reviews",
        "imports",
    ):
        assert f"/api/{family}/" in paths, family


def test_api_docs_page_is_served_offline(client, make_user):
    client.force_login(make_user("reader"))
    html = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()
