"""The default agent-failure taxonomy every new project starts with."""

from django.db import transaction

from .models import TaxonomyCategory

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


@transaction.atomic
def seed_default_taxonomy(project) -> int:
    """Create the default categories for a project that has none. Returns how many were created."""
    if TaxonomyCategory.objects.filter(project=project).exists():
        return 0
    created = 0
    for pos, (name, desc, cause, fix, children) in enumerate(DEFAULT_TAXONOMY):
        parent = TaxonomyCategory.objects.create(
            project=project, name=name, description=desc, root_cause=cause, recommended_fix=fix, position=pos
        )
        created += 1
        for cpos, (cname, cdesc, ccause, cfix) in enumerate(children):
            TaxonomyCategory.objects.create(
                project=project,
                parent=parent,
                name=cname,
                description=cdesc,
                root_cause=ccause,
                recommended_fix=cfix,
                position=cpos,
            )
            created += 1
    return created


def category_rows(project) -> list[dict]:
    """The project's active categories in tree order, for pickers: {"cat", "depth", "leaf", "group"} (group:
    its top-level ancestor)."""
    cats = TaxonomyCategory.objects.filter(project=project, active=True).order_by("position", "name")
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
