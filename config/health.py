"""/healthz: is the database reachable, is the broker reachable. JSON, 200 or 503."""

import time

from django.db import connection
from django.http import JsonResponse


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _check_broker():
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return {
            "transport": conn.transport_cls
            if isinstance(conn.transport_cls, str)
            else conn.transport.driver_type
        }


def healthz(request):
    checks, ok = {}, True
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        start = time.perf_counter()
        try:
            detail = check()
            checks[name] = {"ok": True, **detail}
        except Exception as exc:  # any failure is the answer, not a 500
            ok = False
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        checks[name]["ms"] = round(1000 * (time.perf_counter() - start), 1)
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
