"""The demo's held-out suites, one definition for `demo_loop` and the `make demo` lineage.

Four suites tell apart what a fix carries: the seen phrasings (the control), unseen phrasings (held-out
combinations of phrase parts, never trained on), whole unseen dialogues turn by turn (calls and the
replies after tool results) and the new policy's facts (the knowledge metric). `disjointness` reports
how far each is from what the model trained on.
"""

from training import demo_domain

SUITES = {
    "unseen": "demo held-out (unseen phrasings)",
    "seen": "demo held-out (seen phrasings)",
    "multiturn": "demo multi-turn dialogues (unseen phrasings)",
    "knowledge": "demo policy knowledge (unseen phrasings)",
}
KINDS = tuple(SUITES)


def suite_cases(kind: str, n: int, seed: int) -> list[dict]:
    """About n cases of one kind (a multi-turn suite: every turn of n // 6 dialogues)."""
    if kind in ("seen", "unseen"):
        return demo_domain.eval_prompts(n, seed=seed, split=kind)
    if kind == "multiturn":
        return demo_domain.multiturn_cases(max(4, n // 6), seed=seed)
    if kind == "knowledge":
        return demo_domain.knowledge_cases(n, seed=seed)
    raise ValueError(f"unknown demo suite {kind!r}; one of {', '.join(KINDS)}")


def records(cases: list[dict]) -> list[tuple[int, dict]]:
    """Suite records (evaluation.suites.create_suite) of demo cases; the context (a failure context of the
    base model, a clean request, a reply after a tool result) is kept in the metadata."""
    return [
        (
            i,
            {
                "id": c["external_id"],
                "messages": c["messages"],
                "tools": c["tools"],
                "expected": c["expected"],
                "categories": [f"context: {c['metadata']['context']}"],
                "turn_depth": c["metadata"]["turn_depth"],
                "metadata": c["metadata"],
            },
        )
        for i, c in enumerate(cases, 1)
    ]
