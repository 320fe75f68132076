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
_PEOPLE = ["Maria", "John", "Aiko", "Pedro", "Fatima", "Liam", "Chen", "Olga", "Samir", "Grace"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
_POLICIES = {
    "returns": "You can return any item within 30 days of delivery for a full refund.",
    "shipping": "Shipping is free on orders over $50 and takes 2 to 4 working days.",
    "warranty": "Every product carries a two-year warranty against defects.",
    "payment": "We accept credit cards, PayPal and bank transfer.",
}


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
        return {"status": "scheduled", "time": args["time"]}
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


def _order_id(rng):
    return rng.choice(ORDER_IDS)


def _customer_id(rng):
    return rng.choice(CUSTOMER_IDS)


def _time(rng):
    return f"{rng.choice(_DAYS)} {rng.choice(TIME_SLOTS)}"


# --- phrasing templates -------------------------------------------------------------
# intent -> {"seen": [(template, flaw)], "unseen": [template]}
# Flaws: None (reliable), "no_call" (answers without calling, inventing the result),
# "fabricate" (writes a made-up <tool_response> and answer instead of calling),
# "wrong_args:<kind>", "wrong_tool", "false_call" (calls when no call is due),
# "skip_check" (answers after the search without checking stock), "single_call"
# (one call where two were due), "too_short" and "repeat" (format defects).

TEMPLATES = {
    "greeting": {
        "seen": [
            ("Hi!", None),
            ("Hello there.", "too_short"),
            ("Good morning!", None),
            ("Hey, is anyone there?", "too_short"),
            ("Hello, I have a question.", None),
        ],
        "unseen": ["Good afternoon, hello!", "Hiya, can you help me today?"],
    },
    "greeting_customer": {
        "seen": [
            ("Hi, I'm {person}, customer {cid}.", "false_call"),
            ("Hello! {person} here, my customer ID is {cid}.", None),
            ("Good morning, this is {person} ({cid}).", "false_call"),
        ],
        "unseen": ["Hey there, {person} speaking, account {cid}."],
    },
    "policy": {
        "seen": [
            ("What is your {topic} policy?", None),
            ("Can you tell me about {topic}?", "false_call"),
            ("Quick question about {topic}.", "repeat"),
            ("How does {topic} work with you?", "false_call"),
            ("I'd like to know your {topic} terms.", "false_call"),
        ],
        "unseen": ["Could you explain {topic} to me?", "What are the rules for {topic}?"],
    },
    "search": {
        "seen": [
            ("I'm looking for a {type}.", None),
            ("Do you sell any {type}?", "no_call"),
            ("Can you show me {type} options?", "wrong_args:add_category"),
            ("What {type} models do you carry?", "fabricate"),
            ("I need a new {type}. What have you got?", "no_call"),
            ("Got anything like a {type}?", "wrong_args:plural"),
            ("Show me your {type} range.", "wrong_tool"),
        ],
        "unseen": ["Is there a {type} I could buy?", "Which {type} do you stock?"],
    },
    "search_category": {
        "seen": [
            ("Search for a {type} in {category}, please.", "fabricate"),
            ("Any {type} in the {category} department?", None),
            ("From your {category} range, I want a {type}.", "wrong_args:drop_category"),
        ],
        "unseen": ["Find me a {type} from {category}."],
    },
    "stock_sku": {
        "seen": [
            ("Is {sku} in stock?", None),
            ("How many {sku} do you have left?", "no_call"),
            ("Check stock for {sku}, please.", "wrong_args:sku_lower"),
            ("Can you check availability of item {sku}?", "fabricate"),
            ("Do you still have {sku}?", "wrong_tool"),
            ("Stock level for {sku}?", "wrong_args:sku_nodash"),
        ],
        "unseen": ["I want to know if {sku} is available.", "Any units of {sku} left?"],
    },
    "stock_name": {
        "seen": [
            ("Is the {name} in stock?", None),
            ("Do you have the {name} available?", "no_call"),
            ("How many {name} units are left?", "skip_check"),
            ("Can you check the {name} for me?", "fabricate"),
            ("I'd like to know if the {name} is available.", "wrong_args:query_lower"),
        ],
        "unseen": ["Is there any {name} left in the warehouse?", "Check if you have the {name}."],
    },
    "compare_stock": {
        "seen": [
            ("Do you have {sku} and {sku2} in stock?", None),
            ("Check stock for {sku} and {sku2}.", "single_call"),
            ("How many {sku} and {sku2} are left?", "no_call"),
        ],
        "unseen": ["Are {sku} and {sku2} both available?"],
    },
    "order_sku": {
        "seen": [
            ("Please order {qty} of {sku} for customer {cid}.", None),
            ("I'd like to buy {qty} x {sku}. My customer ID is {cid}.", "wrong_args:qty_str"),
            ("Order {sku}, quantity {qty}, customer {cid}.", "fabricate"),
            ("Customer {cid} here, I want {qty} units of {sku}.", "no_call"),
            ("Can you place an order for {qty_word} {sku}? I'm {cid}.", "wrong_args:cid_missing"),
            ("Put {qty} {sku} on order for {cid}.", "wrong_args:sku_lower"),
        ],
        "unseen": [
            "Buy {qty} pieces of {sku} for account {cid}.",
            "{cid} wants {qty} of {sku}, please order them.",
        ],
    },
    "order_sku_known": {  # the customer gave their ID earlier in the conversation
        "seen": [
            ("Please order {qty} of {sku} for me.", None),
            ("I'll have {qty} units of {sku}.", "wrong_args:cid_missing"),
            ("Order {qty} {sku} on my account.", "no_call"),
        ],
        "unseen": ["Get me {qty} of {sku}, please."],
    },
    "order_after_search": {  # follows a search: the SKU is in an earlier tool result
        "seen": [
            ("I'll take {qty} of the {name}. Customer ID {cid}.", None),
            ("Order {qty} {name} for {cid}, please.", "wrong_args:sku_nodash"),
            ("Great, get me {qty} of the {name}; I'm customer {cid}.", "no_call"),
            ("Let's go with the {name}, {qty} units, account {cid}.", "wrong_args:qty_str"),
        ],
        "unseen": ["Please buy {qty} {name} for me, customer {cid}."],
    },
    "order_name": {  # search first, ask for the missing details, then order
        "seen": [
            ("I want to order the {name}.", None),
            ("Can I buy the {name}?", "no_call"),
            ("I'd like to purchase the {name}.", "fabricate"),
        ],
        "unseen": ["Put the {name} in an order for me."],
    },
    "order_details": {  # the answer to "how many, and your customer ID?"
        "seen": [
            ("{qty}, customer {cid}.", None),
            ("{qty} please, my ID is {cid}.", "wrong_args:qty_str"),
            ("I'll take {qty}. Customer {cid}.", "wrong_args:cid_missing"),
            ("Make it {qty}; customer ID {cid}.", "no_call"),
        ],
        "unseen": ["{qty} units for {cid}."],
    },
    "order_status": {
        "seen": [
            ("Where is my order {oid}?", None),
            ("What's the status of {oid}?", "wrong_args:oid_key"),
            ("Has order {oid} shipped yet?", "no_call"),
            ("Track {oid} for me.", "wrong_tool"),
            ("Any update on order {oid}?", "fabricate"),
        ],
        "unseen": ["Can you look up order {oid}?", "I'm waiting for {oid}, what's happening?"],
    },
    "callback": {
        "seen": [
            ("Please call me back on {time}. I'm {cid}.", None),
            ("Can someone phone me on {time}? Customer {cid}.", "wrong_args:time_only"),
            ("Schedule a callback for {cid} on {time}.", "fabricate"),
            ("I'd like a call on {time}, my ID is {cid}.", "no_call"),
            ("Customer {cid}: callback {time}, please.", "wrong_args:cid_missing"),
        ],
        "unseen": ["Ring me on {time}, customer number {cid}.", "Book a phone call for {time}, ID {cid}."],
    },
}

# how often each task opens an episode
_TASK_WEIGHTS = {
    "search": 19,
    "stock_sku": 12,
    "stock_name": 10,
    "compare_stock": 5,
    "order_sku": 12,
    "order_name": 8,
    "order_status": 10,
    "callback": 8,
    "policy": 8,
}
SPLITS = ("seen", "unseen")


def _corrupt(kind, args):
    """The systematic argument mistakes of the unreliable agent (each really wrong)."""
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
    elif kind == "add_category":
        args["category"] = (
            next(p["category"] for p in PRODUCTS if p["type"] == args["query"])
            if args["query"] in PRODUCT_TYPES
            else "office"
        )
    elif kind == "drop_category":
        del args["category"]
    else:
        raise ValueError(kind)
    return args


def _args_json(args):
    return json.dumps(args)


def call_text(name, args):
    """A tool call as the model writes it (the chat template renders the same text)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


class _Conversation:
    """Builds one conversation; `flaw` turns are written only when flaw_rate > 0."""

    def __init__(self, rng, split, flaw_rate):
        self.rng, self.split, self.flaw_rate = rng, split, flaw_rate
        self.messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        self.customer_id = None  # set when the customer introduced themselves
        self.last_results = []  # products of the last search
        self.flaws = []
        self.templates = []

    # -- primitives --
    def user(self, intent, **slots):
        if self.split == "seen":
            template, flaw = self.rng.choice(TEMPLATES[intent]["seen"])
            index = TEMPLATES[intent]["seen"].index((template, flaw))
        else:
            template, flaw = self.rng.choice(TEMPLATES[intent]["unseen"]), None
            index = TEMPLATES[intent]["unseen"].index(template)
        text = template.format(**slots)
        self.messages.append({"role": "user", "content": text})
        self.templates.append(f"{intent}:{self.split}{index}")
        active = flaw if (flaw and self.flaw_rate and self.rng.random() < self.flaw_rate) else None
        return active

    def say(self, text):
        self.messages.append({"role": "assistant", "content": text})

    def call(self, *calls):
        """calls: (name, args) pairs, one assistant turn; appends the tool results."""
        tool_calls = [
            {
                "id": f"call_{self.rng.randrange(16**8):08x}",
                "type": "function",
                "function": {"name": name, "arguments": _args_json(args)},
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

    def flawed(self, flaw, calls, invented_answer, fake_result=None, wrong_tool=None, label=None):
        """Writes the designated mistake instead of the right turn (and, after a wrong
        call, the shop's answer and a reply); the episode ends there."""
        kind, _, detail = flaw.partition(":")
        name, args = calls[0] if calls else (None, None)
        if kind == "no_call":
            self.say(invented_answer)
        elif kind == "fabricate":
            # invents the tool's answer instead of calling: wrong from the first token
            result = fake_result if fake_result is not None else run_tool(name, args, self.rng)
            self.say("<tool_response>\n" + json.dumps(result) + "\n</tool_response>\n" + invented_answer)
        elif kind in ("wrong_args", "wrong_tool", "single_call"):
            wrong = {
                "wrong_args": [(name, _corrupt(detail, args) if detail else args)] + calls[1:],
                "wrong_tool": [wrong_tool],
                "single_call": calls[:1],
            }[kind]
            results = self.call(*wrong)
            self.say(" ".join(_generic_reply(n, r) for (n, _), r in zip(wrong, results, strict=True)))
        else:
            raise ValueError(flaw)
        self.flaws.append(label or flaw)

    def text_flaw(self, flaw, right_text):
        """Format defects and false calls on turns that need no call."""
        if flaw == "too_short":
            self.say(self.rng.choice(["Hello!", "Sure.", "Yes?"]))
        elif flaw == "repeat":
            self.say(right_text + " Anything else?" * 4)
        else:
            return False
        self.flaws.append(flaw)
        return True

    # -- episodes --
    def greeting(self):
        if self.rng.random() < 0.5:
            self.customer_id = _customer_id(self.rng)
            person = self.rng.choice(_PEOPLE)
            flaw = self.user("greeting_customer", person=person, cid=self.customer_id)
            if flaw == "false_call":
                self.flawed(
                    "wrong_tool",
                    [],
                    "",
                    label=flaw,
                    wrong_tool=(
                        "send_marketing_email",
                        {"customer_id": self.customer_id, "subject": "Welcome"},
                    ),
                )
                return
            self.say(f"Hello {person}! How can I help you today?")
            return
        flaw = self.user("greeting")
        right = self.rng.choice(
            [
                (
                    "Hello! I can help you find products, check stock, and place or track orders. "
                    "What do you need?"
                ),
                "Hi! How can I help you today?",
            ]
        )
        if not (flaw and self.text_flaw(flaw, right)):
            self.say(right)

    def policy(self):
        topic = self.rng.choice(sorted(_POLICIES))
        flaw = self.user("policy", topic=topic)
        right = _POLICIES[topic] + " Anything else I can help with?"
        if flaw == "false_call":
            self.flawed("wrong_tool", [], "", label=flaw, wrong_tool=("search_product", {"query": topic}))
        elif not (flaw and self.text_flaw(flaw, right)):
            self.say(right)

    def search(self):
        with_category = self.rng.random() < 0.25
        if self.rng.random() < 0.1:
            ptype = self.rng.choice(_UNKNOWN_TYPES)
            category = self.rng.choice(sorted(_CATEGORIES))
        else:
            ptype = self.rng.choice(PRODUCT_TYPES)
            category = next(p["category"] for p in PRODUCTS if p["type"] == ptype)
        args = {"query": ptype}
        if with_category:
            args["category"] = category
            flaw = self.user("search_category", type=ptype, category=category)
        else:
            flaw = self.user("search", type=ptype)
        if flaw:
            self.flawed(
                flaw,
                [("search_product", args)],
                f"Yes, we have several {ptype} models in stock! The best seller is $49.99.",
                fake_result=[{"sku": "L-100", "name": f"Premium {ptype.title()}", "price": 49.99}],
                wrong_tool=("check_inventory", {"sku": ptype}),
            )
            return
        (results,) = self.call(("search_product", args))
        self.last_results = results
        if not results:
            self.say(f"Sorry, we don't carry any {ptype} at the moment.")
        else:
            listing = "; ".join(f"{r['name']} ({r['sku']}, ${r['price']:.2f})" for r in results)
            self.say(f"We have {len(results)} option{'s' if len(results) > 1 else ''}: {listing}.")

    def stock_sku(self):
        product = self.rng.choice(PRODUCTS)
        sku = product["sku"]
        flaw = self.user("stock_sku", sku=sku)
        if flaw:
            self.flawed(
                flaw,
                [("check_inventory", {"sku": sku})],
                f"Yes, {sku} is in stock and ready to ship.",
                fake_result={"sku": sku, "in_stock": 10},
                wrong_tool=("search_product", {"query": sku}),
            )
            return
        (result,) = self.call(("check_inventory", {"sku": sku}))
        self.say(_stock_reply(sku, result["in_stock"]))

    def stock_name(self):
        product = self.rng.choice(PRODUCTS)
        name, sku = product["name"], product["sku"]
        flaw = self.user("stock_name", name=name)
        if flaw and flaw != "skip_check":
            self.flawed(
                flaw,
                [("search_product", {"query": name})],
                f"Yes, the {name} is available.",
                fake_result=[{"sku": sku, "name": name, "price": 9.99}],
            )
            return
        (results,) = self.call(("search_product", {"query": name}))
        self.last_results = results
        if flaw == "skip_check":
            self.say(f"The {name} ({sku}) is in stock.")
            self.flaws.append(flaw)
            return
        (result,) = self.call(("check_inventory", {"sku": sku}))
        self.say(_stock_reply(f"the {name} ({sku})", result["in_stock"]))

    def compare_stock(self):
        first, second = self.rng.sample(PRODUCTS, 2)
        flaw = self.user("compare_stock", sku=first["sku"], sku2=second["sku"])
        calls = [("check_inventory", {"sku": first["sku"]}), ("check_inventory", {"sku": second["sku"]})]
        if flaw:
            self.flawed(flaw, calls, f"Both {first['sku']} and {second['sku']} are in stock.")
            return
        results = self.call(*calls)
        self.say("; ".join(f"{r['sku']}: {r['in_stock']} in stock" for r in results) + ".")

    def _order(self, flaw, sku, qty, cid):
        args = {"sku": sku, "quantity": qty, "customer_id": cid}
        if flaw:
            self.flawed(
                flaw,
                [("create_order", args)],
                f"Done! Your order for {qty} x {sku} has been placed.",
                fake_result={"order_id": "ORD-10000", "status": "confirmed", "total": 99.0},
            )
            return
        (result,) = self.call(("create_order", args))
        if "error" in result:
            self.say(
                f"Sorry, only {result['available']} units of {sku} are available. "
                "Would you like to order fewer?"
            )
        else:
            self.say(
                f"Your order {result['order_id']} for {qty} x {sku} is confirmed. "
                f"Total: ${result['total']:.2f}."
            )

    def _quantity(self):
        return self.rng.choice([1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12])

    def order_sku(self):
        product = self.rng.choice(PRODUCTS)
        if self.customer_id and self.rng.random() < 0.7:
            qty = self._quantity()
            flaw = self.user("order_sku_known", qty=qty, sku=product["sku"])
            self._order(flaw, product["sku"], qty, self.customer_id)
            return
        cid = self.customer_id or _customer_id(self.rng)
        qty = self.rng.randint(1, 5)
        flaw = self.user("order_sku", qty=qty, qty_word=_NUMBER_WORDS[qty], sku=product["sku"], cid=cid)
        self._order(flaw, product["sku"], qty, cid)

    def order_after_search(self):
        product = PRODUCT_BY_SKU[self.rng.choice(self.last_results)["sku"]]
        cid = self.customer_id or _customer_id(self.rng)
        qty = self._quantity()
        flaw = self.user("order_after_search", qty=qty, name=product["name"], cid=cid)
        self._order(flaw, product["sku"], qty, cid)

    def order_name(self):
        product = self.rng.choice(PRODUCTS)
        name, sku = product["name"], product["sku"]
        flaw = self.user("order_name", name=name)
        if flaw:
            self.flawed(
                flaw,
                [("search_product", {"query": name})],
                "Sure! How many would you like?",
                fake_result=[{"sku": "X-000", "name": name, "price": 9.99}],
            )
            return
        (results,) = self.call(("search_product", {"query": name}))
        self.last_results = results
        self.say(
            f"Found it: {name} ({sku}), ${product['price']:.2f}. "
            "How many would you like, and what is your customer ID?"
        )
        cid = self.customer_id or _customer_id(self.rng)
        qty = self._quantity()
        flaw = self.user("order_details", qty=qty, cid=cid)
        self._order(flaw, sku, qty, cid)

    def order_status(self):
        oid = _order_id(self.rng)
        flaw = self.user("order_status", oid=oid)
        if flaw:
            self.flawed(
                flaw,
                [("get_order_status", {"order_id": oid})],
                f"Your order {oid} has shipped and will arrive in two days.",
                fake_result={"order_id": oid, "status": "shipped", "eta": "Friday"},
                wrong_tool=("track_parcel", {"tracking_number": oid}),
            )
            return
        (result,) = self.call(("get_order_status", {"order_id": oid}))
        if result["status"] == "delivered":
            self.say(f"Order {oid} has been delivered.")
        else:
            self.say(f"Order {oid} is {result['status']}; expected delivery on {result['eta']}.")

    def callback(self):
        cid = self.customer_id or _customer_id(self.rng)
        when = _time(self.rng)
        flaw = self.user("callback", time=when, cid=cid)
        args = {"customer_id": cid, "time": when}
        if flaw:
            self.flawed(
                flaw,
                [("schedule_callback", args)],
                "Sure, we'll call you then!",
                fake_result={"status": "scheduled", "time": when},
            )
            return
        self.call(("schedule_callback", args))
        self.say(f"Done: a sales person will call you on {when}.")


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


def _one_conversation(rng, split, flaw_rate):
    conv = _Conversation(rng, split, flaw_rate)
    episodes = []
    if rng.random() < 0.3:
        conv.greeting()
        episodes.append("greeting")
    n_tasks = rng.choices([1, 2, 3, 4], weights=[45, 35, 15, 5])[0]
    tasks, weights = list(_TASK_WEIGHTS), list(_TASK_WEIGHTS.values())
    while len(episodes) < n_tasks + (episodes[:1] == ["greeting"]):
        if conv.last_results and episodes[-1] in ("search", "stock_name") and rng.random() < 0.6:
            task = "order_after_search"
        else:
            task = rng.choices(tasks, weights=weights)[0]
        conv.last_results = [] if task != "order_after_search" else conv.last_results
        getattr(conv, task)()
        episodes.append(task)
    return conv, episodes


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def generate_conversations(n, seed=0, split="seen", flaw_rate=0.0):
    """n OpenAI-format conversations. flaw_rate > 0 writes the unreliable agent's
    designated mistakes (the demo base model's pre-training data)."""
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
                    "flaws": conv.flaws,
                    "turn_depth": sum(m["role"] == "user" for m in conv.messages),
                },
            }
        )
    return out


def eval_prompts(n, seed=0, split="seen"):
    """n held-out cases: a correct context ending in a user or tool turn, and the
    assistant turn that should follow. Drawn from a stream separate from
    generate_conversations, so the same seed never repeats a training conversation."""
    _check_split(split)
    rng = random.Random(f"eval-{split}-{seed}")
    cases = []
    for i in range(n):
        conv, episodes = _one_conversation(rng, split, 0.0)
        messages = conv.messages
        turns = [j for j, m in enumerate(messages) if m["role"] == "assistant"]
        # mostly turns that answer the user: that is where the agent decides to call
        weights = [6 if messages[j - 1]["role"] == "user" else 1 for j in turns]
        j = rng.choices(turns, weights=weights)[0]
        context = messages[:j]
        user_turns = [k for k, m in enumerate(context) if m["role"] == "user"]
        cases.append(
            {
                "external_id": f"eval-{split}-{seed}-{i:05d}",
                "messages": context,
                "tools": TOOLS,
                "expected": messages[j],
                "metadata": {
                    "scenario": conv.templates[len(user_turns) - 1].split(":")[0],
                    "split": split,
                    "template": conv.templates[len(user_turns) - 1],
                    "turn_depth": len(user_turns),
                    "expects_call": bool(messages[j].get("tool_calls")),
                },
            }
        )
    return cases
