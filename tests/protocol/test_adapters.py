"""``lora``: the adapters a request names, as JSON and as the SDKs' form parts."""

from __future__ import annotations

from typing import Any

import pytest

from diffuserve.protocol.adapters import LoraRequest, lora_from_form, parse_lora
from diffuserve.protocol.errors import InvalidRequestError


@pytest.mark.parametrize(("value", "parsed"), [
    (None, ()),
    ({"name": "pixel"}, (LoraRequest("pixel"),)),
    ({"name": "pixel", "scale": 0.8}, (LoraRequest("pixel", 0.8),)),
    ({"name": "pixel", "scale": None}, (LoraRequest("pixel"),)),
    ([{"name": "a.b_c-1", "scale": -4}, {"name": "ink", "scale": 4}],
     (LoraRequest("a.b_c-1", -4.0), LoraRequest("ink", 4.0))),
    ([], ()),
])
def test_one_adapter_or_a_list(value: Any, parsed: tuple[LoraRequest, ...]) -> None:
    assert parse_lora(value) == parsed


@pytest.mark.parametrize(("value", "param", "code"), [
    ("pixel", "lora", "invalid_type"),
    (3, "lora", "invalid_type"),
    (["pixel"], "lora[0]", "invalid_type"),
    ({}, "lora.name", "missing_required_parameter"),
    ({"name": 3}, "lora.name", "invalid_value"),
    ({"name": "../x"}, "lora.name", "invalid_value"),
    ({"name": "/etc/passwd"}, "lora.name", "invalid_value"),
    ({"name": "http://x/y"}, "lora.name", "invalid_value"),
    ({"name": "x", "scale": True}, "lora.scale", "invalid_type"),
    ({"name": "x", "scale": "1"}, "lora.scale", "invalid_type"),
    ({"name": "x", "scale": 4.5}, "lora.scale", "invalid_value"),
    ({"name": "x", "scale": float("nan")}, "lora.scale", "invalid_value"),
    ({"name": "x", "weight": 1}, "lora.weight", "unknown_parameter"),
    ([{"name": "x"}, {"name": "x"}], "lora", "invalid_value"),
    ([{"name": f"a{i}"} for i in range(9)], "lora", "array_above_max_length"),
])
def test_anything_else_is_refused_naming_the_field(value: Any, param: str,
                                                   code: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_lora(value)
    assert (refused.value.param, refused.value.code) == (param, code)


@pytest.mark.parametrize(("fields", "value"), [
    ({}, None),
    ({"lora": ['{"name": "pixel", "scale": 0.5}']}, {"name": "pixel", "scale": 0.5}),
    ({"lora": ['[{"name": "pixel"}]']}, [{"name": "pixel"}]),
    ({"lora[name]": ["pixel"], "lora[scale]": ["0.8"]}, {"name": "pixel", "scale": 0.8}),
    ({"lora[name]": ["pixel"]}, {"name": "pixel"}),
    ({"lora[][name]": ["pixel", "ink"]}, [{"name": "pixel"}, {"name": "ink"}]),
    ({"lora[][name]": ["pixel", "ink"], "lora[][scale]": ["0.5", "1"]},
     [{"name": "pixel", "scale": 0.5}, {"name": "ink", "scale": 1.0}]),
])
def test_a_forms_parts_spell_the_same_value(fields: dict[str, list[str]],
                                            value: Any) -> None:
    assert lora_from_form(fields) == value


def test_a_forms_scale_that_is_not_a_number_is_refused_as_a_type() -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_lora(lora_from_form({"lora[name]": ["pixel"], "lora[scale]": ["high"]}))
    assert refused.value.param == "lora.scale"


@pytest.mark.parametrize("fields", [
    {"lora": ["{not json"]},
    {"lora[][name]": ["pixel", "ink"], "lora[][scale]": ["0.5"]},  # whose scale?
    {"lora": ['{"name": "x"}'], "lora[name]": ["y"]},
    {"lora[name]": ["x"], "lora[][name]": ["y"]},
    {"lora[0][name]": ["x"]},
    {"lora[name]": ["x", "y"]},
])
def test_an_ambiguous_or_mixed_form_is_refused(fields: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        lora_from_form(fields)
    assert (refused.value.param or "").startswith("lora")
