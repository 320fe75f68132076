"""Machine hints shown beside human work: a judge's suggestion for a pair or a single response.

The annotator layer only shows hints; the layer that produces them (training's judge) sits above
it and registers its readers when Django starts (training.apps). Without a registered reader
there are simply no hints.
"""

from collections.abc import Callable, Iterable

_pair_reader: Callable | None = None
_verdict_reader: Callable | None = None


def register(pair_reader: Callable, verdict_reader: Callable) -> None:
    global _pair_reader, _verdict_reader
    _pair_reader, _verdict_reader = pair_reader, verdict_reader


def pair_suggestions(project, pairs: list[tuple[int, int]]) -> dict:
    """{(response_a, response_b): suggestion} for the pairs that have one."""
    return _pair_reader(project, pairs) if _pair_reader and pairs else {}


def verdict_suggestions(project, response_ids: Iterable[int]) -> dict:
    """{response id: suggestion} for the responses that have one."""
    return _verdict_reader(project, response_ids) if _verdict_reader else {}
