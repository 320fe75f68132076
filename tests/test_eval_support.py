"""Shared builders for the evaluation tests: gold cases, suites, and finished runs with crafted outputs.

A "crafted" run scores outputs we wrote ourselves, so every figure it reports is known in
advance: case i is answered right when i is in `right`, with a wrong argument otherwise.
"""

import io
import json

from django.core.files.uploadedfile import SimpleUploadedFile

from annotator.models import ModelVersion
from evaluation import runner
from evaluation.models import EvalRun
from evaluation.suites import create_suite


def gold_record(i: int, call: bool = True, **extra) -> dict:
    """Case i: 'Is A-i in stock?' -> check_inventory(sku="A-i"); every 4th asks for a greeting reply."""
    if call:
        expected = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "check_inventory", "arguments": json.dumps({"sku": f"A-{i}"})},
                }
            ],
        }
        messages = [
            {"role": "system", "content": "You sell things."},
            {"role": "user", "content": f"Is A-{i} in stock?"},
        ]
    else:
        expected = {"role": "assistant", "content": "Hello! How can I help you today?"}
        messages = [{"role": "user", "content": f"Hi there, number {i}"}]
    return {
        "id": f"case-{i}",
        "messages": messages,
        "expected": expected,
        "categories": ["Tool not called"] if call else ["Greeting"],
        **extra,
    }


def make_suite(project, n: int = 10, name: str = "regression", calls_every: int = 4):
    records = [(i, gold_record(i, call=(i % calls_every != 0))) for i in range(1, n + 1)]
    suite, _ = create_suite(project, name, records, source="gold")
    return suite


def right_output(case) -> str:
    calls = case.expected.get("tool_calls") or []
    if not calls:
        return case.expected["content"]
    fn = calls[0]["function"]
    return f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": {fn["arguments"]}}}\n</tool_call>'


def wrong_output(case) -> str:
    if case.expected.get("tool_calls"):
        return '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "a-wrong"}}\n</tool_call>'
    return '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-1"}}\n</tool_call>'


def outputs_file(suite, right: set[int], overrides: dict | None = None) -> SimpleUploadedFile:
    lines = []
    for case in suite.cases.order_by("position"):
        text = (overrides or {}).get(case.position)
        if text is None:
            text = right_output(case) if case.position in right else wrong_output(case)
        lines.append(json.dumps({"id": case.external_id, "output": text}))
    return SimpleUploadedFile("outputs.jsonl", ("\n".join(lines) + "\n").encode(), "application/x-ndjson")


def model(project, name: str, parent=None, origin="imported", **kw) -> ModelVersion:
    return ModelVersion.objects.create(project=project, name=name, parent=parent, origin=origin, **kw)


def crafted_run(
    project, suite, mv, right: set[int], overrides: dict | None = None, perplexity=None
) -> EvalRun:
    """A finished run whose per-case correctness is exactly `right` (by case position)."""
    run = runner.create_run(
        project,
        suite,
        mv,
        source=EvalRun.Source.OUTPUTS,
        outputs=outputs_file(suite, right, overrides),
        start=False,
    )
    run = runner.run_eval(run.pk)
    assert run.status == EvalRun.State.DONE, run.message
    if perplexity is not None:
        EvalRun.objects.filter(pk=run.pk).update(
            perplexity=perplexity, stats={**run.stats, "perplexity_texts": "x"}
        )
        run.refresh_from_db()
    return run


def jsonl_file(records, name="cases.jsonl") -> io.BytesIO:
    data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"
    f = io.BytesIO(data.encode())
    f.name = name
    return f
