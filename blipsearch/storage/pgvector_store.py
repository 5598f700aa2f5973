"""The pgvector backend of `VectorStore`: searches the catalog's own `item_vectors` / `text_vectors`.

The rows are written by every catalog write in its own transaction (`pgvector_rows.py`), so this
store keeps no state of its own: `refresh`, `checkpoint` and `pending_changes` have nothing to do,
and any number of servers on one database answer alike.

Indexes. One HNSW index per model and side, a partial expression index on
`(embedding::halfvec(dim)) halfvec_ip_ops WHERE model_fingerprint = '<fp>' AND vector_dims(embedding) = dim`.
Partial, because the tables hold every model's rows and a query must never mix them (the planner
matches a partial index only against a literal, hence `check_fingerprint` before inlining one); an
expression, because the column has no fixed dimension. halfvec rather than vector: on 20k
clustered 256-d unit vectors (m=16, ef_construction=64, ef_search=40; one run on the development
machine) the halfvec index took 16.7 MB against 27.3 MB and 7.3 s against 7.9 s to build, for
recall@10 0.999 against 1.000. Half the memory is what decides at 10M vectors, and the recall
difference is within noise: the candidates are re-scored exactly on the float32 column, and a few
more than k are read, so halfvec rounding never reaches a returned score and seldom an order.
m=16 and ef_construction=64 are the values issue 29 measured.

Searches. pgvector's HNSW scan applies a filter after the graph search, so with a filter it can
silently return fewer rows than asked. The rules here make that impossible:

* unfiltered: `hnsw.ef_search = max(setting, k)`, iterative scan (`relaxed_order`, bounded by
  `hnsw.max_scan_tuples`), candidates ordered by the index expression, then re-sorted exactly;
* filtered to at most `exact_limit` ids: an exact scan over the admitted ids, ordered by an
  expression the index does not match, so the planner cannot take the approximate path;
* filtered to more: the iterative scan with `id + 0 = ANY(:ids)` (hidden from the primary key, so
  the planner cannot swap the graph for a key lookup), re-sorted;
* in every case, when fewer than min(k, admitted rows) come back, the query is answered exactly.

A search with no valid HNSW index for the model answers by an exact scan.

Writers coordinate through `pgvector_lock.pgvector_writer_lock`; `pgvector_checks.py` has
`index status` and `index verify`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import BigInteger, Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from blipsearch.errors import CatalogError
from blipsearch.storage.pgvector_lock import pgvector_writer_lock
from blipsearch.storage.pgvector_rows import (
    backfill,
    parse_vector,
    store_error,
    tables_present,
    vector_literal,
)
from blipsearch.storage.top_k import empty_results
from blipsearch.storage.vector_store import Backend, RunSummary

if TYPE_CHECKING:
    from blipsearch.settings import Settings
    from blipsearch.storage.catalog import Catalog

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
COUNT_TTL_SECONDS = 2.0
"""`len()` is a count(*) over a model's rows; `/v1/status` asks often, so it is kept this long."""
CANDIDATE_MARGIN = 16
"""Extra candidates read from the halfvec index before the exact re-sort, so a near tie that
halfvec rounding orders the other way still reaches the top k."""
_FINGERPRINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
_COMMENT = re.compile(r"^blipsearch hnsw (\S+) (\d+)$")
IDS = bindparam("ids", type_=ARRAY(BigInteger))
ReadSessions = Callable[[], AbstractContextManager[Session]]
_SEARCH_SETUP = text(
    "SELECT coalesce((SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = to_regnamespace(current_schema())), false), "
    "set_config('hnsw.ef_search', :ef_search, true), "
    "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
    "set_config('hnsw.max_scan_tuples', :max_scan_tuples, true)"
)
_INDEX_VALID = text(
    "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
    "WHERE c.relname = :name AND c.relnamespace = to_regnamespace(current_schema())"
)


@dataclass(frozen=True)
class Side:
    table: str
    id_column: str
    label: str


IMAGES = Side("item_vectors", "item_id", "images")
TEXTS = Side("text_vectors", "vector_id", "texts")


def check_fingerprint(fingerprint: str) -> str:
    """A fingerprint is inlined in SQL (partial-index predicates only match literals): letters,
    digits and `_.:+-` only, which can never close a quoted string."""
    if not _FINGERPRINT.match(fingerprint):
        raise ValueError(f"not a model fingerprint: {fingerprint!r}")
    return fingerprint


def index_name(side: Side, fingerprint: str, dim: int) -> str:
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    return f"ix_{side.table}_hnsw_{digest}_{int(dim)}"


def pgvector_available(engine: Engine) -> bool:
    """PostgreSQL with the vector tables (so with the extension): what `vector_store=auto` needs."""
    if engine.dialect.name != "postgresql":
        return False
    try:
        with engine.connect() as connection:
            return tables_present(connection)
    except SQLAlchemyError:
        return False


class PgvectorCollection:
    """One side (images or texts) of one model, searched in SQL."""

    def __init__(self, store: PgvectorStore, side: Side) -> None:
        self._store = store
        self._side = side
        self._count: tuple[float, int] | None = None
        self.paths: Counter[str] = Counter()
        """Queries answered per path (exact, approximate, fallback): for logs and tests."""
        fp, dim = store.fingerprint, store.dim
        self.index_name = index_name(side, fp, dim)
        self.index_expression = f"(embedding::halfvec({dim}))"
        self.predicate = f"model_fingerprint = '{fp}' AND vector_dims(embedding) = {dim}"
        rows = f"FROM {side.table} WHERE {self.predicate}"
        ident = side.id_column
        exact_score = "(embedding <#> CAST(:q AS vector))"
        # Its own parameter: PostgreSQL types a parameter by its first use, and a query bound as
        # halfvec would round the exact re-scoring too.
        approximate = f"{self.index_expression} <#> CAST(:q_half AS halfvec({dim}))"
        order = f"ORDER BY {exact_score}, {ident} LIMIT :k"
        self._exact = f"SELECT {ident}, -{exact_score} AS score {rows} {{filter}} {order}"
        self._approximate = (
            f"WITH candidates AS MATERIALIZED (SELECT {ident}, embedding {rows} {{filter}} "
            f"ORDER BY {approximate} LIMIT :candidates) "
            f"SELECT {ident}, -{exact_score} AS score FROM candidates {order}"
        )
        self._count_sql = f"SELECT count(*) {rows} {{filter}}"
        # By fingerprint alone: an index-only scan, where the dimension check would read every vector.
        self._len_sql = text(f"SELECT count(*) FROM {side.table} WHERE model_fingerprint = '{fp}'")
        self._filter = f"AND {ident} = ANY(:ids)"
        # `+ 0` hides the filter from the primary key, so a large filter cannot turn the graph
        # search into a key lookup plus sort: it is the small filters that go exact, by rule.
        self._graph_filter = f"AND {ident} + 0 = ANY(:ids)"

    def __len__(self) -> int:
        now = self._store.clock()
        if self._count is not None and now - self._count[0] < COUNT_TTL_SECONDS:
            return self._count[1]
        try:
            with self._store.read_connection() as connection:
                count = int(connection.execute(self._len_sql).scalar() or 0)
        except SQLAlchemyError as exc:
            raise store_error(self._store.engine, "read", exc) from None
        self._count = (now, count)
        return count

    def vector(self, vector_id: int) -> np.ndarray:
        side = self._side
        sql = f"SELECT embedding::text FROM {side.table} WHERE {self.predicate} AND {side.id_column} = :id"
        try:
            with self._store.read_connection() as connection:
                value = connection.execute(text(sql), {"id": int(vector_id)}).scalar()
        except SQLAlchemyError as exc:
            raise store_error(self._store.engine, "read", exc) from None
        if value is None:
            raise KeyError(vector_id)
        return parse_vector(str(value))

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries, scores, ids = empty_results(queries, self._store.dim, k)
        allowed: list[int] | None = None
        if allowed_ids is not None:
            allowed = sorted({int(i) for i in np.asarray(allowed_ids).reshape(-1)})
            if not allowed:
                return scores, ids
        store = self._store
        try:
            with store.read_connection() as connection:
                # One round trip: the index check and the transaction-local HNSW settings.
                indexed = bool(
                    connection.execute(
                        _SEARCH_SETUP,
                        {
                            "name": self.index_name,
                            "ef_search": str(min(1000, max(store.ef_search, k))),
                            "max_scan_tuples": str(int(store.max_scan_tuples)),
                        },
                    ).scalar()
                )
                exact_only = not indexed or (allowed is not None and len(allowed) <= store.exact_limit)
                admitted: int | None = None
                for row, query in enumerate(queries):
                    literal = vector_literal(query)
                    params: dict[str, Any] = {"q": literal, "k": k}
                    if allowed is not None:
                        params["ids"] = allowed
                    found: list[Any] = []
                    if not exact_only:
                        found = self._run(
                            connection,
                            self._approximate.format(
                                filter=self._graph_filter if allowed is not None else ""
                            ),
                            params | {"q_half": literal, "candidates": k + max(k, CANDIDATE_MARGIN)},
                            allowed,
                        )
                        if len(found) < k:
                            if admitted is None:
                                admitted = self._admitted(connection, allowed)
                            if len(found) < min(k, admitted):
                                found = []
                    if found:
                        self.paths["approximate"] += 1
                    else:
                        self.paths["exact" if exact_only else "fallback"] += 1
                        found = self._run(
                            connection,
                            self._exact.format(filter=self._filter if allowed is not None else ""),
                            params,
                            allowed,
                        )
                    for column, (vector_id, score) in enumerate(found):
                        ids[row, column] = int(vector_id)
                        scores[row, column] = float(score)
        except SQLAlchemyError as exc:
            raise store_error(store.engine, "search", exc) from None
        return scores, ids

    def _run(
        self, connection: Connection, sql: str, params: dict[str, Any], allowed: list[int] | None
    ) -> list[Any]:
        statement = text(sql)
        if allowed is not None:
            statement = statement.bindparams(IDS)
        return list(connection.execute(statement, params).all())

    def _admitted(self, connection: Connection, allowed: list[int] | None) -> int:
        if allowed is None:
            return int(connection.execute(text(self._count_sql.format(filter=""))).scalar() or 0)
        statement = text(self._count_sql.format(filter=self._filter)).bindparams(IDS)
        return int(connection.execute(statement, {"ids": allowed}).scalar() or 0)

    def ensure_index(self, connection: Connection) -> bool:
        """Build this side's HNSW index if it is missing or invalid (a build that was interrupted);
        `connection` must be in autocommit mode (CONCURRENTLY). True if one was built."""
        exists = connection.execute(_INDEX_VALID, {"name": self.index_name}).first()
        if exists is not None and exists[0]:
            return False
        if exists is not None:
            connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {self.index_name}"))
        connection.execute(
            text(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.index_name} ON {self._side.table} "
                f"USING hnsw ({self.index_expression} halfvec_ip_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE {self.predicate}"
            )
        )
        connection.execute(
            text(
                f"COMMENT ON INDEX {self.index_name} "
                f"IS 'blipsearch hnsw {self._store.fingerprint} {self._store.dim}'"
            )
        )
        return True


class PgvectorStore:
    """`VectorStore` over the catalog's PostgreSQL: the rows are the state, SQL is the engine."""

    backend: Backend = "pgvector"

    def __init__(
        self,
        engine: Engine,
        fingerprint: str,
        dim: int,
        *,
        ef_search: int = 100,
        max_scan_tuples: int = 20_000,
        exact_limit: int = 20_000,
        writer: bool = False,
        reading: ReadSessions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`writer`: opened by a writer (holding `pgvector_writer_lock`), which builds the model's
        HNSW indexes where they are missing, so uploads alone never leave searches exact forever.
        `reading`: where searches read (the catalog's `reading()`, which may be a hot standby);
        default: the primary through `engine`. Index builds and locks always use `engine`."""
        if engine.dialect.name != "postgresql":
            raise CatalogError("The pgvector vector store needs a PostgreSQL catalog (database_url).")
        if dim < 1:
            raise ValueError("a vector dimension is at least 1")
        self.engine = engine
        self.fingerprint = check_fingerprint(fingerprint)
        self.dim = int(dim)
        self.ef_search = int(ef_search)
        self.max_scan_tuples = int(max_scan_tuples)
        self.exact_limit = int(exact_limit)
        self.clock = clock
        self._reading = reading
        self._images = PgvectorCollection(self, IMAGES)
        self._texts = PgvectorCollection(self, TEXTS)
        if writer:
            self.ensure_indexes()

    @classmethod
    def open(
        cls,
        settings: Settings,
        catalog: Catalog,
        *,
        fingerprint: str,
        dim: int,
        writer: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> PgvectorStore:
        """The store for one model on this catalog, tuned by the `pgvector_*` settings."""
        return cls(
            catalog.engine,
            fingerprint,
            dim,
            ef_search=settings.pgvector_ef_search,
            max_scan_tuples=settings.pgvector_max_scan_tuples,
            exact_limit=settings.pgvector_exact_limit,
            writer=writer,
            reading=getattr(catalog, "reading", None),
            clock=clock,
        )

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """One transaction for a search's statements (its SET LOCALs end with it)."""
        if self._reading is None:
            with self.engine.connect() as connection, connection.begin():
                yield connection
        else:
            with self._reading() as session:
                yield session.connection()

    @property
    def images(self) -> PgvectorCollection:
        return self._images

    @property
    def texts(self) -> PgvectorCollection:
        return self._texts

    @property
    def pending_changes(self) -> int:
        return 0

    def refresh(self) -> int:
        return 0

    def checkpoint(self) -> bool:
        return False

    def searching(self) -> AbstractContextManager[None]:
        """Nothing to hold: every query reads its own snapshot of the committed rows."""
        return nullcontext()

    def writer_lock(self, purpose: str) -> AbstractContextManager[None]:
        return pgvector_writer_lock(self.engine, purpose)

    def _ensure_indexes(self, connection: Connection) -> list[str]:
        return [c.index_name for c in (self._images, self._texts) if c.ensure_index(connection)]

    def ensure_indexes(self) -> list[str]:
        """Build the model's HNSW indexes where missing; returns the names built."""
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                return self._ensure_indexes(connection)
        except SQLAlchemyError as exc:
            raise store_error(self.engine, "index", exc) from None

    def finish_run(self) -> RunSummary:
        built = self.ensure_indexes()
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("ANALYZE item_vectors"))
                connection.execute(text("ANALYZE text_vectors"))
        except SQLAlchemyError as exc:
            raise store_error(self.engine, "analyze", exc) from None
        return RunSummary(
            generation=0,
            indexed_total=len(self._images),
            rebuilt={name: "HNSW index was missing" for name in built},
        )

    def rebuild(self) -> dict[str, Any]:
        """Re-derive every row from the catalog's blobs, rebuild this model's HNSW indexes, and drop
        those of models no row uses any more."""
        try:
            with self.engine.connect() as connection:
                items = backfill(connection, commit_chunks=True)
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                for collection in (self._images, self._texts):
                    connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {collection.index_name}"))
                    collection.ensure_index(connection)
                dropped = []
                used = fingerprints_in_rows(connection)
                for name, fingerprint, _dim, _valid, _size in hnsw_indexes(connection):
                    if fingerprint is not None and fingerprint not in used:
                        connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                        dropped.append(name)
                connection.execute(text("ANALYZE item_vectors"))
                connection.execute(text("ANALYZE text_vectors"))
        except SQLAlchemyError as exc:
            raise store_error(self.engine, "rebuild", exc) from None
        self._images._count = self._texts._count = None
        return {
            "backend": "pgvector",
            "items_read": items,
            "image_vectors": len(self._images),
            "text_vectors": len(self._texts),
            "indexes_built": [self._images.index_name, self._texts.index_name],
            "indexes_dropped": dropped,
        }

    def state(self) -> dict[str, Any]:
        try:
            with self.engine.connect() as connection:
                indexes = {
                    name: {"valid": valid, "bytes": size}
                    for name, fp, _dim, valid, size in hnsw_indexes(connection)
                    if name in (self._images.index_name, self._texts.index_name)
                }
        except SQLAlchemyError as exc:
            raise store_error(self.engine, "read", exc) from None
        return {
            "backend": "pgvector",
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "items": len(self._images),
            "texts": len(self._texts),
            "indexes": indexes,
        }

    def close(self) -> None:
        """Nothing to release: the engine belongs to the catalog."""


def hnsw_indexes(connection: Connection) -> list[tuple[str, str | None, int | None, bool, int]]:
    """(name, fingerprint, dim, valid, bytes) of every HNSW index this store made, from the comment
    each carries (an index name holds only a digest of the fingerprint)."""
    rows = connection.execute(
        text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class'), i.indisvalid, pg_relation_size(c.oid) "
            "FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'ix\\_item\\_vectors\\_hnsw\\_%' "
            "OR c.relname LIKE 'ix\\_text\\_vectors\\_hnsw\\_%' "
            "ORDER BY c.relname"
        )
    ).all()
    result: list[tuple[str, str | None, int | None, bool, int]] = []
    for name, comment, valid, size in rows:
        match = _COMMENT.match(comment or "")
        result.append(
            (
                str(name),
                match.group(1) if match else None,
                int(match.group(2)) if match else None,
                bool(valid),
                int(size),
            )
        )
    return result


def fingerprints_in_rows(connection: Connection) -> set[str]:
    return {
        str(fp)
        for fp in connection.execute(
            text(
                "SELECT DISTINCT model_fingerprint FROM item_vectors "
                "UNION SELECT DISTINCT model_fingerprint FROM text_vectors"
            )
        ).scalars()
    }
