"""What follows a successful training job, decided by the layers above training.

Training registers no follow-up itself: evaluation (a layer above) subscribes when Django starts
(evaluation.apps) and queues its run there, under the project's "evaluate after training"
setting. A subscriber returns a line for the job's log, or None when it did nothing.
"""

from collections.abc import Callable

_after_training: list[Callable] = []


def on_version_trained(subscriber: Callable) -> Callable:
    """Register `subscriber(job, version) -> str | None`; called once per successful job."""
    if subscriber not in _after_training:
        _after_training.append(subscriber)
    return subscriber


def version_trained(job, version) -> list[str]:
    """Run the subscribers; each one's failure is reported as a log line, never raised (training
    succeeded)."""
    lines = []
    for subscriber in _after_training:
        try:
            line = subscriber(job, version)
        except Exception as exc:  # noqa: BLE001 - the trained version stays; the follow-up is reported
            line = f"could not run {subscriber.__name__}: {type(exc).__name__}: {exc}"
        if line:
            lines.append(line)
    return lines
