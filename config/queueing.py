"""Handing a job's row to a Celery worker: once the row is committed, and never silently."""

import logging

from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)


def send_on_commit(task, pk: int, on_broker_error) -> None:
    """Queue `task(pk)` when the current transaction commits. If the broker cannot be reached,
    `on_broker_error(exc)` records that on the row, so the user sees why nothing runs."""

    def send():
        try:
            task.delay(pk)
        except BrokerError as exc:
            log.warning("%s(%s) not queued: %s", task.name, pk, exc)
            on_broker_error(exc)

    transaction.on_commit(send)
