"""The default agent-failure taxonomy every new project starts with, and where each category's fixes go.

Fix routes: each category says which training data its corrections feed (``TaxonomyCategory.fix_route``:
sft, dpo, both, none, or empty for the parent's). ``fix_routes`` resolves the inheritance for a
project; training/snapshots/routing.py applies it to a snapshot's corrections.

Editing: ``create_category`` and ``update_category`` are the only writers of categories for the API
(serializers.TaxonomyCategorySerializer) and the taxonomy page (taxonomy_views.py); they hold the
rules (a unique name, a parent of the same project and never below the category itself, a known fix
route) and refuse with a ValidationError by field. Who may edit is policy.can_edit_taxonomy."""

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from .models import Project, TaxonomyCategory

# (name, description, root cause, recommended fix, children)
DEFAULT_TAXONOMY = [
    (
        "Tool use",
        "The agent's use of its tools went wrong.",
        "",
        "",
        [
            (
                "Tool not called",
                "Answered from memory when a tool call was needed.",
                "The model does not recognise the intent as needing live data.",
                "SFT examples that call the tool for this intent; DPO pairs call > no-call.",
            ),
            (
                "Wrong tool",
                "Called a tool, but not the right one.",
                "Similar tool descriptions, or intent confusion.",
                "Sharpen tool descriptions; DPO pairs right tool > wrong tool.",
            ),
            (
                "Wrong arguments",
                "Right tool, wrong or missing arguments (SKU, quantity, ids).",
                "Slot values not copied from context; schema not followed.",
                "Corrections with exact arguments; DPO pairs on argument fixes.",
            ),
            (
                "Unneeded tool call",
                "Called a tool when none was needed.",
                "Over-eager tool use after tool-heavy training.",
                "SFT examples that answer directly; DPO pairs no-call > call.",
            ),
            (
                "Fabricated tool result",
                "Invented a tool's result instead of calling it or waiting for it.",
                "Multi-turn dialogues where results were visible in earlier turns.",
                "DPO pairs that stop after the call; penalise <tool_response> in output.",
            ),
            (
                "Malformed tool call",
                "Invalid JSON, unknown tool name or unclosed tag.",
                "Format not learned; long arguments.",
                "SFT on well-formed calls; check the chat template.",
            ),
        ],
    ),
    (
        "Content",
        "What the agent said was wrong.",
        "",
        "",
        [
            (
                "Hallucinated fact",
                "Stated a price, stock level or policy not backed by a tool or the prompt.",
                "Knowledge gap filled by guessing.",
                "Ground answers in tool results; SFT on refusals to guess.",
            ),
            (
                "Off-domain or unsafe",
                "Left the sales domain or said something unsafe.",
                "Weak system-prompt adherence.",
                "SFT with on-domain redirections; safety preference pairs.",
            ),
            (
                "Business flow error",
                "Skipped a required step (e.g. confirming before ordering).",
                "Business process not in the training data.",
                "SFT dialogues that follow the flow end to end.",
            ),
        ],
    ),
    (
        "Format",
        "The response's form is defective.",
        "",
        "",
        [
            (
                "Think-tag or format defect",
                "Unbalanced <think> tags, template tokens leaked.",
                "Template mismatch between training and serving.",
                "Fix the chat template; SFT on clean format.",
            ),
            (
                "Repetition",
                "Repeats itself, often at the end.",
                "Degenerate decoding or an over-trained model.",
                "Check decoding; roll back to a healthy checkpoint.",
            ),
            (
                "Too short",
                "An empty or near-empty reply.",
                "Early end-of-turn.",
                "SFT with complete answers.",
            ),
            (
                "Tone or persona",
                "Wrong tone, language or persona.",
                "Persona not reinforced.",
                "SFT examples in the right voice; preference pairs on tone.",
            ),
        ],
    ),
]

FixRoute = TaxonomyCategory.FixRoute

# Where the default categories' corrections go when a snapshot is routed by the taxonomy; a
# category not named here takes its parent's route. Knowledge and business flow are taught by
# example (SFT); tool behaviour is learnt from the contrast between the right call and the
# model's actual output (DPO), malformed calls included (the rejected side keeps the raw text).
# Repetition is a degenerate pattern SFT on a clean answer does not penalise (DPO); tone wants
# both, as its recommended fix says.
DEFAULT_ROUTES = {
    "Tool use": FixRoute.DPO,
    "Content": FixRoute.SFT,
    "Format": FixRoute.SFT,
    "Repetition": FixRoute.DPO,
    "Tone or persona": FixRoute.BOTH,
}

# the training-data kinds (training.models.DatasetSnapshot.Kind values) each route feeds
ROUTE_KINDS = {
    FixRoute.SFT: frozenset({"sft"}),
    FixRoute.DPO: frozenset({"dpo"}),
    FixRoute.BOTH: frozenset({"sft", "dpo"}),
    FixRoute.NONE: frozenset(),
}


def fix_routes(project_id: int) -> dict[int, str]:
    """Every category's effective fix route, in one query: its own, else its nearest ancestor's; ""
    where no category on the way up has one (not routed)."""
    rows = TaxonomyCategory.objects.filter(project_id=project_id).values_list("pk", "parent_id", "fix_route")
    return {pk: route for pk, (route, _origin) in resolve_routes(rows).items()}


def resolve_routes(rows: Iterable[tuple[int, int | None, str]]) -> dict[int, tuple[str, int | None]]:
    """(pk, parent_id, fix_route) of a project's categories -> each one's effective route and the
    category it comes from: itself when it has its own, else its nearest ancestor with one; ("", None)
    where none on the way up has one."""
    nodes = {pk: (parent, route) for pk, parent, route in rows}
    out: dict[int, tuple[str, int | None]] = {}
    for pk in nodes:
        chain, node, found = [], pk, ("", None)
        while node in nodes:
            if node in out:
                found = out[node]
                break
            if node in chain:  # a cycle (the rules refuse one): stop rather than loop
                break
            chain.append(node)
            parent, route = nodes[node]
            if route:
                found = (route, node)
                break
            node = parent
        for c in chain:
            out[c] = (nodes[c][1], c) if nodes[c][1] else found
    return out


# what create_category and update_category may set; the project is fixed once a category exists
EDITABLE = frozenset(
    {"name", "description", "root_cause", "recommended_fix", "fix_route", "parent", "active", "position"}
)
NAME_MAX = TaxonomyCategory._meta.get_field("name").max_length


def create_category(
    project,
    *,
    name: str,
    parent: TaxonomyCategory | None = None,
    description: str = "",
    root_cause: str = "",
    recommended_fix: str = "",
    fix_route: str = FixRoute.INHERIT,
    active: bool = True,
    position: int | None = None,
) -> TaxonomyCategory:
    """A new category of the project (under `parent` when given; after its siblings unless `position`
    says where). ValidationError by field when a rule refuses it."""
    category = TaxonomyCategory(
        project=project,
        parent=parent,
        name=name,
        description=description,
        root_cause=root_cause,
        recommended_fix=recommended_fix,
        fix_route=fix_route,
        active=active,
    )
    if position is None:
        last = TaxonomyCategory.objects.filter(project=project, parent=parent).aggregate(n=Max("position"))
        position = 0 if last["n"] is None else last["n"] + 1
    category.position = position
    _check(category)
    _save(category)
    return category


def update_category(category: TaxonomyCategory, **changes) -> TaxonomyCategory:
    """Change some of a category's EDITABLE fields (rename, describe, route, move, deactivate or
    reactivate): ValidationError by field when a rule refuses the result; nothing is saved then (the
    instance keeps the refused values: read it again). Only the changed fields are written."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise TypeError(f"update_category() cannot change {', '.join(sorted(unknown))}")
    with transaction.atomic():
        if "parent" in changes:
            # moves of one project's categories one at a time: two leads moving A under B and B under A
            # at once would both pass the cycle check
            Project.objects.select_for_update().filter(pk=category.project_id).first()
        for field, value in changes.items():
            setattr(category, field, value)
        _check(category)
        if changes:
            _save(category, update_fields=list(changes))
    return category


def _check(category: TaxonomyCategory) -> None:
    errors = {}
    category.name = (category.name or "").strip()
    if not category.name:
        errors["name"] = "A category needs a name."
    elif len(category.name) > NAME_MAX:
        errors["name"] = f"At most {NAME_MAX} characters (this one has {len(category.name)})."
    elif (
        TaxonomyCategory.objects.filter(project_id=category.project_id, name=category.name)
        .exclude(pk=category.pk)
        .exists()
    ):
        errors["name"] = _duplicate(category.name)
    if category.fix_route not in FixRoute.values:
        errors["fix_route"] = (
            f"{category.fix_route!r} is not a fix route: sft, dpo, both, none, or empty for the parent's."
        )
    parent = category.parent
    if parent is not None:
        if parent.project_id != category.project_id:
            errors["parent"] = "The parent category belongs to another project."
        elif category.pk is not None and _is_within(parent.pk, category):
            errors["parent"] = (
                f"{parent.name!r} is {category.name!r} itself or lies under it: "
                "a category cannot be its own ancestor."
            )
    if not isinstance(category.position, int) or category.position < 0:
        errors["position"] = "A position is a whole number, 0 or more."
    if errors:
        raise ValidationError(errors)


def _is_within(node: int | None, category: TaxonomyCategory) -> bool:
    """Whether `node` is the category or one of its descendants (one query: the project's parents)."""
    parents = dict(
        TaxonomyCategory.objects.filter(project_id=category.project_id).values_list("pk", "parent_id")
    )
    seen = set()
    while node is not None and node not in seen:
        if node == category.pk:
            return True
        seen.add(node)
        node = parents.get(node)
    return False


def _duplicate(name: str) -> str:
    return f"A category named {name!r} already exists."


def _save(category: TaxonomyCategory, **kwargs) -> None:
    try:
        with transaction.atomic():
            category.save(**kwargs)
    except IntegrityError as exc:  # the same name saved by someone else since the check
        raise ValidationError({"name": _duplicate(category.name)}) from exc


@transaction.atomic
def seed_default_taxonomy(project) -> int:
    """Create the default categories for a project that has none. Returns how many were created."""
    if TaxonomyCategory.objects.filter(project=project).exists():
        return 0

    def make(name, desc, cause, fix, position, parent=None):
        return TaxonomyCategory.objects.create(
            project=project,
            parent=parent,
            name=name,
            description=desc,
            root_cause=cause,
            recommended_fix=fix,
            fix_route=DEFAULT_ROUTES.get(name, FixRoute.INHERIT),
            position=position,
        )

    created = 0
    for pos, (name, desc, cause, fix, children) in enumerate(DEFAULT_TAXONOMY):
        parent = make(name, desc, cause, fix, pos)
        for cpos, (cname, cdesc, ccause, cfix) in enumerate(children):
            make(cname, cdesc, ccause, cfix, cpos, parent)
        created += 1 + len(children)
    return created


def category_rows(project, *, inactive: bool = False) -> list[dict]:
    """The project's active categories in tree order, for pickers: {"cat", "depth", "leaf", "group"} (group:
    its top-level ancestor). With `inactive`, every category (the taxonomy page)."""
    cats = TaxonomyCategory.objects.filter(project=project).order_by("position", "name")
    if not inactive:
        cats = cats.filter(active=True)
    children: dict[int | None, list] = {}
    for c in cats:
        children.setdefault(c.parent_id, []).append(c)
    rows: list[dict] = []

    def walk(parent, depth, group):
        for c in children.get(parent, []):
            rows.append({"cat": c, "depth": depth, "leaf": c.pk not in children, "group": group or c})
            walk(c.pk, depth + 1, group or c)

    walk(None, 0, None)
    return rows
