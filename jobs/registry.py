"""The job kinds: each app registers its model and the Celery task that runs one row (the task takes the
row's pk), so jobs.lifecycle can send, re-send and sweep every kind without importing the apps."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str  # plural, as requeue_waiting() and the reaper count it: "imports", "eval_runs", …
    model: type
    task: object  # a Celery task: task.delay(pk)


_kinds: dict[type, Kind] = {}


def register(name: str, model: type, task) -> None:
    _kinds[model] = Kind(name, model, task)


def kinds() -> list[Kind]:
    return list(_kinds.values())


def kind_of(job) -> Kind:
    try:
        return _kinds[type(job)]
    except KeyError:
        raise LookupError(
            f"{type(job).__name__} is not a registered job kind (jobs.registry.register)"
        ) from None
