"""Filters given as data, `{"field", "op", "value"}`, beside the text grammar of search/filters.py.

The text form cannot say every value: `brand=Acme, Inc.` is fine but `brand in Acme, Inc.,Zeta`
splits at every comma, and a value that starts with `<=` reads as an operator. A structured
condition names the operator and carries the value (or, for `in`, a list of values) as is; it is
never parsed as grammar. Validation is the grammar's own (`make_condition`): the same fields,
operators, types, limits and error messages, so a client can switch forms without surprises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

from blipsearch.errors import InvalidInputError
from blipsearch.search.filters import MAX_CONDITIONS, Condition, Operator, make_condition

OPERATORS: tuple[str, ...] = get_args(Operator)


def condition_from_object(spec: Mapping[str, Any]) -> Condition:
    """One condition from `{"field": ..., "op": ..., "value": ...}`."""
    field, op, value = spec.get("field"), spec.get("op"), spec.get("value")
    if not isinstance(field, str) or not field.strip():
        raise InvalidInputError('A filter needs a field name (text), e.g. "brand" or "price".')
    if not isinstance(op, str) or op not in OPERATORS:
        raise InvalidInputError(f"Filter {field}: op must be one of {', '.join(OPERATORS)}, not {op!r}.")
    if op != "in" and isinstance(value, list | tuple):
        raise InvalidInputError(f'Filter {field} needs a single text or number value; a list is for op "in".')
    return make_condition(field.strip(), op, list(value) if isinstance(value, list | tuple) else value)


def conditions_from_objects(specs: Sequence[Mapping[str, Any]]) -> list[Condition]:
    """Every condition, all of which must hold; the count is checked before any is read."""
    if len(specs) > MAX_CONDITIONS:
        raise InvalidInputError(f"At most {MAX_CONDITIONS} filter conditions are allowed.")
    return [condition_from_object(spec) for spec in specs]
