"""Formatting for eval reports: rates as percentages with one decimal, ± standard errors in points,
signed deltas, p-values."""

from django import template

register = template.Library()


@register.filter
def pct(value, digits=1) -> str:
    """0.6234 -> "62.3%"; None -> "—" (a rate with no denominator is missing, never 0)."""
    if value is None or value == "":
        return "—"
    return f"{100 * float(value):.{int(digits)}f}%"


@register.filter
def pts(value) -> str:
    """A standard error or margin in percentage points: 0.049 -> "4.9"."""
    if value is None or value == "":
        return "—"
    return f"{100 * float(value):.1f}"


@register.filter
def signed_pts(value) -> str:
    """A delta in points: 0.07 -> "+7.0", -0.02 -> "−2.0"."""
    if value is None or value == "":
        return "—"
    v = 100 * float(value)
    if abs(v) < 0.05:
        return "±0.0"
    return f"+{v:.1f}" if v > 0 else f"−{abs(v):.1f}"


@register.filter
def pvalue(value) -> str:
    """ "p = 0.141", "p < 0.001"."""
    if value is None or value == "":
        return "p —"
    v = float(value)
    if v < 0.001:
        return "p < 0.001"
    return f"p = {v:.3g}"


@register.filter
def get(mapping, key):
    if mapping is None:
        return None
    try:
        return mapping.get(key)
    except AttributeError:
        try:
            return mapping[key]
        except (KeyError, IndexError, TypeError):
            return None


@register.filter
def metric_label(name) -> str:
    return str(name).replace("_", " ")


@register.filter
def okmark(value) -> str:
    """1 -> "✓ right", 0 -> "✗ wrong", None -> "— n/a": readable without colour."""
    if value is None:
        return "— n/a"
    return "✓ right" if value else "✗ wrong"


@register.filter
def make_list_of_one(value) -> list:
    """A single message as the list the chat partial renders."""
    return [value] if value else []
