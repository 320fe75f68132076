"""Wording helpers for messages written in Python (templates use Django's |pluralize)."""


def counted(n: int, singular: str, plural: str = "") -> str:
    """A number with its noun in the right form: counted(1, "line") == "1 line",
    counted(2_000, "line") == "2,000 lines", counted(2, "is", "are") == "2 are"."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"
