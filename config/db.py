"""Database helpers shared by the apps."""

import functools
import logging
import random
import time

from django.db import OperationalError, connection

log = logging.getLogger(__name__)

# PostgreSQL SQLSTATEs that mean "the other transaction won; run yours again": deadlock detected and
# serialization failure. Everything the transaction wrote was rolled back, so a rerun is safe.
RETRYABLE_SQLSTATES = {"40P01", "40001"}


def _retryable(exc: OperationalError) -> bool:
    cause = exc.__cause__
    return getattr(cause, "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_on_conflict(fn=None, *, attempts: int = 3, base_delay_s: float = 0.05):
    """Run a function that opens its own transaction again when PostgreSQL aborts it as a deadlock victim
    or for a serialization failure (up to `attempts` times, with a short jittered pause).

    Only the outermost call retries: inside an enclosing transaction the error belongs to that one.
    """

    def wrap(func):
        @functools.wraps(func)
        def run(*args, **kwargs):
            for attempt in range(1, attempts + 1):
                try:
                    return func(*args, **kwargs)
                except OperationalError as exc:
                    if attempt == attempts or connection.in_atomic_block or not _retryable(exc):
                        raise
                    log.warning(
                        "%s: %s (attempt %d of %d); running it again",
                        func.__qualname__,
                        exc.__cause__.__class__.__name__,
                        attempt,
                        attempts,
                    )
                    time.sleep(base_delay_s * attempt * (1 + random.random()))
            raise AssertionError("unreachable")

        return run

    return wrap(fn) if fn is not None else wrap


class TableStats:
    """Keeps PostgreSQL's row estimates of tables that one long job grows fast.

    A table that was small when the planner last looked (never analysed, or autovacuum off or behind)
    gets plans for a small table: at a million rows a batch's lookup by a unique key turned into a scan
    of the whole project. `grew(n)` runs ANALYZE each time the rows added since the last one reach the
    table's size then (so about log2(growth) times, each a sample of 30k rows). Other databases: no-op.
    """

    def __init__(self, *models, floor: int = 10_000):
        self.tables = [m._meta.db_table for m in models]
        self.floor = floor
        self.added = 0
        self.known = self._estimate() if connection.vendor == "postgresql" else 0

    def _estimate(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COALESCE(SUM(GREATEST(reltuples, 0)), 0) FROM pg_class WHERE relname = ANY(%s)",
                [self.tables],
            )
            return int(cursor.fetchone()[0])

    def grew(self, rows: int) -> bool:
        """Count rows added; ANALYZE (outside any transaction of the caller's) when they double the table."""
        if connection.vendor != "postgresql":
            return False
        self.added += rows
        if connection.in_atomic_block or self.added < max(self.floor, self.known):
            return False
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE " + ", ".join(connection.ops.quote_name(t) for t in self.tables))
        self.known, self.added = self._estimate(), 0
        return True
