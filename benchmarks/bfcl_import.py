"""How much of a BFCL-shaped file the importer reads, before and after the BFCL dialect.

    python benchmarks/bfcl_import.py [--seed 0] [--keep DIR]

Generates (deterministically) a BFCL test file of 1,274 lines and its possible-answers file in
BFCL's own shapes: simple, multiple, parallel and parallel_multiple records with BFCL type names
(dict, float, tuple, any, Java's String/HashMap/long…), dotted function names, nested dict
arguments, several possible values and `""` "may be omitted" markers; irrelevance records (no
answer: no call expected); and the records the project refuses on purpose, each with its reason:
live_relevance (no gold call) and multi-turn (call sequences checked by running BFCL's APIs).

Each line goes through `annotator.importers.parse_line` (validation and conversion only, no
database): "before" reads the raw lines as OpenAI conversations (what the importer did before
the BFCL dialect), "after" with dialect "bfcl" and the answers. Prints one JSON line and keeps it
in benchmarks/results/bfcl_import.json.
"""

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from benchmarks._common import report  # noqa: E402

# category -> lines; 1,274 in all, 34 of them refused on purpose
MIX = {
    "simple": 380,
    "multiple": 200,
    "parallel": 200,
    "parallel_multiple": 200,
    "irrelevance": 240,
    "simple_java": 20,
    "live_relevance": 16,
    "multi_turn_base": 18,
}
REFUSED = {"live_relevance", "multi_turn_base"}

CITIES = ["Paris", "Lisbon", "Osaka", "Denver", "Nairobi", "Bergen", "Quito", "Austin"]
UNITS = ["miles", "kilometers", "meters", "units"]
SHAPES = ["triangle", "circle", "rectangle", "trapezoid"]
NAMESPACES = ["math", "geometry", "weather", "hotel", "finance", "physics", "music", "sports"]
VERBS = ["calculate", "get", "find", "book", "convert", "lookup", "estimate", "play"]


def _function(rng: random.Random, k: int, java: bool = False):
    """One BFCL function description and a generator of possible answers for it."""
    name = (
        f"{rng.choice(NAMESPACES)}.{rng.choice(VERBS)}_{k}"
        if rng.random() < 0.6
        else f"{rng.choice(VERBS)}_{k}"
    )
    props, answer, required = {}, {}, []
    if java:
        props["target"] = {"type": "String", "description": "The object to act on."}
        props["options"] = {
            "type": "HashMap",
            "description": "Options.",
            "properties": {"limit": {"type": "long"}, "strict": {"type": "Boolean"}},
        }
        props["tags"] = {"type": "ArrayList", "items": {"type": "String"}, "description": "Tags."}
        answer = {
            "target": [f"obj{k}"],
            "options": [{"limit": [rng.randint(1, 90)], "strict": ["", True]}],
            "tags": ["", [f"t{k}"]],
        }
        return {
            "name": name,
            "description": "Java method.",
            "parameters": {"type": "dict", "properties": props, "required": ["target", "options"]},
        }, answer
    n_args = rng.randint(1, 4)
    for j in range(n_args):
        kind = rng.choice(["integer", "float", "string", "boolean", "tuple", "any", "dict", "array"])
        arg = f"arg{j}_{kind}"
        desc = {"description": f"The {kind} argument."}
        if kind == "integer":
            props[arg], values = {"type": "integer", **desc}, [rng.randint(-50, 500)]
        elif kind == "float":
            x = round(rng.uniform(0, 100), 2)
            props[arg], values = {"type": "float", **desc}, [x, int(x)] if rng.random() < 0.3 else [x]
        elif kind == "string":
            props[arg] = {"type": "string", **desc}
            values = [rng.choice(CITIES)] + ([rng.choice(UNITS)] if rng.random() < 0.3 else [])
        elif kind == "boolean":
            props[arg], values = {"type": "boolean", **desc}, [rng.random() < 0.5]
        elif kind == "tuple":
            props[arg] = {"type": "tuple", "items": {"type": "float"}, **desc}
            values = [[round(rng.uniform(-90, 90), 4), round(rng.uniform(-180, 180), 4)]]
        elif kind == "any":
            props[arg], values = {"type": "any", **desc}, [f"data_{k}"]
        elif kind == "array":
            props[arg] = {"type": "array", "items": {"type": "integer"}, **desc}
            values = [[rng.randint(1, 9) for _ in range(rng.randint(1, 4))]]
        else:
            props[arg] = {
                "type": "dict",
                **desc,
                "properties": {
                    "city": {"type": "string"},
                    "zip": {"type": "string"},
                    "shape": {"type": "string"},
                },
                "required": ["city"],
            }
            values = [
                {
                    "city": [rng.choice(CITIES)],
                    "zip": [f"{rng.randint(10000, 99999)}", ""],
                    "shape": [rng.choice(SHAPES)],
                }
            ]
        if rng.random() < 0.25:
            values = values + [""]  # may be omitted
        else:
            required.append(arg)
        answer[arg] = values
    if rng.random() < 0.2:
        props["unit"] = {"type": "string", "description": "Unit. Default 'units'."}
        answer["unit"] = [""]  # must be left out
    params = {"type": "dict", "properties": props, "required": required}
    return {"name": name, "description": f"Function {k}.", "parameters": params}, answer


def generate(seed: int):
    """-> (test lines, answer lines) as JSON text, in BFCL's shapes."""
    rng = random.Random(seed)
    tests, answers = [], []
    for category, count in MIX.items():
        for i in range(count):
            bfcl_id = (
                f"{category}_{i}" if not category.startswith("live") else f"{category}_{i}-{i % 7}-{i % 3}"
            )
            question = [
                [
                    {
                        "role": "user",
                        "content": f"Request {i} of {category}: please help with {rng.choice(CITIES)}.",
                    }
                ]
            ]
            if category.startswith("live") and rng.random() < 0.3:
                question[0].insert(0, {"role": "system", "content": "You are a helpful agent."})
            if category == "multi_turn_base":
                question.append([{"role": "user", "content": "Now do the same for the other file."}])
                tests.append({"id": bfcl_id, "question": question, "involved_classes": ["GorillaFileSystem"]})
                answers.append({"id": bfcl_id, "ground_truth": [["cd(folder='document')"], ["ls(a=True)"]]})
                continue
            n_functions = {"multiple": 4, "parallel_multiple": 3}.get(category, 1)
            functions, possible = zip(
                *(
                    _function(rng, 1000 * len(tests) + f, java=category == "simple_java")
                    for f in range(n_functions)
                ),
                strict=True,
            )
            tests.append({"id": bfcl_id, "question": question, "function": list(functions)})
            if category in ("irrelevance", "live_relevance"):
                continue
            names = [f["name"] for f in functions]
            if category == "multiple":
                j = rng.randrange(len(names))  # one of several offered functions fits
                calls = [{names[j]: possible[j]}]
            elif category == "parallel":
                calls = [{names[0]: possible[0]}, {names[0]: {k: v[:1] for k, v in possible[0].items()}}]
            elif category == "parallel_multiple":
                calls = [{n: p} for n, p in zip(names[:2], possible[:2], strict=True)]
            else:
                calls = [{names[0]: possible[0]}]
            answers.append({"id": bfcl_id, "ground_truth": calls})
    return [json.dumps(t) for t in tests], [json.dumps(a) for a in answers]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="also write the generated files into this folder")
    args = ap.parse_args()

    import django

    django.setup()
    from annotator.importers import parse_line
    from toolcalls import bfcl

    test_lines, answer_lines = generate(args.seed)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        (args.keep / "bfcl_test.jsonl").write_text("\n".join(test_lines) + "\n")
        (args.keep / "bfcl_answers.jsonl").write_text("\n".join(answer_lines) + "\n")
    records = [json.loads(line) for line in test_lines]

    before = sum(1 for r in records if parse_line(r, [], "train", dialect="openai")[0] is not None)

    started = time.perf_counter()
    answers, answer_errors = bfcl.read_answers(answer_lines)
    accepted, reasons, by_category = 0, Counter(), Counter()
    for record in records:
        parsed, errors = parse_line(record, [], "train", dialect="bfcl", answers=answers)
        if parsed is not None:
            accepted += 1
            by_category[parsed.metadata["bfcl_category"]] += 1
        else:
            reasons[f"{errors[0].field}: {errors[0].message[:70]}"] += 1
    seconds = time.perf_counter() - started
    n = len(records)
    report(
        "bfcl_import",
        {
            "lines": n,
            "accepted": accepted,
            "rejected": n - accepted,
            "accept_rate": round(accepted / n, 4),
            "accept_rate_of_supported": round(
                accepted / sum(c for k, c in MIX.items() if k not in REFUSED), 4
            ),
            "before_accepted": before,
            "before_accept_rate": round(before / n, 4),
            "answer_file_errors": len(answer_errors),
            "lines_per_s": round(n / seconds),
            "accepted_by_category": dict(sorted(by_category.items())),
            "rejected_reasons": dict(reasons.most_common()),
            "seed": args.seed,
        },
    )


if __name__ == "__main__":
    main()
