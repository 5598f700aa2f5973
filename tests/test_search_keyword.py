"""Keyword search over the catalog, kept in step by catalog writes, on SQLite FTS5 and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from blipsearch.errors import InvalidInputError
from blipsearch.search.fusion import reciprocal_rank_fusion
from blipsearch.search.keyword import MAX_TERMS, KeywordSearch, query_terms
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.database import table_names, upgrade_database
from blipsearch.storage.item_writes import FileFacts, ItemMetadata, ItemWrite
from blipsearch.storage.schema import SLOT_OF_KIND, TEXT_SLOTS, ItemStatus, TextKind

FP = "blip-" + "a" * 32
CAPTIONER = "caption-" + "b" * 32


@pytest.fixture
def catalog(tmp_path: Path, database_url: str) -> Iterator[Catalog]:
    opened = Catalog.open(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


@pytest.fixture
def search(catalog: Catalog) -> KeywordSearch:
    return KeywordSearch(catalog)


def _vector(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _write(source: str, seed: int, status: ItemStatus = ItemStatus.INDEXED, **fields) -> ItemWrite:
    caption = fields.pop("caption", None)
    return ItemWrite(
        source=source,
        origin="/products",
        status=status,
        error="broken" if status is ItemStatus.FAILED else None,
        file=FileFacts(f"{seed:064x}", 10, 1.0, "PNG", 4, 4),
        embedding=None if status is ItemStatus.FAILED else _vector(seed),
        model_fingerprint=FP,
        metadata=ItemMetadata(**fields),
        caption=caption,
        caption_fingerprint=CAPTIONER if caption else None,
    )


BOOT = dict(
    external_id="AB-1234",
    title="Trailblazer hiking boot",
    brand="Acme",
    category="shoes",
    tags=("outdoor", "waterproof"),
    description="Full grain upper with a rubber sole",
)
SHIRT = dict(
    external_id="SKU-RED-BA",
    title="Red cotton shirt",
    brand="Zephyr",
    category="clothing",
    description="A soft shirt for every trailblazer",
)
MUG = dict(external_id="MUG-7", title="Coffee mug", brand="Kiln", caption="a white mug on a wooden table")


@pytest.fixture
def products(catalog: Catalog) -> dict[str, int]:
    ids = catalog.write(
        [_write("/p/boot.png", 1, **BOOT), _write("/p/shirt.png", 2, **SHIRT), _write("/p/mug.png", 3, **MUG)]
    )
    return dict(zip(["boot", "shirt", "mug"], ids, strict=True))


def _ids(hits: list[tuple[int, float]]) -> list[int]:
    return [item_id for item_id, _ in hits]


def test_an_exact_sku_finds_its_item_first(search: KeywordSearch, products: dict[str, int]) -> None:
    assert _ids(search.search("AB-1234", 10)) == [products["boot"]]
    assert _ids(search.search("SKU-RED-BA", 10)) == [products["shirt"]]
    assert _ids(search.search("sku-red-ba", 10)) == [products["shirt"]]  # case does not matter
    assert _ids(search.search("MUG-7", 10))[0] == products["mug"]


def test_a_sku_is_findable_by_its_parts_and_without_separators(
    search: KeywordSearch, products: dict[str, int]
) -> None:
    """The tokenizer choice: "AB-1234" is stored as its parts, a query term is matched as a phrase."""
    assert _ids(search.search("1234", 10)) == [products["boot"]]
    assert _ids(search.search("AB1234", 10)) == [products["boot"]]
    assert _ids(search.search("RED-BA", 10)) == [products["shirt"]]
    assert _ids(search.search("BA-RED", 10)) == []  # a phrase: parts in their order


def test_brand_title_tag_and_caption_words_are_found(search: KeywordSearch, products: dict[str, int]) -> None:
    assert _ids(search.search("acme", 10)) == [products["boot"]]
    assert _ids(search.search("Zephyr", 10)) == [products["shirt"]]
    assert _ids(search.search("hiking", 10)) == [products["boot"]]
    assert _ids(search.search("waterproof", 10)) == [products["boot"]]
    assert _ids(search.search("clothing", 10)) == [products["shirt"]]
    assert _ids(search.search("wooden", 10)) == [products["mug"]]
    assert search.search("nothing-like-this", 10) == []


def test_a_title_or_sku_hit_ranks_above_a_description_hit(
    search: KeywordSearch, catalog: Catalog, products: dict[str, int]
) -> None:
    hits = search.search("trailblazer", 10)
    assert _ids(hits) == [products["boot"], products["shirt"]]
    assert hits[0][1] > hits[1][1] > 0
    catalog.write([_write("/p/cap.png", 4, title="Cap", description="Fits the AB-1234 boot")])
    assert _ids(search.search("AB-1234", 10))[0] == products["boot"]
    assert len(search.search("AB-1234", 10)) == 2


def test_more_matching_terms_rank_higher_and_equal_scores_go_by_id(
    search: KeywordSearch, catalog: Catalog
) -> None:
    first, second, third = catalog.write(
        [
            _write("/t/1.png", 11, title="blue lamp"),
            _write("/t/2.png", 12, title="blue lamp"),
            _write("/t/3.png", 13, title="blue lamp brass"),
        ]
    )
    hits = search.search("brass lamp blue", 10)
    assert _ids(hits) == [third, first, second]
    assert hits[1][1] == hits[2][1]
    assert _ids(search.search("lamp", 2)) == [first, second]  # the limit keeps the best


def test_failed_missing_deleted_and_pending_items_are_not_found(
    search: KeywordSearch, catalog: Catalog
) -> None:
    a, b, c, d = catalog.write([_write(f"/z/{n}.png", 20 + n, title=f"zebra {n}") for n in range(4)])
    assert _ids(search.search("zebra", 10)) == [a, b, c, d]
    catalog.write([_write("/z/0.png", 20, ItemStatus.FAILED, title="zebra 0")])
    catalog.mark_missing([b])
    catalog.delete_items([c])
    catalog.write(
        [
            ItemWrite(
                source="/z/3.png",
                origin="/z",
                status=ItemStatus.PENDING,
                metadata=ItemMetadata(title="zebra"),
            )
        ]
    )
    assert search.search("zebra", 10) == []
    catalog.write([_write("/z/1.png", 21, title="zebra back")])  # the file came back
    assert _ids(search.search("zebra", 10)) == [b]


def test_metadata_updates_are_reflected(
    search: KeywordSearch, catalog: Catalog, products: dict[str, int]
) -> None:
    catalog.write([_write("/p/boot.png", 1, **{**BOOT, "title": "Summit boot", "tags": ("alpine",)})])
    assert search.search("hiking", 10) == []
    assert search.search("outdoor", 10) == []
    assert _ids(search.search("summit", 10)) == [products["boot"]]
    assert _ids(search.search("alpine", 10)) == [products["boot"]]
    assert _ids(search.search("AB-1234", 10)) == [products["boot"]]
    # A write that carries no metadata keeps the item's words.
    catalog.write([ItemWrite(source="/p/boot.png", origin=None, status=ItemStatus.INDEXED)])
    assert _ids(search.search("summit", 10)) == [products["boot"]]


def test_store_captions_makes_a_caption_findable_and_feeds_the_text_index(
    search: KeywordSearch, catalog: Catalog, products: dict[str, int]
) -> None:
    shirt, mug = products["shirt"], products["mug"]
    before = catalog.last_change_id()
    vector = _vector(99)
    catalog.store_captions(
        {shirt: "a person wearing a crimson shirt", mug: "a blue cup", 9999: "gone"},
        CAPTIONER,
        text_vectors={shirt: vector},
        model_fingerprint=FP,
    )
    assert _ids(search.search("crimson", 10)) == [shirt]
    assert _ids(search.search("cup", 10)) == [mug]
    assert search.search("wooden", 10) == []  # the mug's previous caption is gone
    assert catalog.changed_items_since(before)[0] == sorted([shirt, mug])

    items = {item.id: item for item in catalog.items_by_ids([shirt, mug])}
    slot = SLOT_OF_KIND[TextKind.CAPTION]
    assert items[shirt].caption == "a person wearing a crimson shirt"
    assert items[shirt].caption_fingerprint == CAPTIONER
    caption_rows = {item_id: [t for t in items[item_id].texts if t.slot == slot] for item_id in items}
    assert [(t.kind, t.text) for t in caption_rows[mug]] == [("caption", "a blue cup")]
    assert caption_rows[mug][0].embedding is None  # no vector given: none kept for the old caption
    _, _, text_ids, text_vectors = catalog.vectors_for_items([shirt, mug], FP)
    assert text_ids.tolist() == [shirt * TEXT_SLOTS + slot]
    np.testing.assert_allclose(text_vectors[0], vector)


HOSTILE = [
    '"; DROP TABLE items; --',
    "'; DROP TABLE items; --",
    "title:foo OR *",
    "sku:AB-1234",
    "NEAR(a b)",
    "NEAR(boot shirt, 2) AND NOT mug",
    '"',
    '""',
    '"unbalanced',
    "((((",
    ")",
    "-",
    "-boot",
    "^boot",
    "boot*",
    "* OR *",
    "a & b | !c <-> d",
    "foo:* & bar:A",
    "\\",
    "%_%",
    "\x00",
    "boot\x00shirt",
    "\ud800boot",
    "ünïcödé 東京 🙂 \u202e",
    "x" * 2000,
    "boot " * 400,
    "a-" * 1000,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_query_text_is_never_query_syntax(
    query: str, search: KeywordSearch, catalog: Catalog, products: dict[str, int]
) -> None:
    try:
        hits = search.search(query, 10)
    except InvalidInputError:
        pass
    else:
        assert set(_ids(hits)) <= set(products.values())
    assert "items" in table_names(catalog.engine)
    assert catalog.status_counts()["indexed"] == 3
    assert _ids(search.search("AB-1234", 10)) == [products["boot"]]


def test_syntax_characters_around_words_are_ignored(search: KeywordSearch, products: dict[str, int]) -> None:
    assert _ids(search.search('wanted: "AB-1234"', 10)) == [products["boot"]]
    assert _ids(search.search("(AB-1234)", 10)) == [products["boot"]]
    assert _ids(search.search("-acme", 10)) == [products["boot"]]
    assert _ids(search.search("hiking^", 10)) == [products["boot"]]
    # "a:b" is the phrase "a b", never a column filter.
    assert _ids(search.search("trailblazer:hiking", 10)) == [products["boot"]]
    assert search.search("description:trailblazer", 10) == []
    assert search.search("!!! --- ***", 10) == []


def test_unicode_words_are_found(search: KeywordSearch, catalog: Catalog) -> None:
    cafe, tower = catalog.write(
        [_write("/u/1.png", 31, title="Café crème"), _write("/u/2.png", 32, title="東京 タワー")]
    )
    assert _ids(search.search("café", 10)) == [cafe]
    assert _ids(search.search("CRÈME", 10)) == [cafe]
    assert _ids(search.search("東京", 10)) == [tower]


def test_empty_queries_and_bad_limits_are_refused(search: KeywordSearch, products: dict[str, int]) -> None:
    for query in ("", "   ", "\t\n"):
        with pytest.raises(InvalidInputError, match="empty"):
            search.search(query, 10)
    with pytest.raises(InvalidInputError, match="limit"):
        search.search("boot", 0)


def test_allowed_ids_restrict_the_results(search: KeywordSearch, products: dict[str, int]) -> None:
    boot, shirt = products["boot"], products["shirt"]
    assert _ids(search.search("trailblazer", 10, allowed_ids=[shirt])) == [shirt]
    assert _ids(search.search("trailblazer", 10, allowed_ids=[shirt, boot, 12345])) == [boot, shirt]
    assert search.search("trailblazer", 10, allowed_ids=[]) == []
    assert search.search("trailblazer", 10, allowed_ids=[products["mug"]]) == []


def test_query_terms_are_split_on_whitespace_deduplicated_and_bounded() -> None:
    assert query_terms("  Red  shoe red, (SKU-1) -- ") == ["Red", "shoe", "red,", "(SKU-1)"]
    assert query_terms("Red red RED") == ["Red"]
    assert len(query_terms(" ".join(f"w{n}" for n in range(100)))) == MAX_TERMS
    assert query_terms("* - ( )") == []
    assert query_terms("boot\x00shirt \ud800cap\u200b") == ["boot", "shirt", "cap"]


def _documents(catalog: Catalog) -> list[tuple]:
    if catalog.engine.dialect.name == "sqlite":
        columns = "rowid, sku, title, brand, category, tags, description, caption"
        sql = f"SELECT {columns} FROM item_search ORDER BY 1"
    else:
        sql = "SELECT item_id, document::text FROM item_search ORDER BY 1"
    with catalog.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_the_migration_backfills_the_documents_that_writes_keep(
    catalog: Catalog, search: KeywordSearch, products: dict[str, int]
) -> None:
    catalog.write([_write("/p/gone.png", 9, ItemStatus.FAILED, title="broken")])
    catalog.store_captions({products["boot"]: "a brown boot"}, CAPTIONER)
    written = _documents(catalog)
    assert [row[0] for row in written] == sorted(products.values())

    from alembic import command
    from blipsearch.storage.database import _alembic_config

    engine = catalog.engine
    with engine.begin() as connection:
        config = _alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert not any(name.startswith("item_search") for name in table_names(engine))
    upgrade_database(engine)
    assert _documents(catalog) == written
    assert _ids(search.search("brown AB-1234", 10)) == [products["boot"]]


def test_reciprocal_rank_fusion_on_a_hand_computed_example() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    expected = {1: 1 / 61 + 1 / 62, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 63}
    assert [item_id for item_id, _ in fused] == [1, 3, 2, 4]
    for item_id, score in fused:
        assert score == pytest.approx(expected[item_id])
    # Equal scores are ordered by id whatever the input order; a repeated id counts once per list.
    assert [i for i, _ in reciprocal_rank_fusion([[7, 5], [5, 7]])] == [5, 7]
    assert reciprocal_rank_fusion([[2, 2, 1]], k=0) == [(2, 1.0), (1, 1 / 3)]  # ranks are positions
    assert reciprocal_rank_fusion([]) == []
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], k=-1)
