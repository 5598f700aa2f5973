"""Filters: parsed and validated, compiled to SQL that matches brute force on both databases."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import inspect as sql_inspect

from blipsearch.errors import InvalidInputError
from blipsearch.search.filters import (
    Condition,
    make_condition,
    matching_item_ids,
    parse_filter,
    parse_filters,
)
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite
from blipsearch.storage.schema import ItemStatus

FP = "blip-" + "f" * 32
CATEGORIES = ["shoes", "boots", "bags", None]
BRANDS = ["acme", "zenith", None]
TAGS = ["red", "blue", "leather", "sale"]


def _metadata(i: int) -> ItemMetadata:
    return ItemMetadata(
        external_id=f"SKU-{i:03d}",
        title=f"item {i}",
        category=CATEGORIES[i % 4],
        brand=BRANDS[i % 3],
        price=Decimal(i * 7 % 60) + Decimal("0.50") if i % 5 else None,
        tags=tuple(tag for j, tag in enumerate(TAGS) if (i >> j) & 1),
        attributes={"material": ["leather", "canvas"][i % 2], "size": str(36 + i % 6)},
    )


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Catalog:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    writes = [
        ItemWrite(
            source=f"/p/{i}.jpg",
            origin="/p",
            status=ItemStatus.INDEXED if i != 7 else ItemStatus.FAILED,
            error=None if i != 7 else "broken",
            file=FileFacts(f"{i:064x}", 10, 1.0, "JPEG", 100 + i * 10, 80),
            embedding=np.ones(4, np.float32) / 2 if i != 7 else None,
            model_fingerprint=FP if i != 7 else None,
            metadata=_metadata(i),
        )
        for i in range(40)
    ]
    opened.write(writes)
    yield opened
    opened.close()


def _brute(predicate) -> list[int]:  # type: ignore[no-untyped-def]
    """Item ids (1-based, in write order) of indexed items whose metadata satisfies `predicate`."""
    return [i + 1 for i in range(40) if i != 7 and predicate(i, _metadata(i))]


CASES = [
    (["category=shoes"], lambda i, m: m.category == "shoes"),
    (["category in shoes,boots"], lambda i, m: m.category in ("shoes", "boots")),
    (["brand!=acme"], lambda i, m: m.brand != "acme"),
    (["price<=20"], lambda i, m: m.price is not None and m.price <= 20),
    (["price>10.5", "price<30"], lambda i, m: m.price is not None and 10.5 < m.price < 30),
    (["tag=red"], lambda i, m: "red" in m.tags),
    (["tags in leather,sale"], lambda i, m: bool({"leather", "sale"} & set(m.tags))),
    (["sku=SKU-012"], lambda i, m: m.external_id == "SKU-012"),
    (["width>=300"], lambda i, m: 100 + i * 10 >= 300),
    (["attributes.material=leather"], lambda i, m: m.attributes["material"] == "leather"),
    (
        ["attributes.size in 36,37", "category=bags"],
        lambda i, m: m.attributes["size"] in ("36", "37") and m.category == "bags",
    ),
    (["tag=RED"], lambda i, m: "red" in m.tags),
]


@pytest.mark.parametrize(("texts", "predicate"), CASES, ids=[" & ".join(t) for t, _ in CASES])
def test_filters_match_brute_force(catalog: Catalog, texts: list[str], predicate) -> None:  # type: ignore[no-untyped-def]
    found = matching_item_ids(catalog, parse_filters(texts)).tolist()
    assert found == _brute(predicate)
    assert found, "each case should select something, or it proves little"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("price<=50", Condition("price", "le", Decimal("50"))),
        (" category = shoes ", Condition("category", "eq", "shoes")),
        ("price >= 1e1", Condition("price", "ge", Decimal("10"))),
        ("brand in a, b ,c", Condition("brand", "in", ("a", "b", "c"))),
        ("tag==Red", Condition("tag", "eq", "red")),
        ("title=x", None),
    ],
)
def test_parse_filter(text: str, expected: Condition | None) -> None:
    if expected is None:
        with pytest.raises(InvalidInputError, match="Unknown filter field 'title'"):
            parse_filter(text)
    else:
        assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=red", "Unknown filter field"),
        ("category<shoes", "does not support 'lt'"),
        ("price<=cheap", "needs a number"),
        ("price<=nan", "finite"),
        ("width>=1.5", "whole number"),
        ("category=", "empty value"),
        ("just words", "Cannot read the filter"),
        ("attributes.$where=1", "Cannot read the filter"),
        ("category; DROP TABLE items; --=x", "Cannot read the filter"),
        ("category OR 1=1", "Unknown filter field 'category OR 1'"),
        ("category=" + "x" * 300, "over 200 characters"),
    ],
)
def test_bad_filters_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_filter(text)


def test_structured_conditions_are_validated_like_text_ones() -> None:
    assert make_condition("price", "in", [10, "20.5"]).value == (Decimal(10), Decimal("20.5"))
    with pytest.raises(InvalidInputError, match="single text or number"):
        make_condition("category", "eq", {"$ne": 1})
    with pytest.raises(InvalidInputError, match="1 to 100 values"):
        make_condition("brand", "in", [])
    with pytest.raises(InvalidInputError, match="Attribute name"):
        make_condition("attributes.a'b", "eq", "x")
    with pytest.raises(InvalidInputError, match="At most 20"):
        parse_filters(["category=a"] * 21)


@pytest.mark.parametrize(
    "value",
    ["x' OR '1'='1", "shoes'; DROP TABLE items; --", '" OR 1=1 --', "%", "_", "shoes\\", "*"],
)
def test_injection_in_values_is_inert(catalog: Catalog, value: str) -> None:
    for field in ("category", "attributes.material", "tag", "sku"):
        assert matching_item_ids(catalog, [make_condition(field, "eq", value)]).tolist() == []
    with catalog.sessions() as session:
        assert "items" in sql_inspect(session.get_bind()).get_table_names()
    assert len(matching_item_ids(catalog, [])) == 39
