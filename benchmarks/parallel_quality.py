"""How often response_quality flags correct parallel-call answers (it should never).

    python benchmarks/parallel_quality.py [--cases 400] [--seed 16]

Builds correct answers in the shape of BFCL's "parallel" (2-6 calls to one tool with
different arguments: weather per city, a currency pair per conversion, a stock per symbol)
and "parallel_multiple" (2-6 calls spread over 2-3 tools) categories, with realistic tool
specs (JSON schemas with enums, integers, nested objects), written as a Qwen model writes
them: calls one per block, sometimes after a <think> block or a one-line preamble, arguments
as an object or as a JSON string, key order and spacing varying, the stop token at the end
or not. Every case is scored with toolcalls.score.score_case; all must be correct.

Prints one JSON line (also kept in benchmarks/results/parallel_quality.json):

* correct_flagged_by_response_quality: share of correct answers with response_quality 0;
* end_repetition_flagged: share with the end_repetition defect (metrics.md's definition, the
  gzip test reading the reply text without its well-formed call blocks);
* before_*: the same with the earlier reading, gzip (and the tail-run test) over the whole
  answer, call blocks included, computed here beside the current code;
* control figures: the same answers with one call looping (the same call 3-6 times in a row)
  and with a looping reply text are flagged by end_repetition (they should all be).
"""

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import report  # noqa: E402
from toolcalls import defects  # noqa: E402
from toolcalls.parse import name_check, scan_output  # noqa: E402
from toolcalls.score import score_case  # noqa: E402

CITIES = [
    ("San Francisco, CA", "USA"),
    ("New York, NY", "USA"),
    ("Chicago, IL", "USA"),
    ("London", "UK"),
    ("Paris", "France"),
    ("Berlin", "Germany"),
    ("Tokyo", "Japan"),
    ("Sydney", "Australia"),
    ("Toronto", "Canada"),
    ("São Paulo", "Brazil"),
    ("Mumbai", "India"),
    ("Cape Town", "South Africa"),
    ("Seoul", "South Korea"),
    ("Madrid", "Spain"),
]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CNY", "INR", "AUD", "CAD", "CHF", "SEK"]
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA", "TSLA", "META", "NFLX", "ORCL", "IBM"]
SKUS = [f"{p}-{n}" for p in ("SHOE", "BAG", "TEE", "CAP") for n in (113, 207, 342, 518, 764)]


def _obj(properties, required):
    return {"type": "object", "properties": properties, "required": required}


def _tool(name, description, parameters):
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


ADDRESS = _obj(
    {"city": {"type": "string"}, "zip": {"type": "string"}, "country": {"type": "string"}},
    ["city", "country"],
)
TOOLS = {
    "get_current_weather": _tool(
        "get_current_weather",
        "Current weather for a location",
        _obj(
            {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            ["location"],
        ),
    ),
    "convert_currency": _tool(
        "convert_currency",
        "Convert an amount between currencies",
        _obj(
            {
                "amount": {"type": "number"},
                "from_currency": {"type": "string"},
                "to_currency": {"type": "string"},
            },
            ["amount", "from_currency", "to_currency"],
        ),
    ),
    "get_stock_price": _tool(
        "get_stock_price",
        "Latest price of a stock",
        _obj({"symbol": {"type": "string"}, "exchange": {"type": "string"}}, ["symbol"]),
    ),
    "check_inventory": _tool(
        "check_inventory",
        "Stock of a SKU in a warehouse",
        _obj({"sku": {"type": "string"}, "warehouse": {"type": "string"}}, ["sku"]),
    ),
    "calculate_shipping": _tool(
        "calculate_shipping",
        "Shipping cost between two addresses",
        _obj(
            {"origin": ADDRESS, "destination": ADDRESS, "weight_kg": {"type": "number"}},
            ["origin", "destination"],
        ),
    ),
    "book_hotel": _tool(
        "book_hotel",
        "Book a hotel room",
        _obj(
            {
                "city": {"type": "string"},
                "check_in": {"type": "string", "format": "date"},
                "nights": {"type": "integer", "minimum": 1},
                "guests": _obj({"adults": {"type": "integer"}, "children": {"type": "integer"}}, ["adults"]),
                "preferences": _obj(
                    {"room_type": {"type": "string"}, "smoking": {"type": "boolean"}}, ["room_type"]
                ),
            },
            ["city", "check_in", "nights"],
        ),
    ),
    "get_population": _tool(
        "get_population",
        "Population of a country in a year",
        _obj({"country": {"type": "string"}, "year": {"type": "integer"}}, ["country"]),
    ),
    "calculate_triangle_area": _tool(
        "calculate_triangle_area",
        "Area of a triangle",
        _obj(
            {"base": {"type": "number"}, "height": {"type": "number"}, "unit": {"type": "string"}},
            ["base", "height"],
        ),
    ),
}


def _address(rng):
    city, country = rng.choice(CITIES)
    out = {"city": city, "country": country}
    if rng.random() < 0.6:
        out["zip"] = f"{rng.randint(10000, 99999)}"
    return out


def args_for(name, rng, i):
    """Arguments for the i-th call to `name` in one turn (distinct within the turn)."""
    if name == "get_current_weather":
        out = {"location": CITIES[i][0]}
        if rng.random() < 0.5:
            out["unit"] = rng.choice(["celsius", "fahrenheit"])
        return out
    if name == "convert_currency":
        src, dst = CURRENCIES[i], CURRENCIES[-1 - i]
        return {
            "amount": rng.choice([100, 250, 1000, 49.99, 1500.5]),
            "from_currency": src,
            "to_currency": dst,
        }
    if name == "get_stock_price":
        out = {"symbol": SYMBOLS[i]}
        if rng.random() < 0.3:
            out["exchange"] = "NASDAQ"
        return out
    if name == "check_inventory":
        out = {"sku": SKUS[i]}
        if rng.random() < 0.4:
            out["warehouse"] = rng.choice(["Berlin", "Lyon", "Reno"])
        return out
    if name == "calculate_shipping":
        return {"origin": _address(rng), "destination": _address(rng), "weight_kg": round(0.5 + i * 1.5, 1)}
    if name == "book_hotel":
        out = {
            "city": CITIES[i][0],
            "check_in": f"2025-0{rng.randint(1, 9)}-1{i}",
            "nights": rng.randint(1, 7),
        }
        out["guests"] = {"adults": rng.randint(1, 3), "children": rng.randint(0, 2)}
        if rng.random() < 0.5:
            out["preferences"] = {"room_type": rng.choice(["double", "suite", "twin"]), "smoking": False}
        return out
    if name == "get_population":
        return {"country": CITIES[i][1], "year": 2000 + 5 * i}
    return {"base": 3 + i, "height": 4 + 2 * i, "unit": "cm"}


def make_case(rng, kind):
    """(gold message, tools, model output) for one correct parallel turn."""
    n = rng.randint(2, 6)
    if kind == "parallel":
        names = [rng.choice(list(TOOLS))] * n
    else:
        chosen = rng.sample(list(TOOLS), rng.randint(2, 3))
        names = [chosen[i % len(chosen)] for i in range(n)]
        rng.shuffle(names)
    seen: dict[str, int] = {}
    calls = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        calls.append((name, args_for(name, rng, k)))
    gold = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": nm, "arguments": json.dumps(a)}}
            for i, (nm, a) in enumerate(calls)
        ],
    }
    tools = [TOOLS[nm] for nm in dict.fromkeys(names)] + [TOOLS["get_population"]]
    order = list(calls)
    rng.shuffle(order)  # models emit parallel calls in any order
    return gold, tools, render(order, rng)


THINK = "<think>\nThe user asks for several independent lookups, so I call the tools at once.\n</think>\n\n"


def render(calls, rng, repeat_reply=False):
    compact = rng.random() < 0.3
    blocks = []
    for name, args in calls:
        items = list(args.items())
        if rng.random() < 0.3:
            rng.shuffle(items)
        a = dict(items)
        a_text = json.dumps(a, ensure_ascii=False, separators=(",", ":") if compact else None)
        if rng.random() < 0.15:
            a_text = json.dumps(a_text, ensure_ascii=False)  # arguments as a JSON string
        blocks.append(f'<tool_call>\n{{"name": "{name}", "arguments": {a_text}}}\n</tool_call>')
    text = "\n".join(blocks)
    if repeat_reply:  # a model stuck on its preamble before calling
        text = "Let me check that for you. " * 9 + "\n" + text
    roll = rng.random()
    if roll < 0.3:
        text = THINK + text
    elif roll < 0.45:
        text = "I'll look these up for you at the same time.\n" + text
    if rng.random() < 0.5:
        text += "<|im_end|>"
    return text


def old_end_repetition(output, tools, stopped_at_limit=None):
    """The earlier reading: the tail-run and gzip tests over the whole answer, call blocks included."""
    _, answer, _, _ = scan_output(output, name_check(tools))
    if stopped_at_limit:
        return True
    if defects._ends_with_repeat(answer):
        return True
    if len(answer) < defects.GZIP_MIN_CHARS:
        return False
    raw = answer.encode("utf-8", "surrogatepass")
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0)) > defects.GZIP_MAX_RATIO


def run(n_cases: int, seed: int) -> dict:
    rng = random.Random(seed)
    cases = [make_case(rng, "parallel" if i % 2 == 0 else "parallel_multiple") for i in range(n_cases)]
    correct = flagged = end_rep = old_rep = old_flagged = 0
    by_calls: dict[int, list[int]] = {}
    for gold, tools, output in cases:
        s = score_case(gold, output, tools)
        if s["tool_call_accuracy"] != 1:
            continue
        correct += 1
        flagged += s["response_quality"] == 0
        end_rep += s["defects"]["end_repetition"]
        old = old_end_repetition(output, tools)
        old_rep += old
        other = any(v for k, v in s["defects"].items() if k != "end_repetition")
        old_flagged += bool(old or other)
        by_calls.setdefault(len(gold["tool_calls"]), [0, 0])
        by_calls[len(gold["tool_calls"])][0] += 1
        by_calls[len(gold["tool_calls"])][1] += old

    # Controls: the same tools looping (one call 3-6 times in a row), and a looping reply text.
    loop_flagged = reply_flagged = 0
    for gold, tools, _ in cases:
        first = gold["tool_calls"][0]["function"]
        call = (first["name"], json.loads(first["arguments"]))
        loop = render([call] * rng.randint(3, 6), rng)
        loop_flagged += score_case(gold, loop, tools)["defects"]["end_repetition"]
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in gold["tool_calls"]]
        chatter = render(calls, rng, repeat_reply=True)
        reply_flagged += score_case(gold, chatter, tools)["defects"]["end_repetition"]

    def share(k, n):
        return round(k / n, 4) if n else None

    return {
        "cases": n_cases,
        "seed": seed,
        "correct": correct,
        "correct_flagged_by_response_quality": share(flagged, correct),
        "end_repetition_flagged": share(end_rep, correct),
        "before_correct_flagged_by_response_quality": share(old_flagged, correct),
        "before_end_repetition_flagged": share(old_rep, correct),
        "before_end_repetition_by_calls": {str(k): share(v[1], v[0]) for k, v in sorted(by_calls.items())},
        "control_looping_call_flagged": share(loop_flagged, n_cases),
        "control_looping_reply_flagged": share(reply_flagged, n_cases),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    report("parallel_quality", {"benchmark": "parallel_quality", **run(args.cases, args.seed)})


if __name__ == "__main__":
    main()
