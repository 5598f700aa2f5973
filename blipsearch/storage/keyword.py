"""Keyword documents: the catalog's words in a full-text index, written in the item's own transaction.

Product catalogs are searched by brand names, model numbers and SKUs that an image encoder has never
seen, so beside the vector indexes each indexed item has one search document in `item_search`,
built from its SKU, title, brand, category, tags, description and caption. Unlike the vector
indexes (files caught up through the change log), the documents live in the catalog database and
are refreshed by every catalog write in the same transaction, so keyword search can never see an
item the catalog does not consider indexed, nor miss a committed metadata change.

The two supported databases get the same behaviour from different machinery:

* SQLite: an FTS5 table (rowid = item id) with the `unicode61 remove_diacritics 2` tokenizer and
  its default separators, so "SKU-RED-BA" is stored as the tokens `sku red ba`. A query term is
  passed to FTS5 as one quoted string, which FTS5 turns into a phrase query: "SKU-RED-BA" then
  matches the whole SKU (the three tokens adjacent, in order) and "red" matches a part. Declaring
  `-_.` as token characters instead would find the whole SKU only, never a part of it.
* PostgreSQL: a table of `tsvector` documents under a GIN index, built with the `simple`
  configuration (no stemming and no stop words: catalogs are multilingual, and a stemmer would
  mangle model numbers). PostgreSQL's parser has its own ideas about punctuation ("AB-1234" becomes
  `ab` and the signed number `-1234`), so ASCII punctuation is turned into spaces on both the
  document and the query side, which makes it split words exactly where FTS5 does. Accents are
  significant on PostgreSQL (that would need the `unaccent` extension), not on SQLite.

On both, the SKU is also stored with its separators removed, so "AB1234" finds "AB-1234".
Ranking weights the fields: SKU, title and brand highest, then category and tags, then description
and caption (BM25 column weights on SQLite, `setweight` classes A/B/C with `ts_rank_cd` on
PostgreSQL). The SQL that builds documents is repeated, frozen, in migration 0003, which backfills
the documents of items that existed before it; `tests/test_search_keyword.py` checks that both give
the same documents.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from functools import reduce
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, TSVECTOR
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from blipsearch.errors import FeatureUnavailableError

KEYWORD_TABLE = "item_search"
"""The documents' table; SQLite adds shadow tables named `item_search_*` for the FTS5 index."""

SUPPORTED_DIALECTS = ("sqlite", "postgresql")

_PG_CONFIG = "simple"
_PG_WEIGHTS: ColumnElement[Any] = literal_column("CAST('{0.1, 0.2, 0.4, 1.0}' AS real[])")
"""ts_rank_cd weights for classes D, C, B, A (PostgreSQL's order; D is unused): a constant."""
_PUNCTUATION = str.maketrans(dict.fromkeys(string.punctuation, " "))
"""Mirrors `regexp_replace(..., '[[:punct:]]+', ' ', 'g')` on the document side (ASCII punctuation)."""


def is_keyword_table(name: str) -> bool:
    """True for the documents' table and the FTS5 shadow tables SQLite creates beside it."""
    return name == KEYWORD_TABLE or name.startswith(KEYWORD_TABLE + "_")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` hook: the keyword tables are created by migration 0003 in SQL that
    differs per database and have no ORM model, so autogenerate must not propose dropping them."""
    return not (type_ == "table" and reflected and compare_to is None and is_keyword_table(name or ""))


# Document SQL. Static text with bound parameters only; the same expressions appear, frozen, in
# alembic/versions/0003_keyword_search.py for the backfill.

_SQLITE_COMPACT_SKU = (
    "replace(replace(replace(replace(replace(replace(coalesce(i.external_id, ''),"
    " '-', ''), '_', ''), '.', ''), '/', ''), ':', ''), ' ', '')"
)
_SQLITE_INSERT = (
    "INSERT INTO item_search (rowid, sku, title, brand, category, tags, description, caption) "
    "SELECT i.id, coalesce(i.external_id, '') || ' ' || " + _SQLITE_COMPACT_SKU + ", "
    "i.title, i.brand, i.category, "
    "(SELECT group_concat(t.tag, ' ') FROM item_tags AS t WHERE t.item_id = i.id), "
    "i.description, i.caption "
    "FROM items AS i WHERE i.status = 'indexed' AND i.id IN (SELECT value FROM json_each(:ids))"
)
_SQLITE_DELETE = "DELETE FROM item_search WHERE rowid IN (SELECT value FROM json_each(:ids))"
_SQLITE_WEIGHTS = "10.0, 10.0, 10.0, 4.0, 4.0, 1.0, 1.0"
"""bm25 column weights in the table's column order: sku, title, brand, category, tags, description,
caption (the same 1 : 0.4 : 0.1 ladder as PostgreSQL's A/B/C classes)."""
_SQLITE_SEARCH = (
    "SELECT s.rowid AS item_id, -bm25(item_search, " + _SQLITE_WEIGHTS + ") AS score "
    "FROM item_search AS s JOIN items AS i ON i.id = s.rowid "
    "WHERE item_search MATCH :query AND i.status = 'indexed' "
)
_SQLITE_ALLOWED = "AND s.rowid IN (SELECT value FROM json_each(:allowed)) "
_SQLITE_ORDER = "ORDER BY score DESC, item_id ASC LIMIT :limit"


def _pg_field(column: str, weight: str) -> str:
    return (
        f"setweight(to_tsvector('simple', regexp_replace(coalesce({column}, ''), '[[:punct:]]+', ' ', 'g')),"
        f" '{weight}')"
    )


_PG_DOCUMENT = " || ".join(
    [
        _pg_field(
            "i.external_id || ' ' || regexp_replace(i.external_id, '[-_./: ]+', '', 'g')",
            "A",
        ),
        _pg_field("i.title", "A"),
        _pg_field("i.brand", "A"),
        _pg_field("i.category", "B"),
        _pg_field(
            "(SELECT string_agg(t.tag, ' ' ORDER BY t.tag) FROM item_tags AS t WHERE t.item_id = i.id)", "B"
        ),
        _pg_field("i.description", "C"),
        _pg_field("i.caption", "C"),
    ]
)
_PG_DELETE = text("DELETE FROM item_search WHERE item_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))
)
_PG_INSERT = text(
    "INSERT INTO item_search (item_id, document) "
    f"SELECT i.id, {_PG_DOCUMENT} FROM items AS i WHERE i.status = 'indexed' AND i.id = ANY(:ids) "
    # A concurrent writer refreshing the same item (the API storing a caption while the indexer
    # writes) may insert between our DELETE and INSERT; the later document wins instead of failing.
    "ON CONFLICT (item_id) DO UPDATE SET document = EXCLUDED.document"
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))

_pg_tables = MetaData()
_pg_item_search = Table(
    KEYWORD_TABLE, _pg_tables, Column("item_id", BigInteger, primary_key=True), Column("document", TSVECTOR)
)
_pg_items = Table("items", _pg_tables, Column("id", BigInteger, primary_key=True), Column("status", String))


class KeywordDocuments:
    """Writes and queries the search documents of one catalog database."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    @property
    def supported(self) -> bool:
        return self.dialect in SUPPORTED_DIALECTS

    def refresh(self, session: Session, item_ids: Sequence[int]) -> None:
        """Make the documents of these items match their rows, inside the caller's transaction.

        Delete and re-insert rather than diff: one statement each whatever changed, and an item that
        stopped being indexed (failed, missing, deleted) simply gets no new document.
        """
        ids = sorted({int(i) for i in item_ids})
        if not ids or not self.supported:
            return
        session.flush()  # the documents are built from the rows as this transaction sees them
        if self.dialect == "sqlite":
            payload = json.dumps(ids)
            session.execute(text(_SQLITE_DELETE), {"ids": payload})
            session.execute(text(_SQLITE_INSERT), {"ids": payload})
        else:
            session.execute(_PG_DELETE, {"ids": ids})
            session.execute(_PG_INSERT, {"ids": ids})

    def search(
        self, session: Session, terms: Sequence[str], limit: int, allowed_ids: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """(item id, score) of indexed items matching any of `terms`, best first, ties by id.

        Each term is a phrase (the words of "SKU-RED-BA" adjacent and in order) and is only ever
        data: quoted as an FTS5 string on SQLite, handed to `phraseto_tsquery` on PostgreSQL.
        """
        if not self.supported:
            raise FeatureUnavailableError(
                f"Keyword search needs SQLite or PostgreSQL as the catalog database, not {self.dialect}."
            )
        if not terms or limit < 1 or (allowed_ids is not None and len(allowed_ids) == 0):
            return []
        allowed = None if allowed_ids is None else sorted({int(i) for i in allowed_ids})
        if self.dialect == "sqlite":
            rows = self._search_sqlite(session, terms, limit, allowed)
        else:
            rows = self._search_postgresql(session, terms, limit, allowed)
        return [(int(item_id), float(score)) for item_id, score in rows]

    @staticmethod
    def _search_sqlite(
        session: Session, terms: Sequence[str], limit: int, allowed: list[int] | None
    ) -> Sequence[Any]:
        # An FTS5 string ("...", inner quotes doubled) is tokenized as plain text: no column
        # filters, operators, prefixes or NEAR groups can come out of it.
        query = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        params: dict[str, Any] = {"query": query, "limit": limit}
        sql = _SQLITE_SEARCH
        if allowed is not None:
            sql += _SQLITE_ALLOWED
            params["allowed"] = json.dumps(allowed)
        return session.execute(text(sql + _SQLITE_ORDER), params).all()

    @staticmethod
    def _search_postgresql(
        session: Session, terms: Sequence[str], limit: int, allowed: list[int] | None
    ) -> Sequence[Any]:
        config = cast(literal(_PG_CONFIG), REGCONFIG)
        phrases: list[ColumnElement[Any]] = [
            func.phraseto_tsquery(config, bindparam(f"term_{n}", term.translate(_PUNCTUATION)))
            for n, term in enumerate(terms)
        ]
        query = reduce(lambda left, right: left.op("||")(right), phrases)
        score = func.ts_rank_cd(_PG_WEIGHTS, _pg_item_search.c.document, query).label("score")
        statement = (
            select(_pg_item_search.c.item_id, score)
            .join(_pg_items, _pg_items.c.id == _pg_item_search.c.item_id)
            .where(_pg_item_search.c.document.op("@@")(query), _pg_items.c.status == "indexed")
            .order_by(score.desc(), _pg_item_search.c.item_id)
            .limit(limit)
        )
        if allowed is not None:
            statement = statement.where(
                _pg_item_search.c.item_id == any_(bindparam("allowed", allowed, type_=ARRAY(BigInteger)))
            )
        return session.execute(statement).all()
