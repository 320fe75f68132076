import json

import markdown as md
import nh3
from django import template
from django.utils.safestring import mark_safe

register = template.Library()

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "b",
    "i",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "del",
}


@register.filter
def markdown_safe(text: str | None) -> str:
    """Markdown rendered, then sanitised: untrusted input never yields script, handlers or styles."""
    html = md.markdown(text or "", extensions=["fenced_code", "tables", "sane_lists"])
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above


@register.filter
def pretty_json(value) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


@register.filter
def percent(value) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


@register.filter
def get_item(mapping, key):
    """mapping[key] in templates (forms and error dicts keyed by field name)."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def queue_count(n) -> str:
    """Queue sizes are counted up to a cap: 1000 reads as "1,000+"."""
    from annotator.assignment import QUEUE_COUNT_CAP

    return f"{QUEUE_COUNT_CAP:,}+" if n is not None and n >= QUEUE_COUNT_CAP else f"{n:,}"


@register.filter
def capped(n, cap) -> str:
    """A count taken up to `cap`: more than the cap reads as "100,000+"."""
    cap = int(cap)
    return f"{cap:,}+" if n is not None and n > cap else f"{n:,}"


@register.simple_tag(takes_context=True)
def project_role(context, project) -> str:
    """The viewer's role in `project` ('' for none), for navigation that adapts to it."""
    from annotator.policy import role_in

    request = context.get("request")
    return (role_in(request.user, project) or "") if request is not None and project is not None else ""
