"""Structured filter objects: the text grammar's validation and messages, values taken as is."""

from __future__ import annotations

from decimal import Decimal

import pytest

from blipsearch.errors import InvalidInputError
from blipsearch.search.filter_objects import condition_from_object, conditions_from_objects
from blipsearch.search.filters import Condition, parse_filter


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "brand", "op": "eq", "value": "Acme, Inc."}, Condition("brand", "eq", "Acme, Inc.")),
        ({"field": "brand", "op": "eq", "value": "<=50 Labs"}, Condition("brand", "eq", "<=50 Labs")),
        ({"field": "brand", "op": "in", "value": ["a, b", "c"]}, Condition("brand", "in", ("a, b", "c"))),
        ({"field": "brand", "op": "in", "value": "a, b"}, Condition("brand", "in", ("a, b",))),
        ({"field": "price", "op": "le", "value": 50}, Condition("price", "le", Decimal(50))),
        ({"field": "price", "op": "gt", "value": "10.5"}, Condition("price", "gt", Decimal("10.5"))),
        ({"field": "width", "op": "ge", "value": 1000}, Condition("width", "ge", 1000)),
        ({"field": "tag", "op": "eq", "value": "Red"}, Condition("tag", "eq", "red")),
        (
            {"field": "attributes.material", "op": "ne", "value": "x=y"},
            Condition("attributes.material", "ne", "x=y"),
        ),
    ],
)
def test_values_are_never_read_as_grammar(spec: dict[str, object], expected: Condition) -> None:
    assert condition_from_object(spec) == expected


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ({"field": "colour", "op": "eq", "value": "red"}, "colour=red"),
        ({"field": "category", "op": "lt", "value": "shoes"}, "category<shoes"),
        ({"field": "price", "op": "le", "value": "cheap"}, "price<=cheap"),
        ({"field": "price", "op": "le", "value": "nan"}, "price<=nan"),
        ({"field": "width", "op": "ge", "value": "1.5"}, "width>=1.5"),
        ({"field": "category", "op": "eq", "value": ""}, "category="),
        ({"field": "category", "op": "eq", "value": "x" * 300}, "category=" + "x" * 300),
    ],
)
def test_bad_conditions_give_the_grammars_own_message(spec: dict[str, object], text: str) -> None:
    with pytest.raises(InvalidInputError) as structured:
        condition_from_object(spec)
    with pytest.raises(InvalidInputError) as grammar:
        parse_filter(text)
    assert str(structured.value) == str(grammar.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"field": "brand", "op": "like", "value": "a"}, "op must be one of eq, ne, lt, le, gt, ge, in"),
        ({"field": "brand", "op": "=", "value": "a"}, "op must be one of"),
        ({"field": "", "op": "eq", "value": "a"}, "needs a field name"),
        ({"field": 3, "op": "eq", "value": "a"}, "needs a field name"),
        ({"field": "brand", "op": "eq", "value": ["a", "b"]}, "a list is for op"),
        ({"field": "brand", "op": "eq", "value": None}, "single text or number"),
        ({"field": "brand", "op": "eq", "value": True}, "single text or number"),
        ({"field": "brand", "op": "eq", "value": {"$ne": 1}}, "single text or number"),
        ({"field": "brand", "op": "in", "value": []}, "1 to 100 values"),
        ({"field": "brand", "op": "eq", "value": "a\x00b"}, "NUL"),
    ],
)
def test_bad_objects_are_clear_errors(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        condition_from_object(spec)


def test_the_condition_count_is_limited_like_the_grammars() -> None:
    assert len(conditions_from_objects([{"field": "brand", "op": "eq", "value": "a"}] * 20)) == 20
    with pytest.raises(InvalidInputError, match="At most 20 filter conditions"):
        conditions_from_objects([{"field": "brand", "op": "eq", "value": "a"}] * 21)
