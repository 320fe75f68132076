"""Build the 200 hand-check cases (cases.jsonl) for the tool_call_accuracy agreement figure.

    python benchmarks/data/handcheck/make_cases.py [--model var/models/demo-base]

140 cases are REAL outputs of the demo base model (greedy, 256 new tokens, as an eval run
generates them) on the first prompts of the demo loop's held-out suites (demo_domain.eval_prompts
seed 9000: 95 "seen" and 45 "unseen" phrasings). 60 are crafted to exercise the tricky rules of
metrics.md. Every line is in `manage.py score_outputs` format: id, tools, expected (OpenAI
assistant message; crafted ones may carry `optional` / `acceptable`), output (raw text), plus
`messages` (the context, for the reader) and `source`. No verdict of our metric is written here:
the file is the input of an independent reader (benchmarks/handcheck_agreement.py compares).
"""

import argparse
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
OUT = Path(__file__).resolve().parent / "cases.jsonl"


def fn(name, description, properties, required):
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def msg_calls(*calls, content=""):
    """Gold assistant message; each call is (name, args) or (name, args, extras) with optional/acceptable."""
    tcs = []
    for i, c in enumerate(calls, 1):
        name, args = c[0], c[1]
        tc = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        if len(c) > 2:
            tc.update(c[2])
        tcs.append(tc)
    return {"role": "assistant", "content": content, "tool_calls": tcs}


def reply(text):
    return {"role": "assistant", "content": text}


def block(name, args, raw_args=None):
    body = raw_args if raw_args is not None else json.dumps({"name": name, "arguments": args})
    return f"<tool_call>\n{body}\n</tool_call>"


def crafted_cases():
    from training import demo_domain

    shop = demo_domain.TOOLS
    quote_tool = fn(
        "create_quote",
        "Price quote for several items.",
        {
            "customer_id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                },
            },
            "shipping": {
                "type": "object",
                "properties": {"method": {"type": "string"}, "address": {"type": "object"}},
            },
            "gift_wrap": {"type": "boolean"},
            "discount": {"type": "number"},
            "note": {"type": "string"},
        },
        ["customer_id", "items"],
    )
    categories_tool = fn("list_categories", "The catalogue's categories.", {}, [])
    quote = shop + [quote_tool, categories_tool]
    sys_msg = {
        "role": "system",
        "content": "You are the sales assistant of Northwind Home. Use the tools; never guess their results.",
    }

    def ctx(text):
        return [sys_msg, {"role": "user", "content": text}]

    inv = ("check_inventory", {"sku": "A-113"})
    inv_call = block(*inv)
    order = {"sku": "K-754", "quantity": 3, "customer_id": "C-8104"}
    q_args = {
        "customer_id": "C-2041",
        "items": [{"sku": "L-422", "quantity": 2}, {"sku": "K-754", "quantity": 1}],
        "shipping": {"method": "express", "address": {"city": "Lyon", "zip": "69002"}},
    }
    ship_reply = "We ship within 2 working days; delivery is free above $50."
    c = []  # (context, tools, expected, output)
    ask_inv = ctx("Is A-113 in stock?")
    ask_order = ctx("I'd like to buy 3 x K-754. My customer ID is C-8104.")
    ask_quote = ctx("Quote me 2 x L-422 and 1 x K-754 for C-2041, express to 69002 Lyon.")
    ask_ship = ctx("What are your shipping terms?")

    # --- reasoning and calls inside <think>
    c.append(
        (ask_inv, shop, msg_calls(inv), f"<think>\nI will call {inv_call}\n</think>\nLet me look that up.")
    )
    c.append((ask_inv, shop, msg_calls(inv), f"<think>\nDraft: {inv_call}\n</think>\n\n{inv_call}"))
    c.append(
        (
            ask_ship,
            shop,
            reply(ship_reply),
            f"<think>\nMaybe {block('search_product', {'query': 'shipping'})}? "
            "No, policy is known.\n</think>\n"
            f"{ship_reply}",
        )
    )
    c.append((ask_inv, shop, msg_calls(inv), f"<think>\nThe user wants stock.\n{inv_call}"))  # never closed
    c.append((ask_inv, shop, msg_calls(inv), f"stock check</think>\n{inv_call}"))  # close without open
    c.append(
        (ask_inv, shop, msg_calls(inv), f"<think>first</think>\n<think>second thought</think>\n{inv_call}")
    )
    # --- arguments as a JSON string
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            block(
                "", None, json.dumps({"name": "check_inventory", "arguments": json.dumps({"sku": "A-113"})})
            ),
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            block(
                "",
                None,
                json.dumps(
                    {"name": "check_inventory", "arguments": json.dumps(json.dumps({"sku": "A-113"}))}
                ),
            ),
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            block("", None, json.dumps({"name": "check_inventory", "arguments": json.dumps(["A-113"])})),
        )
    )
    # --- numbers, booleans, strings
    c.append(
        (
            ask_order,
            shop,
            msg_calls(("create_order", order)),
            block(
                "",
                None,
                '{"name": "create_order", "arguments": {"sku": "K-754", "quantity": 3.0, '
                '"customer_id": "C-8104"}}',
            ),
        )
    )
    c.append(
        (
            ask_order,
            shop,
            msg_calls(("create_order", order)),
            block("create_order", {**order, "quantity": "3"}),
        )
    )
    c.append(
        (
            ask_order,
            shop,
            msg_calls(("create_order", order)),
            block(
                "",
                None,
                '{"name": "create_order", "arguments": {"sku": "K-754", "quantity": 3e0, '
                '"customer_id": "C-8104"}}',
            ),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", {**q_args, "gift_wrap": True})),
            block("create_quote", {**q_args, "gift_wrap": 1}),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", {**q_args, "gift_wrap": True})),
            block("create_quote", {**q_args, "gift_wrap": "true"}),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", {**q_args, "discount": 0.1})),
            block(
                "",
                None,
                json.dumps({"name": "create_quote", "arguments": q_args})[:-2] + ', "discount": 0.10}}',
            ),
        )
    )
    c.append((ask_inv, shop, msg_calls(inv), block(*("check_inventory", {"sku": "a-113"}))))
    c.append((ask_inv, shop, msg_calls(inv), block(*("check_inventory", {"sku": "  A-113 "}))))
    c.append((ask_inv, shop, msg_calls(inv), block(*("check_inventory", {"sku": "A 113"}))))
    c.append(
        (
            ctx("Do you have the Café Table?"),
            shop,
            msg_calls(("search_product", {"query": "Café Table"})),
            block("search_product", {"query": "Cafe Table"}),
        )
    )
    c.append(
        (
            ctx("Do you have the Café Table?"),
            shop,
            msg_calls(("search_product", {"query": "Café Table"})),
            block("", None, '{"name": "search_product", "arguments": {"query": "Caf\\u00e9 Table"}}'),
        )
    )
    # --- nested objects and lists
    reordered = {
        "shipping": {"address": {"zip": "69002", "city": "Lyon"}, "method": "express"},
        "items": q_args["items"],
        "customer_id": "C-2041",
    }
    c.append((ask_quote, quote, msg_calls(("create_quote", q_args)), block("create_quote", reordered)))
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", q_args)),
            block("create_quote", {**q_args, "items": q_args["items"][::-1]}),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", q_args)),
            block("create_quote", {**q_args, "shipping": {"method": "express", "address": {"city": "Lyon"}}}),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", q_args)),
            block(
                "create_quote",
                {**q_args, "items": [{"quantity": 2, "sku": "L-422"}, {"quantity": 1, "sku": "K-754"}]},
            ),
        )
    )
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", q_args)),
            block(
                "create_quote",
                {**q_args, "items": [{"sku": "L-422", "quantity": "2"}, {"sku": "K-754", "quantity": 1}]},
            ),
        )
    )
    # --- parallel and duplicate calls
    two_inv = msg_calls(("check_inventory", {"sku": "A-113"}), ("check_inventory", {"sku": "B-207"}))
    ask_two = ctx("Are A-113 and B-207 in stock?")
    c.append(
        (
            ask_two,
            shop,
            two_inv,
            block("check_inventory", {"sku": "B-207"}) + "\n" + block("check_inventory", {"sku": "A-113"}),
        )
    )
    c.append(
        (
            ask_two,
            shop,
            two_inv,
            block("check_inventory", {"sku": "A-113"}) + "\n" + block("check_inventory", {"sku": "A-113"}),
        )
    )
    c.append((ask_two, shop, two_inv, block("check_inventory", {"sku": "A-113"})))
    same_twice = msg_calls(("create_order", order), ("create_order", order))
    ask_twice = ctx("Place two separate orders of 3 x K-754 for C-8104, one for each shop.")
    c.append(
        (ask_twice, shop, same_twice, block("create_order", order) + "\n" + block("create_order", order))
    )
    c.append((ask_twice, shop, same_twice, block("create_order", order)))
    c.append((ask_inv, shop, msg_calls(inv), inv_call + "\n" + inv_call))
    # --- optional and acceptable arguments
    search_opt = msg_calls(
        ("search_product", {"query": "desk lamp", "category": "lighting"}, {"optional": ["category"]})
    )
    ask_lamp = ctx("Do you sell desk lamps?")
    c.append((ask_lamp, shop, search_opt, block("search_product", {"query": "desk lamp"})))
    c.append(
        (ask_lamp, shop, search_opt, block("search_product", {"query": "desk lamp", "category": "office"}))
    )
    c.append(
        (
            ask_lamp,
            shop,
            msg_calls(("search_product", {"query": "desk lamp"}, {"optional": ["category"]})),
            block("search_product", {"query": "desk lamp", "category": "office"}),
        )
    )
    c.append(
        (
            ask_lamp,
            shop,
            msg_calls(("search_product", {"query": "desk lamp"})),
            block("search_product", {"query": "desk lamp", "category": "lighting"}),
        )
    )
    acc = msg_calls(
        ("search_product", {"query": "desk lamp"}, {"acceptable": {"query": ["desk lamps", "lamp"]}})
    )
    c.append((ask_lamp, shop, acc, block("search_product", {"query": "desk lamps"})))
    c.append((ask_lamp, shop, acc, block("search_product", {"query": "Desk Lamp"})))
    # --- unknown tools, malformed JSON, unclosed and stray tags
    c.append((ask_inv, shop, msg_calls(inv), block("check_stock", {"sku": "A-113"})))
    c.append((ask_inv, shop, msg_calls(inv), block("Check_Inventory", {"sku": "A-113"})))
    c.append(
        (
            ask_two,
            shop,
            two_inv,
            block("check_inventory", {"sku": "A-113"})
            + "\n"
            + block("check_inventory", {"sku": "B-207"})
            + "\n"
            + block("track_order", {"order_id": "ORD-1"}),
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            "<tool_call>\n{'name': 'check_inventory', 'arguments': {'sku': 'A-113'}}\n</tool_call>",
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-113"},}\n</tool_call>',
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-113"}}',
        )
    )
    c.append(
        (
            ask_two,
            shop,
            two_inv,
            block("check_inventory", {"sku": "A-113"})
            + "\n"
            + '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "B-207"}}',
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<tool_call>\n```json\n{"name": "check_inventory", "arguments": '
            '{"sku": "A-113"}}\n```\n</tool_call>',
        )
    )
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<tool_call>\n{"name": "check_inventory", "parameters": {"sku": "A-113"}}\n</tool_call>',
        )
    )
    c.append(
        (
            ctx("Which categories do you have?"),
            quote,
            msg_calls(("list_categories", {})),
            '<tool_call>\n{"name": "list_categories"}\n</tool_call>',
        )
    )
    c.append(
        (
            ctx("Which categories do you have?"),
            quote,
            msg_calls(("list_categories", {})),
            '<tool_call>{"name": "list_categories", "arguments": {}}</tool_call>',
        )
    )
    c.append((ask_ship, shop, reply(ship_reply), ship_reply + "\n</tool_call>"))
    c.append(
        (
            ask_quote,
            quote,
            msg_calls(("create_quote", q_args)),
            block(
                "",
                None,
                json.dumps({"name": "create_quote", "arguments": {**q_args, "discount": 12345}}).replace(
                    "12345", "NaN"
                ),
            ),
        )
    )
    # --- tool responses, text after the call, template tokens, stop token
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            inv_call
            + '\n<tool_response>\n{"sku": "A-113", "in_stock": 12}\n</tool_response>\n12 units left.',
        )
    )
    c.append((ask_inv, shop, msg_calls(inv), inv_call + "\nI'll let you know in a moment!"))
    c.append((ask_inv, shop, msg_calls(inv), inv_call + "<|im_end|>"))
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-113"}}<|im_end|>\n</tool_call>',
        )
    )
    c.append((ask_ship, shop, reply(ship_reply), ship_reply + "<|im_end|>\n<|im_start|>user\nThanks!"))
    # --- empty output, reply versus call
    c.append((ask_inv, shop, msg_calls(inv), ""))
    c.append((ask_ship, shop, reply(ship_reply), ""))
    c.append((ask_inv, shop, msg_calls(inv), "A-113 is in stock: 12 units ready to ship today."))
    c.append((ask_ship, shop, reply(ship_reply), block("search_product", {"query": "shipping terms"})))
    c.append(
        (
            ask_inv,
            shop,
            msg_calls(inv),
            '<TOOL_CALL>\n{"name": "check_inventory", "arguments": {"sku": "A-113"}}\n</TOOL_CALL>',
        )
    )
    return c


def real_cases(model_dir):
    import torch

    from inference.loading import load_model
    from training import demo_domain
    from training.demo_model import generate

    torch.set_num_threads(1)
    loaded = load_model(model_dir, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    out = []
    for split, n_suite, n in (("seen", 200, 95), ("unseen", 100, 45)):
        cases = demo_domain.eval_prompts(n_suite, seed=9000, split=split)[:n]
        res = generate(
            model,
            tok,
            [c["messages"] for c in cases],
            tools=demo_domain.TOOLS,
            max_new_tokens=256,
            batch_size=16,
            return_details=True,
        )
        for case, r in zip(cases, res, strict=True):
            out.append((case, r))
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "demo-base"))
    parser.add_argument(
        "--real-json", help="reuse outputs already generated (list of {case, text, hit_limit})"
    )
    args = parser.parse_args()
    import django

    django.setup()
    rows = []
    if args.real_json:
        pairs = [(r["case"], r) for r in json.loads(Path(args.real_json).read_text())]
    else:
        pairs = real_cases(args.model)
    for case, r in pairs:
        rows.append(
            {
                "tools": case["tools"],
                "expected": case["expected"],
                "output": r["text"],
                "stopped_at_limit": bool(r["hit_limit"]),
                "messages": case["messages"],
                "source": "demo-base",
                "origin": case["external_id"],
            }
        )
    for messages, tools, expected, output in crafted_cases():
        rows.append(
            {
                "tools": tools,
                "expected": expected,
                "output": output,
                "messages": messages,
                "source": "crafted",
            }
        )
    assert len(rows) == 200, len(rows)
    random.Random(200).shuffle(rows)
    tmp = OUT.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, row in enumerate(rows, 1):
            fh.write(json.dumps({"id": f"hc-{i:03d}", **row}, ensure_ascii=False) + "\n")
    os.replace(tmp, OUT)
    print(f"{len(rows)} cases written to {OUT}")


if __name__ == "__main__":
    main()
