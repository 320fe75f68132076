"""A dashboard page's data by name (PAGES), from a short-lived cache; the analytics settings on PostgreSQL."""

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from .agreement import agreement
from .annotators import annotators
from .filters import Filters
from .overview import overview
from .versions import model_comparison

PAGES = {"overview": overview, "annotators": annotators, "agreement": agreement, "models": model_comparison}


def cache_key(page: str, project, f: Filters) -> str:
    # the project's creation time keeps a re-created project (same id, e.g. in tests) off old entries
    return f"dash:v1:{project.pk}:{int(project.created_at.timestamp() * 1e6)}:{page}:{f.key()}"


def cache_seconds() -> int:
    from django.conf import settings

    return getattr(settings, "DASHBOARD_CACHE_SECONDS", 300)


def run_analytics(fn, *args):
    """Run a dashboard function; on PostgreSQL with room to hash and sort in memory and without JIT.

    The aggregates group up to a million rows: the default 4 MB work_mem spills them to disk, and
    JIT compilation costs more than it saves on queries this size. SET LOCAL lasts one transaction.
    """
    if connection.vendor != "postgresql":
        return fn(*args)
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
        return fn(*args)


def compute(page: str, project, f: Filters, fresh: bool = False) -> dict:
    """A dashboard's data, from a short-lived cache keyed by project, page and filters.

    DASHBOARD_CACHE_SECONDS (default 300; 0 turns it off) bounds how stale a number can be. The
    overview, annotator and model pages compute from the roll-ups in tens of milliseconds even cold;
    the cache still spares the agreement page, which reads the multiply-judged labels themselves
    (benchmarks/results/dashboards_1000000.json). `fresh` recomputes and refreshes the cache (the
    page's "recompute now" link). Every page shows when its numbers were computed.
    """
    ttl = cache_seconds()
    key = cache_key(page, project, f)
    if ttl and not fresh:
        hit = cache.get(key)
        if hit is not None:
            return hit
    data = run_analytics(PAGES[page], project, f)
    data["computed_at"] = timezone.now()
    if ttl:
        cache.set(key, data, ttl)
    return data
