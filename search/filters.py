"""Structured metadata filters: parsed, validated against the catalog schema, compiled to SQL.

A filter is a list of conditions that must all hold. Each names a known field, an operator that
field supports and a typed value; anything else is refused with a message listing what is
allowed. The SQL is built from SQLAlchemy column objects and bound parameters only: a field name
never reaches SQL as text (it selects a column from a fixed table), and a value is always a
parameter, so no input can change the statement.

Text form (the CLI's `--filter`, repeatable, and the API's `filter=` query parameters):

    category=shoes          brand!=acme          price<=50          price>10.5
    category in shoes,boots tag=red (has the tag) tags in red,blue (has any)
    sku=AB-1234             format=JPEG          width>=1000        attributes.material=leather
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, and_, exists, select

from blipsearch.errors import InvalidInputError
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.schema import Item, ItemStatus, ItemTag
from blipsearch.text_input import refuse_nul

Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "in"]
FieldType = Literal["text", "number", "integer", "tag", "attribute"]

MAX_VALUES = 100
MAX_VALUE_LENGTH = 200
MAX_CONDITIONS = 20


@dataclass(frozen=True)
class FieldSpec:
    type: FieldType
    column: Any
    operators: frozenset[str]


_TEXT_OPS = frozenset({"eq", "ne", "in"})
_ORDER_OPS = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in"})

FIELDS: dict[str, FieldSpec] = {
    "category": FieldSpec("text", Item.category, _TEXT_OPS),
    "brand": FieldSpec("text", Item.brand, _TEXT_OPS),
    "sku": FieldSpec("text", Item.external_id, _TEXT_OPS),
    "currency": FieldSpec("text", Item.currency, _TEXT_OPS),
    "format": FieldSpec("text", Item.format, _TEXT_OPS),
    "price": FieldSpec("number", Item.price, _ORDER_OPS),
    "width": FieldSpec("integer", Item.width, _ORDER_OPS),
    "height": FieldSpec("integer", Item.height, _ORDER_OPS),
    "tag": FieldSpec("tag", ItemTag.tag, frozenset({"eq", "in"})),
    "tags": FieldSpec("tag", ItemTag.tag, frozenset({"eq", "in"})),
}
ATTRIBUTE_PREFIX = "attributes."
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$")

# Longest operators first, so that "<=" is not read as "<" followed by "=...".
_TEXT_FORM = re.compile(
    r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.\- ]*?)\s*"
    r"(?P<op><=|>=|!=|==|=|<|>|\s+in\s+)\s*(?P<value>.*?)\s*$",
    re.IGNORECASE,
)
_SYMBOLS: dict[str, Operator] = {
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "in": "in",
}


@dataclass(frozen=True)
class Condition:
    """One validated condition; `value` is typed (str, Decimal, int, or a tuple of those for `in`)."""

    field: str
    op: Operator
    value: Any

    def describe(self) -> str:
        shown = ",".join(map(str, self.value)) if isinstance(self.value, tuple) else str(self.value)
        symbol = {v: k for k, v in _SYMBOLS.items() if k != "=="}[self.op]
        return f"{self.field}{' in ' if self.op == 'in' else symbol}{shown}"


def parse_filter(text: str) -> Condition:
    """A condition from its text form, e.g. `price<=50` or `category in shoes,boots`."""
    if len(text) > 2000:
        raise InvalidInputError("A filter is at most 2000 characters.")
    refuse_nul(text, "A filter")
    match = _TEXT_FORM.match(text)
    if match is None:
        raise InvalidInputError(
            f"Cannot read the filter {text!r}: write FIELD=VALUE, FIELD!=VALUE, FIELD<=NUMBER "
            "(also <, >, >=) or FIELD in A,B,C."
        )
    op = _SYMBOLS[match["op"].strip().lower()]
    raw = match["value"]
    values: Any = tuple(part.strip() for part in raw.split(",")) if op == "in" else raw
    return make_condition(match["field"].strip(), op, values)


def parse_filters(texts: Iterable[str]) -> list[Condition]:
    conditions = [parse_filter(text) for text in texts]
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidInputError(f"At most {MAX_CONDITIONS} filter conditions are allowed.")
    return conditions


def make_condition(field: str, op: str, value: Any) -> Condition:
    """Validate a condition given in structured form (the API's JSON body)."""
    spec = _field_spec(field)
    if op not in spec.operators:
        allowed = ", ".join(sorted(spec.operators))
        raise InvalidInputError(f"Filter field {field!r} does not support {op!r}; it supports {allowed}.")
    if op == "in":
        items = value if isinstance(value, list | tuple) else [value]
        if not items or len(items) > MAX_VALUES:
            raise InvalidInputError(f"Filter {field} in (...) takes 1 to {MAX_VALUES} values.")
        typed: Any = tuple(_typed(field, spec, item) for item in items)
    else:
        typed = _typed(field, spec, value)
    return Condition(field=field, op=op, value=typed)  # type: ignore[arg-type]


def _field_spec(field: str) -> FieldSpec:
    refuse_nul(field, "A filter field name")
    if field in FIELDS:
        return FIELDS[field]
    if field.startswith(ATTRIBUTE_PREFIX):
        name = field[len(ATTRIBUTE_PREFIX) :]
        if not _ATTRIBUTE_NAME.match(name):
            raise InvalidInputError(
                f"Attribute name {name!r} is not allowed: letters, digits, space, _ . - (at most 64)."
            )
        return FieldSpec("attribute", Item.attributes, _TEXT_OPS)
    known = ", ".join([*sorted(FIELDS), "attributes.NAME"])
    raise InvalidInputError(f"Unknown filter field {field!r}. Known fields: {known}.")


def _typed(field: str, spec: FieldSpec, value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list | tuple):
        raise InvalidInputError(f"Filter {field} needs a single text or number value.")
    text = str(value).strip()
    refuse_nul(text, f"Filter {field}")
    if not text:
        raise InvalidInputError(f"Filter {field} has an empty value.")
    if len(text) > MAX_VALUE_LENGTH:
        raise InvalidInputError(f"Filter {field} value is over {MAX_VALUE_LENGTH} characters.")
    if spec.type == "number":
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InvalidInputError(f"Filter {field} needs a number, not {text!r}.") from None
        if not number.is_finite():
            raise InvalidInputError(f"Filter {field} needs a finite number, not {text!r}.")
        return number
    if spec.type == "integer":
        if not re.fullmatch(r"[+-]?\d{1,12}", text):
            raise InvalidInputError(f"Filter {field} needs a whole number, not {text!r}.")
        return int(text)
    if spec.type == "tag":
        return text.lower()  # tags are stored lower-cased
    return text


def compile_conditions(conditions: Sequence[Condition]) -> list[ColumnElement[bool]]:
    """SQL clauses over `Item` (all must hold), built from column objects and bound values only."""
    return [_clause(condition) for condition in conditions]


def _clause(condition: Condition) -> ColumnElement[bool]:
    spec = _field_spec(condition.field)
    op, value = condition.op, condition.value
    if spec.type == "tag":
        values = value if op == "in" else (value,)
        return exists(select(ItemTag.item_id).where(ItemTag.item_id == Item.id, ItemTag.tag.in_(values)))
    column = spec.column
    if spec.type == "attribute":
        column = Item.attributes[condition.field[len(ATTRIBUTE_PREFIX) :]].as_string()
    if op == "in":
        return column.in_(value)
    if op == "ne":
        return (column != value) | column.is_(None)
    return {
        "eq": column == value,
        "lt": column < value,
        "le": column <= value,
        "gt": column > value,
        "ge": column >= value,
    }[op]


def matching_item_ids(catalog: Catalog, conditions: Sequence[Condition]) -> np.ndarray:
    """Sorted ids of indexed items satisfying every condition: what vector search may return."""
    query = select(Item.id).where(
        and_(Item.status == ItemStatus.INDEXED.value, *compile_conditions(conditions))
    )
    with catalog.reading() as session:
        ids = session.scalars(query.order_by(Item.id)).all()
    return np.asarray(ids, dtype=np.int64)
