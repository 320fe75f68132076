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
                    log.warning("%s: %s (attempt %d of %d); running it again", func.__qualname__,
                                exc.__cause__.__class__.__name__, attempt, attempts)
                    time.sleep(base_delay_s * attempt * (1 + random.random()))
            raise AssertionError("unreachable")

        return run

    return wrap(fn) if fn is not None else wrap
