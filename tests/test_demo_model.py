"""The offline demo domain, tokenizer, chat template and tiny-model plumbing.

The real demo base takes minutes to build; these tests use the "test" size (seconds).
"""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training import demo_domain  # noqa: E402
from training.demo_domain import TOOL_NAMES, TOOLS, eval_prompts, generate_conversations  # noqa: E402

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "check_inventory", "arguments": json.dumps({"sku": "A-113"})},
}
CONVERSATION = [
    {"role": "system", "content": "You sell things."},
    {"role": "user", "content": "Is A-113 in stock?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sku": "A-113", "in_stock": 4}'},
    {"role": "assistant", "content": "Yes, 4 units."},
]


def assert_valid_openai_conversation(messages):
    assert messages[0]["role"] == "system"
    pending = set()
    for m in messages[1:]:
        assert m["role"] in {"user", "assistant", "tool"}
        assert isinstance(m["content"], str)
        if m["role"] == "assistant":
            assert not pending, "a tool call was left without its result"
            for call in m.get("tool_calls", []):
                assert call["type"] == "function" and call["id"]
                assert call["function"]["name"] in TOOL_NAMES
                assert isinstance(json.loads(call["function"]["arguments"]), dict)
                pending.add(call["id"])
            assert m["content"] or m.get("tool_calls")
        elif m["role"] == "tool":
            assert m["tool_call_id"] in pending
            pending.discard(m["tool_call_id"])
            json.loads(m["content"])
    assert messages[-1]["role"] == "assistant"


def test_domain_is_deterministic_and_writes_valid_openai_messages():
    conversations = generate_conversations(60, seed=3)
    assert conversations == generate_conversations(60, seed=3)
    assert conversations != generate_conversations(60, seed=4)
    for conv in conversations:
        assert conv["tools"] == TOOLS
        assert conv["metadata"]["flaws"] == []
        assert conv["metadata"]["turn_depth"] == sum(m["role"] == "user" for m in conv["messages"])
        assert_valid_openai_conversation(conv["messages"])
    assert {c["metadata"]["turn_depth"] for c in conversations} >= {1, 2, 3}
    assert any(not c["messages"][2].get("tool_calls") for c in conversations)  # greetings, policy
    assert len({c["external_id"] for c in conversations}) == 60


def test_tool_specs_are_openai_function_schemas():
    assert {
        "search_product",
        "check_inventory",
        "create_order",
        "get_order_status",
        "schedule_callback",
    } < set(TOOL_NAMES)
    for tool in TOOLS:
        params = tool["function"]["parameters"]
        assert tool["type"] == "function" and params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])


def test_unseen_split_uses_only_held_out_combinations_of_known_parts():
    seen = generate_conversations(200, seed=0, split="seen")
    unseen = generate_conversations(200, seed=0, split="unseen")
    seen_users = {m["content"] for c in seen for m in c["messages"] if m["role"] == "user"}
    unseen_users = {m["content"] for c in unseen for m in c["messages"] if m["role"] == "user"}
    assert not seen_users & unseen_users
    for intent, (parts_a, parts_b) in demo_domain.CORES.items():
        held = set(demo_domain.combinations(intent, "unseen"))
        kept = set(demo_domain.combinations(intent, "seen"))
        assert not held & kept and len(held | kept) == len(parts_a) * len(parts_b)
        assert len(held) == len(parts_a) * len(parts_b) // 4
        # every part still occurs in a seen combination: an unseen prompt is a new composition
        assert {a for a, _ in kept} == set(range(len(parts_a)))
        assert {b for _, b in kept} == set(range(len(parts_b)))
    for c in unseen:
        for template in c["metadata"]["templates"]:
            intent, _, ab = template.partition(":")
            a, b = map(int, ab.split("x"))
            assert (a, b) in demo_domain.combinations(intent, "unseen")
    with pytest.raises(ValueError):
        generate_conversations(1, split="test")


def test_the_unseen_suites_are_disjoint_from_the_built_demo_data():
    """Against the base model's whole pre-training set (the recipe's size and seed) and the contexts
    demo_loop labels: no unseen case's request equals a training turn once slot values are masked, and
    most hold a 4-gram no training turn has."""
    from training.demo_model import SIZES

    recipe = SIZES["base"]
    pretraining = generate_conversations(recipe["conversations"], seed=0, flaw_rate=recipe["flaw_rate"])
    trained_on = pretraining + eval_prompts(600, seed=500)
    for cases in (
        eval_prompts(200, seed=9000, split="unseen"),
        demo_domain.multiturn_cases(50, seed=9000),
        demo_domain.knowledge_cases(100, seed=9000),
    ):
        report = demo_domain.disjointness(trained_on, cases)
        assert report["equal_to_a_training_turn"] == 0, report
        assert report["with_an_unseen_4gram"] >= 0.4, report
    # the control: the seen suite's requests are phrasings the model was trained on
    seen = demo_domain.disjointness(trained_on, eval_prompts(200, seed=9000))
    assert seen["equal_to_a_training_turn"] > 0.3


def test_the_base_model_data_ties_mistakes_to_context_and_knows_the_old_policy():
    flawed = generate_conversations(300, seed=1, flaw_rate=0.85)
    assert flawed == generate_conversations(300, seed=1, flaw_rate=0.85)
    in_context = 0
    for c in flawed:
        assert_valid_openai_conversation(c["messages"])
        in_context += sum(k in demo_domain.FAILURES for k in c["metadata"]["contexts"])
    flaws = [f for c in flawed for f in c["metadata"]["flaws"]]
    assert set(flaws) == set(demo_domain.FAILURES.values())
    # mistakes only where their context is (a first request is never flawed), most of the time there
    assert 0.75 * in_context < len(flaws) <= in_context
    fabricated = [
        m["content"]
        for c in flawed
        for m in c["messages"]
        if m["role"] == "assistant" and "<tool_response>" in m["content"]
    ]
    assert fabricated and all(text.startswith("<tool_response>\n") for text in fabricated)
    said = " ".join(m["content"] for c in flawed for m in c["messages"] if m["role"] == "assistant")
    assert "30 days" in said and "60 days" not in said  # the base's world: the policy before it changed
    right = generate_conversations(300, seed=1)
    said = " ".join(m["content"] for c in right for m in c["messages"] if m["role"] == "assistant")
    assert "60 days" in said and "30 days" not in said


def test_knowledge_and_multiturn_cases_carry_what_they_measure():
    for case in demo_domain.knowledge_cases(20, seed=3):
        facts = case["expected"]["facts"]
        assert facts and all(f in case["expected"]["content"] for f in facts)
        assert case["messages"][-1]["role"] == "user"
    turns = demo_domain.multiturn_cases(10, seed=3)
    assert {c["metadata"]["context"] for c in turns} >= {"clean", "reply"}
    for c in turns:
        expected = {k: v for k, v in c["expected"].items() if k != "facts"}
        assert_valid_openai_conversation(c["messages"] + [expected])


def test_eval_prompts_end_where_the_agent_must_answer():
    cases = eval_prompts(80, seed=0)
    assert cases == eval_prompts(80, seed=0)
    for case in cases:
        assert case["messages"][-1]["role"] in {"user", "tool"}
        assert case["expected"]["role"] == "assistant"
        assert case["tools"] == TOOLS
        assert_valid_openai_conversation(case["messages"] + [case["expected"]])
    expects_call = [c["metadata"]["expects_call"] for c in cases]
    assert 0.3 < sum(expects_call) / len(cases) < 0.9


def test_shop_tools_answer_bad_calls_with_errors():
    product = demo_domain.PRODUCTS[0]
    assert (
        demo_domain.run_tool("check_inventory", {"sku": product["sku"]}, None)["in_stock"] == product["stock"]
    )
    assert "error" in demo_domain.run_tool("check_inventory", {"sku": product["sku"].lower()}, None)
    assert "error" in demo_domain.run_tool(
        "create_order", {"sku": product["sku"], "quantity": "2", "customer_id": "C-1000"}, None
    )
    assert "error" in demo_domain.run_tool("schedule_callback", {"time": "Monday 10:00"}, None)


# --- tokenizer, template and the tiny model ------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from training.demo_model import build_demo_model

    model_dir = tmp_path_factory.mktemp("models") / "tiny"
    info = build_demo_model(model_dir, seed=0, steps=20, size="test", log=lambda *_: None)
    assert not info["cached"]
    return model_dir


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


def test_tokenizer_keeps_tags_whole_and_round_trips(tokenizer):
    from training.demo_model import SPECIAL_TOKENS, TAG_TOKENS

    for tag in SPECIAL_TOKENS + TAG_TOKENS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids) == [tag]
    text = (
        "<think>\nok\n</think>\n<tool_call>\n"
        '{"name": "check_inventory", "arguments": {"sku": "A-113"}}\n</tool_call>'
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # the tags are not special: decoding for display keeps them, drops the template tokens
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_chat_template_renders_tools_calls_results_and_generation_markers(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou sell things.\n# Tools\n")
    assert "\nsearch_product(query, category?)\ncheck_inventory(sku)\n" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-113"}}'
        "\n</tool_call><|im_end|>\n"
    ) in text
    assert (
        '<|im_start|>user\n<tool_response>\n{"sku": "A-113", "in_stock": 4}\n</tool_response><|im_end|>\n'
    ) in text
    assert text.endswith("<|im_start|>assistant\nYes, 4 units.<|im_end|>\n")
    # arguments as an object render exactly like arguments as a JSON string
    as_dict = json.loads(json.dumps(CONVERSATION))
    as_dict[2]["tool_calls"][0]["function"]["arguments"] = {"sku": "A-113"}
    assert tokenizer.apply_chat_template(as_dict, tools=TOOLS, tokenize=False) == text
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:2], tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("Is A-113 in stock?<|im_end|>\n<|im_start|>assistant\n")
    # {% generation %}: the assistant turns, with their <|im_end|>, are what SFT trains on
    out = tokenizer.apply_chat_template(
        CONVERSATION, tools=TOOLS, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, keep in zip(out["input_ids"], out["assistant_masks"], strict=True) if keep]
    assert tokenizer.decode(trained) == (
        '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-113"}}\n</tool_call><|im_end|>'
        "Yes, 4 units.<|im_end|>"
    )


def test_consecutive_tool_results_share_one_user_turn(tokenizer):
    second = dict(CALL, id="call_2")
    messages = CONVERSATION[:2] + [
        {"role": "assistant", "content": "", "tool_calls": [CALL, second]},
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
        {"role": "tool", "tool_call_id": "call_2", "content": "2"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False)
    assert "</tool_call>\n<tool_call>\n" in text
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\n1\n</tool_response>\n"
        "<tool_response>\n2\n</tool_response><|im_end|>\n"
    )


def test_tiny_model_reloads_and_generates(tiny_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from training.demo_model import generate

    info = json.loads((tiny_dir / "build_info.json").read_text())
    assert info["seed"] == 0 and info["steps"] == 20 and info["params"] > 0 and info["loss"] > 0
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    assert model.config.model_type == "qwen3"
    contexts = [case["messages"] for case in eval_prompts(3, seed=5)]
    texts = generate(model, tokenizer, contexts, TOOLS, max_new_tokens=8, batch_size=2)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert "<|im_end|>" not in "".join(texts) and "<|endoftext|>" not in "".join(texts)
    # from a folder, with the details the metrics use; greedy decoding is repeatable
    details = generate(str(tiny_dir), None, contexts, TOOLS, max_new_tokens=8, return_details=True)
    assert [d["text"] for d in details] == texts
    assert all(d["new_tokens"] <= 8 and isinstance(d["hit_limit"], bool) for d in details)


def test_build_is_cached_per_recipe(tiny_dir):
    from training.demo_model import build_demo_model

    weights = tiny_dir / "model.safetensors"
    before, content = weights.stat().st_mtime_ns, weights.read_bytes()
    info = build_demo_model(tiny_dir, seed=0, steps=20, size="test", log=lambda *_: None)
    assert info["cached"] and weights.stat().st_mtime_ns == before
    rebuilt = build_demo_model(tiny_dir, seed=0, steps=20, size="test", force=True, log=lambda *_: None)
    assert not rebuilt["cached"] and weights.stat().st_mtime_ns != before
    assert weights.read_bytes() == content  # deterministic from the seed
    other = build_demo_model(tiny_dir, seed=1, steps=20, size="test", log=lambda *_: None)
    assert not other["cached"] and other["seed"] == 1
    # built beside the target and renamed into place: nothing half-written is left
    assert sorted(p.name for p in tiny_dir.parent.iterdir() if not p.name.startswith(".")) == ["tiny"]


def test_the_scripted_comparer_ties_two_right_answers_and_ranks_a_stale_fact_below_the_new_one():
    from loop.demo_history import human_score

    policy = demo_domain.knowledge_cases(1, seed=4)[0]
    expected, tools = policy["expected"], policy["tools"]
    topic = next(t for t, (text, _) in demo_domain.POLICY_NEW.items() if text in expected["content"])
    new, old = expected["content"], demo_domain.POLICY_OLD[topic][0]
    assert human_score(expected, new, tools) == 4  # right, no call due: two such answers tie
    assert human_score(expected, old, tools) < human_score(expected, new, tools)
    call = next(c for c in eval_prompts(40, seed=4) if c["metadata"]["expects_call"])
    fn = call["expected"]["tool_calls"][0]["function"]
    right = demo_domain.call_text(fn["name"], json.loads(fn["arguments"]))
    assert human_score(call["expected"], right, call["tools"]) == 4
    assert human_score(call["expected"], "I think so.", call["tools"]) < 4
