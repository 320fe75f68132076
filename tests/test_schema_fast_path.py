"""The everyday-schema fast path of the tool-spec check never accepts what the metaschema refuses."""

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from toolcalls.validate import _plainly_valid, validate_tool_specs

_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.text(max_size=4),
    st.sampled_from(["object", "array", "string", "dict", "float", "integer"]),
    st.lists(st.sampled_from(["a", "b", "a", "string", "number"]), max_size=3),
)
_KEYS = st.sampled_from(
    [
        "type",
        "properties",
        "items",
        "additionalProperties",
        "required",
        "enum",
        "examples",
        "title",
        "description",
        "format",
        "minimum",
        "multipleOf",
        "minLength",
        "maxItems",
        "default",
        "const",
        "anyOf",
        "$ref",
        "pattern",
    ]
)
_SCHEMAS = st.recursive(
    st.dictionaries(_KEYS, _VALUES, max_size=4),
    lambda inner: st.dictionaries(
        _KEYS, st.one_of(_VALUES, inner, st.dictionaries(st.text(max_size=3), inner, max_size=3)), max_size=4
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_SCHEMAS)
def test_fast_path_only_accepts_what_the_metaschema_accepts(schema):
    if _plainly_valid(schema):
        assert list(_META.iter_errors(schema)) == []


def test_everyday_schemas_take_the_fast_path_and_bad_ones_still_get_their_place():
    everyday = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "units": {"type": "string", "enum": ["metric", "imperial"], "default": "metric"},
            "stops": {"type": "array", "items": {"type": "object", "properties": {"at": {"type": "string"}}}},
        },
        "required": ["city"],
    }
    assert _plainly_valid(everyday)
    assert (
        validate_tool_specs([{"type": "function", "function": {"name": "w", "parameters": everyday}}]) == []
    )
    bad = {**everyday, "properties": {**everyday["properties"], "height": {"type": "dict"}}}
    assert not _plainly_valid(bad)
    (error,) = validate_tool_specs([{"type": "function", "function": {"name": "w", "parameters": bad}}])
    assert error.field == "tools[0].function.parameters.properties.height.type"
