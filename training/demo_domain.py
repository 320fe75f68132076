"""A synthetic sales-agent domain: the data behind the offline demo model.

A small shop ("Northwind Home") with a fixed catalogue, five real tools and two
distractors. `generate_conversations` writes OpenAI-format conversations from
phrasing templates x slot values; `eval_prompts` cuts held-out conversations into
(context, expected assistant turn) cases.

Phrasing templates come in two splits: "seen" (may be trained on) and "unseen"
(never trained on; used for a generalisation figure). Every seen template also names
the mistake an unreliable agent makes after it (`flaw`). With `flaw_rate > 0` the
generator writes that mistake instead of the right turn with that probability: this
is the training data of the unreliable demo base model. The mistakes are tied to the
phrasing on purpose: a model trained on a random mix of right and wrong turns just
picks the most likely (right) one under greedy decoding.

Pure Python, stdlib only, deterministic from the seed.
"""

import json
import random
import re

SYSTEM_PROMPT = "You are the sales assistant of Northwind Home. Use the tools; never guess their results."

# category -> (SKU letter, product types)
_CATEGORIES = {
    "lighting": ("L", ["desk lamp", "floor lamp", "ceiling light", "light strip"]),
    "furniture": ("F", ["office chair", "standing desk", "bookshelf", "sofa"]),
    "audio": ("A", ["speaker", "headset", "soundbar", "turntable"]),
    "kitchen": ("K", ["coffee grinder", "kettle", "blender", "toaster"]),
    "outdoor": ("O", ["camping tent", "sleeping bag", "backpack", "cooler box"]),
    "office": ("S", ["monitor arm", "paper shredder", "label printer", "webcam"]),
}
_BRANDS = [
    "Aurora",
    "Nimbus",
    "Vega",
    "Orion",
    "Luma",
    "Atlas",
    "Zephyr",
    "Nova",
    "Juniper",
    "Cedar",
    "Polar",
    "Ember",
    "Summit",
    "Harbor",
    "Quill",
    "Sable",
    "Tundra",
    "Willow",
]
# types a customer may ask for that the shop does not carry (search returns nothing)
_UNKNOWN_TYPES = ["hammock", "air fryer", "bike helmet", "yoga mat", "smart watch", "rice cooker"]
_PEOPLE = [
    "Maria",
    "John",
    "Aiko",
    "Pedro",
    "Fatima",
    "Liam",
    "Chen",
    "Olga",
    "Samir",
    "Grace",
    "Tariq",
    "Nina",
    "Bruno",
    "Ines",
    "Kofi",
    "Mei",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _build_catalogue():
    rng = random.Random(20261125)  # fixed: the shop is the same for every seed
    products, numbers = [], rng.sample(range(100, 1000), 40)
    for category, (letter, types) in _CATEGORIES.items():
        for i, ptype in enumerate(types):
            brands = rng.sample(_BRANDS, 2 if (i + len(products)) % 3 else 1)
            for brand in brands:
                if len(products) == 40:
                    break
                products.append(
                    {
                        "sku": f"{letter}-{numbers[len(products)]}",
                        "name": f"{brand} {ptype.title()}",
                        "type": ptype,
                        "category": category,
                        "price": rng.choice([19, 24, 29, 39, 49, 59, 79, 99, 149, 199, 249]) + 0.99,
                        "stock": rng.choice([0, 2, 5, 8, 12, 17, 25, 40, 60]),
                    }
                )
    return products


PRODUCTS = _build_catalogue()
PRODUCT_BY_SKU = {p["sku"]: p for p in PRODUCTS}
PRODUCT_TYPES = sorted({p["type"] for p in PRODUCTS})


def _tool(name, description, properties, required):
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS = [
    _tool(
        "search_product",
        "Search the catalogue by product name or type.",
        {
            "query": {"type": "string", "description": "Product name or type, e.g. 'desk lamp'."},
            "category": {
                "type": "string",
                "enum": sorted(_CATEGORIES),
                "description": "Only search this category.",
            },
        },
        ["query"],
    ),
    _tool(
        "check_inventory",
        "Units in stock for one SKU.",
        {
            "sku": {"type": "string", "description": "Product SKU, e.g. 'A-113'."},
        },
        ["sku"],
    ),
    _tool(
        "create_order",
        "Place an order for a customer.",
        {
            "sku": {"type": "string"},
            "quantity": {"type": "integer", "minimum": 1},
            "customer_id": {"type": "string", "description": "e.g. 'C-2041'."},
        },
        ["sku", "quantity", "customer_id"],
    ),
    _tool(
        "get_order_status",
        "Status and delivery estimate of an order.",
        {
            "order_id": {"type": "string", "description": "e.g. 'ORD-58213'."},
        },
        ["order_id"],
    ),
    _tool(
        "schedule_callback",
        "Book a phone call from a sales person.",
        {
            "customer_id": {"type": "string"},
            "time": {"type": "string", "description": "Day and time, e.g. 'Monday 14:30'."},
        },
        ["customer_id", "time"],
    ),
    # distractors: plausible-looking, never the right call in this domain
    _tool(
        "track_parcel",
        "Carrier tracking for a parcel tracking number.",
        {
            "tracking_number": {"type": "string"},
        },
        ["tracking_number"],
    ),
    _tool(
        "send_marketing_email",
        "Send a marketing email to a customer.",
        {
            "customer_id": {"type": "string"},
            "subject": {"type": "string"},
        },
        ["customer_id", "subject"],
    ),
]
TOOL_NAMES = [t["function"]["name"] for t in TOOLS]


# --- the shop's tools, so every tool message holds a consistent result -------------

_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
_JSON_TYPES = {"string": str, "integer": int}


def run_tool(name, args, rng):
    """The shop's answer to a call; a bad call gets an error result, as a real API would."""
    schema = _SCHEMAS.get(name)
    if schema is None:
        return {"error": f"unknown tool: {name}"}
    for key in schema["required"]:
        if key not in args:
            return {"error": f"missing argument: {key}"}
    for key, value in args.items():
        prop = schema["properties"].get(key)
        if prop is None:
            return {"error": f"unexpected argument: {key}"}
        if not isinstance(value, _JSON_TYPES[prop["type"]]) or isinstance(value, bool):
            return {"error": f"{key} must be a{'n' if prop['type'] == 'integer' else ''} {prop['type']}"}
        if value not in prop.get("enum", [value]):
            return {"error": f"unknown {key}: {value}"}
    if name == "search_product":
        query = args["query"].lower()
        hits = [
            p
            for p in PRODUCTS
            if (query == p["type"] or query == p["name"].lower())
            and args.get("category", p["category"]) == p["category"]
        ]
        return [{"sku": p["sku"], "name": p["name"], "price": p["price"]} for p in hits[:3]]
    if name in ("check_inventory", "create_order") and args["sku"] not in PRODUCT_BY_SKU:
        return {"error": f"unknown sku: {args['sku']}"}
    if name == "check_inventory":
        return {"sku": args["sku"], "in_stock": PRODUCT_BY_SKU[args["sku"]]["stock"]}
    if name == "create_order":
        product = PRODUCT_BY_SKU[args["sku"]]
        if product["stock"] < args["quantity"]:
            return {"error": "insufficient stock", "available": product["stock"]}
        return {
            "order_id": _order_id(rng),
            "status": "confirmed",
            "customer_id": args["customer_id"],
            "total": round(product["price"] * args["quantity"], 2),
        }
    if name == "get_order_status":
        if not re.fullmatch(r"ORD-\d{5}", args["order_id"]):
            return {"error": f"unknown order: {args['order_id']}"}
        return {
            "order_id": args["order_id"],
            "status": rng.choice(["processing", "shipped", "delivered"]),
            "eta": rng.choice(_DAYS),
        }
    if name == "schedule_callback":
        if len(args["time"].split()) != 2:
            return {"error": "time needs a day and an hour"}
        return {"status": "scheduled", "customer_id": args["customer_id"], "time": args["time"]}
    if name == "track_parcel":
        return {"error": f"unknown tracking number: {args['tracking_number']}"}
    return {"status": "sent"}  # send_marketing_email


# Customer and order IDs come from fixed pools (the shop's customers and recent orders),
# and callbacks from fixed quarter-hour slots: the demo tokenizer gives each
# of them one token, so the tiny model copies them with one attention step. Copying a
# random number digit by digit needs far more pre-training than the demo's budget.
_ID_RNG = random.Random(7)
CUSTOMER_IDS = [f"C-{n}" for n in _ID_RNG.sample(range(1000, 10000), 16)]
ORDER_IDS = [f"ORD-{n}" for n in _ID_RNG.sample(range(10000, 100000), 24)]
TIME_SLOTS = [f"{h:02d}:{m}" for h in range(9, 18) for m in ("00", "15", "30", "45")]
# The shop's customer directory: each id belongs to one person, and the agent addresses them by name.
# That gives every id a meaning of its own (a tiny model learns to tell tokens apart only when telling
# them apart predicts something), which it needs before it can copy an id from the context.
CUSTOMERS = dict(zip(CUSTOMER_IDS, _PEOPLE, strict=True))


def _order_id(rng):
    return rng.choice(ORDER_IDS)


def _customer_id(rng):
    return rng.choice(CUSTOMER_IDS)


def _time(rng):
    return f"{rng.choice(_DAYS)} {rng.choice(TIME_SLOTS)}"


# --- phrasings ------------------------------------------------------------------------------
# A user turn is opener + core + suffix. The core is one "A" part x one "B" part of its intent
# (e.g. "have you got {sku}" + " on hand"). A quarter of each intent's A x B combinations is held
# out: the "unseen" split uses only those, and nothing the base, SFT or DPO train on does. Every
# A part and every B part still occurs in seen combinations, so an unseen prompt is a new
# composition of known pieces, the way a real user rephrases.

OPENERS = [
    "",
    "Hi, ",
    "Hello, ",
    "Quick question: ",
    "Hey, ",
    "Excuse me, ",
    "Right, ",
    "OK, ",
    "Sorry, ",
    "Good day, ",
]
SUFFIXES = ["", " please", " thanks", " if you can", " thank you", " today", " if possible"]

_ORDER_PARTS = [  # an order's "A" parts, whether or not the customer id is in the same turn
    "please order {qty} of {sku}",
    "I'd like {qty} x {sku}",
    "buy {qty} units of {sku}",
    "put {qty} {sku} on order",
    "I want {qty} of {sku}",
    "place an order for {qty} {sku}",
    "get me {qty} {sku}",
    "send {qty} of {sku}",
]
CORES = {
    "search": (
        [
            "do you sell a {type}",
            "I'm looking for a {type}",
            "have you got a {type}",
            "show me a {type}",
            "I need a {type}",
            "can I see a {type}",
            "find me a {type}",
            "what about a {type}",
        ],
        ["", " in your shop", " from the catalogue", " that you carry", " on your site", " for my home"],
    ),
    "stock_sku": (
        [
            "is {sku}",
            "have you got {sku}",
            "do you still have {sku}",
            "can you check if {sku} is",
            "I wonder if {sku} is",
            "tell me if {sku} is",
            "check that {sku} is",
            "is item {sku}",
        ],
        [" in stock", " on hand", " available", " left in the warehouse", " ready to ship", " on the shelf"],
    ),
    "order_sku": (  # the customer id is in the same turn
        _ORDER_PARTS,
        [
            " for customer {cid}",
            ", my customer ID is {cid}",
            ", I'm {cid}",
            " on account {cid}",
            " for {cid}",
            ", customer number {cid}",
        ],
    ),
    "order_known": (  # the customer gave their id in an earlier turn
        _ORDER_PARTS,
        ["", " for me", " on my account", " as well", " under my name", " to my address"],
    ),
    "order_status": (
        [
            "where is order {oid}",
            "what's the status of {oid}",
            "any news on {oid}",
            "can you look up {oid}",
            "I'm waiting for {oid}",
            "tell me about order {oid}",
            "check order {oid}",
            "how is {oid} doing",
        ],
        ["", " now", " at the moment", " this week", " so far", " by any chance"],
    ),
    "callback": (
        [
            "please call me back on {time}",
            "can someone phone me on {time}",
            "book a call for {time}",
            "I'd like a callback on {time}",
            "ring me on {time}",
            "schedule a call on {time}",
            "have a sales person call me on {time}",
            "set up a phone call on {time}",
        ],
        [
            ", I'm {cid}",
            ", customer {cid}",
            " for customer {cid}",
            ", my ID is {cid}",
            " on account {cid}",
            ", customer number {cid}",
        ],
    ),
    "policy": (
        [
            "what is your {topic} policy",
            "tell me about {topic}",
            "how does {topic} work",
            "explain {topic}",
            "what are the rules for {topic}",
            "I have a question about {topic}",
            "what should I know about {topic}",
            "how do you handle {topic}",
        ],
        ["", " with you", " at Northwind", " these days", " for my order", " in general"],
    ),
    "greeting_customer": (
        [
            "I'm {person}",
            "{person} here",
            "this is {person}",
            "my name is {person}",
            "{person} speaking",
            "it's {person}",
            "{person} calling",
            "you're talking to {person}",
        ],
        [
            ", customer {cid}",
            ", my customer ID is {cid}",
            " ({cid})",
            ", account {cid}",
            ", ID {cid}",
            ", customer number {cid}",
        ],
    ),
}
_QUESTIONS = {"search", "stock_sku", "order_status", "policy"}


def _held_out(a: int, b: int) -> bool:
    """The fixed quarter of an intent's A x B combinations kept for the unseen split: every A part and
    every B part keeps seen combinations."""
    return (a + 2 * b) % 4 == 0


def combinations(intent: str, split: str) -> list[tuple[int, int]]:
    parts_a, parts_b = CORES[intent]
    return [
        (a, b)
        for a in range(len(parts_a))
        for b in range(len(parts_b))
        if _held_out(a, b) == (split == "unseen")
    ]


def phrase(intent: str, a: int, b: int, opener: int, suffix: int, **slots) -> str:
    parts_a, parts_b = CORES[intent]
    text = OPENERS[opener] + parts_a[a] + parts_b[b] + SUFFIXES[suffix]
    text = text[0].upper() + text[1:]
    return text.format(**slots) + ("?" if intent in _QUESTIONS else ".")


# --- the shop's policy: what the base model learnt (old) and what changed since (new) ----------
# The base model is pre-trained on the old policy only. Annotators correct outdated answers with the
# new one (a knowledge fix: SFT); `facts` are what a right answer must say.
POLICY_OLD = {
    "returns": ("You can return any item within 30 days of delivery for a full refund.", ["30 days"]),
    "shipping": ("Shipping is free on orders over $50 and takes 2 to 4 working days.", ["over $50"]),
    "warranty": ("Every product carries a two-year warranty against defects.", ["two-year"]),
    "payment": ("We accept credit cards, PayPal and bank transfer.", ["bank transfer"]),
}
POLICY_NEW = {
    "returns": ("You can return any item within 60 days of delivery for a full refund.", ["60 days"]),
    "shipping": ("Shipping is free on orders over $35 and takes 1 to 3 working days.", ["over $35"]),
    "warranty": ("Every product carries a three-year warranty against defects.", ["three-year"]),
    "payment": ("We accept credit cards, PayPal, bank transfer and Apple Pay.", ["Apple Pay"]),
}
POLICY_TOPICS = sorted(POLICY_NEW)

# --- mistakes tied to context ------------------------------------------------------------------
# The unreliable base agent's failures depend on where a request comes in the conversation, never on
# its phrasing: so a fix learnt on seen phrasings can carry over to unseen ones.
#   stock follow-up      -> answers from memory instead of calling check_inventory   (Tool not called)
#   status follow-up     -> calls track_parcel instead of get_order_status            (Wrong tool)
#   order, id from before-> quantity written as a string                              (Wrong arguments)
#   search follow-up     -> writes a made-up <tool_response> instead of calling       (Fabricated tool result)
FAILURES = {
    "stock_followup": "no_call",
    "status_followup": "wrong_tool",
    "order_known": "wrong_args:qty_str",
    "search_followup": "fabricate",
}
SPLITS = ("seen", "unseen")


def _corrupt(kind, args):
    """The systematic argument mistakes of an unreliable agent (each really wrong)."""
    args = dict(args)
    if kind == "sku_lower":
        args["sku"] = args["sku"].lower()
    elif kind == "sku_nodash":
        args["sku"] = args["sku"].replace("-", "")
    elif kind == "qty_str":
        args["quantity"] = str(args["quantity"])
    elif kind == "cid_missing":
        del args["customer_id"]
    elif kind == "oid_digits":
        args["order_id"] = args["order_id"].split("-")[1]
    elif kind == "oid_key":
        args = {"order_number": args["order_id"]}
    elif kind == "time_only":
        args["time"] = args["time"].split()[1]
    elif kind == "plural":
        args["query"] += "s"
    elif kind == "query_lower":
        args["query"] = args["query"].lower()
    elif kind == "drop_category":
        args.pop("category", None)
    else:
        raise ValueError(kind)
    return args


def call_text(name, args):
    """A tool call as the model writes it (the chat template renders the same text)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


class _Conversation:
    """Builds one conversation. With flaw_rate > 0 the failure contexts get the unreliable agent's
    mistake with that probability, and policy answers are the old policy (the base model's world)."""

    def __init__(self, rng, split, flaw_rate):
        self.rng, self.split, self.flaw_rate = rng, split, flaw_rate
        self.messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        self.customer_id = None  # set when the customer introduced themselves
        self.last_results = []  # products of the last search
        self.flaws = []
        self.templates = []
        self.contexts = []  # per user turn: the failure context it is in, or None
        self.facts = []  # per user turn: facts a right answer must state

    # -- primitives --
    def user(self, intent, context=None, facts=(), **slots):
        a, b = self.rng.choice(combinations(intent, self.split))
        opener = self.rng.randrange(len(OPENERS)) if self.rng.random() < 0.6 else 0
        suffix = self.rng.randrange(len(SUFFIXES)) if self.rng.random() < 0.5 else 0
        self.messages.append({"role": "user", "content": phrase(intent, a, b, opener, suffix, **slots)})
        self.templates.append(f"{intent}:{a}x{b}")
        self.contexts.append(context)
        self.facts.append(list(facts))
        flaw = FAILURES.get(context)
        return flaw if (flaw and self.flaw_rate and self.rng.random() < self.flaw_rate) else None

    def say(self, text):
        self.messages.append({"role": "assistant", "content": text})

    def call(self, *calls):
        """calls: (name, args) pairs, one assistant turn; appends the tool results."""
        tool_calls = [
            {
                "id": f"call_{self.rng.randrange(16**8):08x}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for name, args in calls
        ]
        self.messages.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        results = []
        for tool_call, (name, args) in zip(tool_calls, calls, strict=True):
            result = run_tool(name, args, self.rng)
            self.messages.append(
                {"role": "tool", "tool_call_id": tool_call["id"], "content": json.dumps(result)}
            )
            results.append(result)
        return results

    def flawed(self, flaw, call, invented_answer, fake_result=None, wrong_tool=None):
        """Writes the designated mistake instead of the right turn (after a wrong call, the shop's answer
        and a reply too)."""
        kind, _, detail = flaw.partition(":")
        name, args = call
        if kind == "no_call":
            self.say(invented_answer)
        elif kind == "fabricate":
            result = fake_result if fake_result is not None else run_tool(name, args, self.rng)
            self.say("<tool_response>\n" + json.dumps(result) + "\n</tool_response>\n" + invented_answer)
        elif kind in ("wrong_args", "wrong_tool"):
            wrong = wrong_tool if kind == "wrong_tool" else (name, _corrupt(detail, args))
            (result,) = self.call(wrong)
            self.say(_generic_reply(wrong[0], result))
        else:
            raise ValueError(flaw)
        self.flaws.append(flaw)

    # -- episodes --
    def greeting(self):
        self.customer_id = _customer_id(self.rng)
        person = CUSTOMERS[self.customer_id]
        self.user("greeting_customer", person=person, cid=self.customer_id)
        self.say(f"Hello {person}! How can I help you today?")

    def policy(self, follow_up):
        topic = self.rng.choice(POLICY_TOPICS)
        text, facts = POLICY_NEW[topic]
        self.user("policy", facts=facts, topic=topic)
        if self.flaw_rate:  # the base model's world: the policy before it changed
            text = POLICY_OLD[topic][0]
        self.say(text + " Anything else I can help with?")

    def search(self, follow_up):
        if self.rng.random() < 0.1:
            ptype = self.rng.choice(_UNKNOWN_TYPES)
        else:
            ptype = self.rng.choice(PRODUCT_TYPES)
        args = {"query": ptype}
        flaw = self.user("search", context="search_followup" if follow_up else None, type=ptype)
        if flaw:
            self.flawed(
                flaw,
                ("search_product", args),
                f"We have a {ptype} for $49.99.",
                fake_result=[{"sku": "L-100", "name": f"Premium {ptype.title()}", "price": 49.99}],
            )
            return
        (results,) = self.call(("search_product", args))
        self.last_results = results
        if not results:
            self.say(f"Sorry, we don't carry any {ptype} at the moment.")
        else:
            listing = "; ".join(f"{r['name']} ({r['sku']}, ${r['price']:.2f})" for r in results)
            self.say(f"We have {len(results)} option{'s' if len(results) > 1 else ''}: {listing}.")

    def stock_sku(self, follow_up):
        product = self.rng.choice(PRODUCTS)
        sku = product["sku"]
        flaw = self.user("stock_sku", context="stock_followup" if follow_up else None, sku=sku)
        if flaw:
            self.flawed(flaw, ("check_inventory", {"sku": sku}), f"Yes, {sku} is in stock and ready to ship.")
            return
        (result,) = self.call(("check_inventory", {"sku": sku}))
        self.say(_stock_reply(sku, result["in_stock"]))

    def _order(self, flaw, sku, qty, cid):
        args = {"sku": sku, "quantity": qty, "customer_id": cid}
        if flaw:
            self.flawed(flaw, ("create_order", args), "")
            return
        (result,) = self.call(("create_order", args))
        if "error" in result:
            self.say(
                f"Sorry, only {result['available']} units of {sku} are available. "
                "Would you like to order fewer?"
            )
        else:
            self.say(
                f"Your order {result['order_id']} for {qty} x {sku} is confirmed, {CUSTOMERS[cid]}. "
                f"Total: ${result['total']:.2f}."
            )

    def order(self, follow_up):
        product = self.rng.choice(PRODUCTS)
        qty = self.rng.choice([1, 1, 2, 2, 3, 4, 5])
        if self.customer_id:
            flaw = self.user("order_known", context="order_known", qty=qty, sku=product["sku"])
            self._order(flaw, product["sku"], qty, self.customer_id)
            return
        cid = _customer_id(self.rng)
        flaw = self.user("order_sku", qty=qty, sku=product["sku"], cid=cid)
        self._order(flaw, product["sku"], qty, cid)

    def order_status(self, follow_up):
        oid = _order_id(self.rng)
        flaw = self.user("order_status", context="status_followup" if follow_up else None, oid=oid)
        if flaw:
            self.flawed(
                flaw,
                ("get_order_status", {"order_id": oid}),
                "",
                wrong_tool=("track_parcel", {"tracking_number": oid}),
            )
            return
        (result,) = self.call(("get_order_status", {"order_id": oid}))
        if result["status"] == "delivered":
            self.say(f"Order {oid} has been delivered.")
        else:
            self.say(f"Order {oid} is {result['status']}; expected delivery on {result['eta']}.")

    def callback(self, follow_up):
        cid = self.customer_id or _customer_id(self.rng)
        when = _time(self.rng)
        self.user("callback", time=when, cid=cid)
        self.call(("schedule_callback", {"customer_id": cid, "time": when}))
        part = "morning" if when.split()[1] < "12:00" else "afternoon"
        self.say(f"Done: a sales person will call you, {CUSTOMERS[cid]}, on {when} ({part}).")


def _generic_reply(name, result):
    """What the agent says after a call went through (used after its wrong calls)."""
    if isinstance(result, dict) and "error" in result:
        return f"Sorry, that did not work ({result['error']})."
    if name == "search_product":
        if not result:
            return "Sorry, I found nothing for that."
        return "I found: " + "; ".join(f"{r['name']} ({r['sku']}, ${r['price']:.2f})" for r in result) + "."
    if name == "check_inventory":
        return f"{result['sku']}: {result['in_stock']} in stock."
    if name == "create_order":
        return f"Order {result['order_id']} is confirmed. Total: ${result['total']:.2f}."
    if name == "get_order_status":
        return f"Order {result['order_id']} is {result['status']}."
    if name == "schedule_callback":
        return f"Done: we will call you on {result['time']}."
    return "Done: I sent you an email."


def _stock_reply(what, units):
    if units == 0:
        return f"Sorry, {what} is out of stock right now."
    return f"Yes, {what} is in stock: {units} units available."


# how often each task comes up; follow-ups are common (most conversations hold several requests)
_TASK_WEIGHTS = {"search": 16, "stock_sku": 20, "order": 16, "order_status": 18, "callback": 8, "policy": 12}


def _one_conversation(rng, split, flaw_rate, n_tasks=None):
    conv = _Conversation(rng, split, flaw_rate)
    episodes = []
    if rng.random() < 0.4:
        conv.greeting()
        episodes.append("greeting")
    n_tasks = n_tasks or rng.choices([1, 2, 3, 4], weights=[30, 38, 22, 10])[0]
    tasks, weights = list(_TASK_WEIGHTS), list(_TASK_WEIGHTS.values())
    done = 0
    while done < n_tasks:
        task = rng.choices(tasks, weights=weights)[0]
        getattr(conv, task)(follow_up=done > 0)
        episodes.append(task)
        done += 1
    return conv, episodes


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def generate_conversations(n, seed=0, split="seen", flaw_rate=0.0):
    """n OpenAI-format conversations. flaw_rate > 0 writes the unreliable agent's mistakes in their
    contexts and the old policy (the demo base model's pre-training data)."""
    _check_split(split)
    rng = random.Random(f"conversations-{split}-{seed}-{flaw_rate}")
    out = []
    for i in range(n):
        conv, episodes = _one_conversation(rng, split, flaw_rate)
        out.append(
            {
                "external_id": f"demo-{split}-{seed}-{i:05d}",
                "messages": conv.messages,
                "tools": TOOLS,
                "metadata": {
                    "scenario": episodes[-1],
                    "episodes": episodes,
                    "split": split,
                    "templates": conv.templates,
                    "contexts": conv.contexts,
                    "flaws": conv.flaws,
                    "turn_depth": sum(m["role"] == "user" for m in conv.messages),
                },
            }
        )
    return out


def _case(conv, j, external_id, split, kind):
    messages = conv.messages
    user_turns = [k for k, m in enumerate(messages[:j]) if m["role"] == "user"]
    turn = len(user_turns) - 1
    expected = dict(messages[j])
    facts = conv.facts[turn] if messages[j - 1]["role"] == "user" else []
    if facts:
        expected["facts"] = facts
    return {
        "external_id": external_id,
        "messages": messages[:j],
        "tools": TOOLS,
        "expected": expected,
        "metadata": {
            "scenario": conv.templates[turn].split(":")[0],
            "split": split,
            "kind": kind,
            "template": conv.templates[turn],
            "context": "reply" if messages[j - 1]["role"] == "tool" else (conv.contexts[turn] or "clean"),
            "turn_depth": len(user_turns),
            "expects_call": bool(messages[j].get("tool_calls")),
        },
    }


def eval_prompts(n, seed=0, split="seen"):
    """n held-out cases: a correct context ending in a user or tool turn, and the assistant turn that
    should follow (policy answers carry the new policy's `facts`). Drawn from a stream separate from
    generate_conversations, so the same seed never repeats a training conversation. Mostly turns that
    answer the user, often the last request of the conversation: where the agent decides to call."""
    _check_split(split)
    rng = random.Random(f"eval-{split}-{seed}")
    cases = []
    for i in range(n):
        conv, _ = _one_conversation(rng, split, 0.0)
        messages = conv.messages
        answers = [
            j
            for j, m in enumerate(messages)
            if m["role"] == "assistant" and messages[j - 1]["role"] == "user"
        ]
        answers = [
            j
            for j in answers
            if conv.templates[sum(m["role"] == "user" for m in messages[:j]) - 1].split(":")[0]
            != "greeting_customer"
        ]
        replies = [
            j
            for j, m in enumerate(messages)
            if m["role"] == "assistant" and messages[j - 1]["role"] == "tool"
        ]
        roll = rng.random()
        if roll < 0.15 and replies:
            j = rng.choice(replies)
        elif roll < 0.6:
            j = answers[-1]
        else:
            j = rng.choice(answers)
        cases.append(_case(conv, j, f"eval-{split}-{seed}-{i:05d}", split, "decision"))
    return cases


def multiturn_cases(n_dialogues, seed=0, split="unseen"):
    """Every assistant turn of n held-out dialogues of two or more requests, each with its gold
    context: the calls and the replies that follow tool results (where a damaged model garbles text)."""
    _check_split(split)
    rng = random.Random(f"multiturn-{split}-{seed}")
    cases = []
    for i in range(n_dialogues):
        conv, _ = _one_conversation(rng, split, 0.0, n_tasks=rng.choice([2, 3, 4]))
        for j, m in enumerate(conv.messages):
            if m["role"] == "assistant":
                cases.append(_case(conv, j, f"multiturn-{split}-{seed}-{i:04d}-{j:02d}", split, "multiturn"))
    return cases


def knowledge_cases(n, seed=0, split="unseen"):
    """n policy questions (as first or follow-up requests) whose right answer states the new policy."""
    _check_split(split)
    rng = random.Random(f"knowledge-{split}-{seed}")
    cases = []
    while len(cases) < n:
        conv = _Conversation(rng, split, 0.0)
        if rng.random() < 0.4:
            conv.greeting()
        if rng.random() < 0.5:
            getattr(conv, rng.choice(["search", "stock_sku", "order_status"]))(follow_up=False)
        conv.policy(follow_up=True)
        cases.append(
            _case(
                conv, len(conv.messages) - 1, f"knowledge-{split}-{seed}-{len(cases):04d}", split, "knowledge"
            )
        )
    return cases


# --- disjointness of the held-out suites -------------------------------------------------------

_SLOT = re.compile(
    r"\b[A-Z]-\d{3}\b|\bC-\d{4}\b|\bORD-\d{5}\b|\b\d{2}:\d{2}\b|\b\d+\b"
    r"|\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday)\b"
)


def mask_slots(text: str) -> str:
    """A user turn with its slot values (SKUs, ids, times, numbers, days, product types, names,
    topics) replaced by placeholders: what a phrasing is, apart from its values."""
    text = _SLOT.sub("#", text)
    for word in sorted(PRODUCT_TYPES + _UNKNOWN_TYPES + _PEOPLE + POLICY_TOPICS, key=len, reverse=True):
        text = text.replace(word, "@")
    return text


def _grams(words, n=4):
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def disjointness(train_conversations, cases) -> dict:
    """How far held-out cases are from the training turns: the share of cases whose last user turn
    equals a training user turn once slots are masked (must be 0), and the share holding a 4-gram
    (slots masked) that no training user turn has."""
    train_turns = {
        mask_slots(m["content"]) for c in train_conversations for m in c["messages"] if m["role"] == "user"
    }
    train_grams = set().union(*(_grams(t.split()) for t in train_turns)) if train_turns else set()
    equal = novel = 0
    for case in cases:
        last = next(m["content"] for m in reversed(case["messages"]) if m["role"] == "user")
        masked = mask_slots(last)
        equal += masked in train_turns
        novel += bool(_grams(masked.split()) - train_grams)
    n = len(cases)
    return {
        "cases": n,
        "equal_to_a_training_turn": equal / n if n else None,
        "with_an_unseen_4gram": novel / n if n else None,
    }
