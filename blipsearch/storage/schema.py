"""The catalog's tables as SQLAlchemy 2 typed ORM models.

SQL is the source of truth: every item keeps its ITC embedding, so a vector index can always be
rebuilt from here without running BLIP, and `changes` records every write so an index can catch
up from the last change it applied instead of rebuilding.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from blipsearch.storage.match_keys import MAX_KEY_CHARS, match_key

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"
    MISSING = "missing"


class ChangeOp(enum.StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Item(Base):
    """One image of the collection and everything search shows or filters on."""

    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'indexed', 'failed', 'missing')", name="status_known"),
        CheckConstraint("price IS NULL OR price >= 0", name="price_not_negative"),
        CheckConstraint(
            "embedding_dtype IS NULL OR embedding_dtype IN ('float16', 'float32')",
            name="embedding_dtype_known",
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text, unique=True, comment="file path or URI the image came from")
    origin: Mapped[str | None] = mapped_column(
        Text, index=True, comment="the folder or manifest that brought the item in; scope of --prune"
    )
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True, comment="sha256 of the bytes")
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True, comment="SKU or catalog id")
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)

    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    file_mtime: Mapped[float | None] = mapped_column(Float)

    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(200), index=True)
    brand: Mapped[str | None] = mapped_column(String(200), index=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(14, 2), index=True)
    currency: Mapped[str | None] = mapped_column(String(3))
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, comment="free-form manifest fields")

    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, comment="ITC vector, little-endian")
    embedding_dtype: Mapped[str | None] = mapped_column(String(8))
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    model_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)

    caption: Mapped[str | None] = mapped_column(Text)
    caption_fingerprint: Mapped[str | None] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    sku_key: Mapped[str | None] = mapped_column(
        String(MAX_KEY_CHARS), index=True, comment="external_id in match_key form, for exact matches"
    )
    title_key: Mapped[str | None] = mapped_column(
        String(MAX_KEY_CHARS), index=True, comment="title in match_key form, for exact matches"
    )
    brand_key: Mapped[str | None] = mapped_column(
        String(MAX_KEY_CHARS), index=True, comment="brand in match_key form, for exact matches"
    )

    tags: Mapped[list[ItemTag]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="ItemTag.tag"
    )
    texts: Mapped[list[ItemText]] = relationship(
        back_populates="item", cascade="all, delete-orphan", order_by="ItemText.slot"
    )

    @validates("external_id", "title", "brand")
    def _keep_match_key(self, field: str, value: str | None) -> str | None:
        """Every assignment of a matched field refreshes its key, whichever code path writes it."""
        key = match_key(value)
        if field == "external_id":
            self.sku_key = key
        elif field == "title":
            self.title_key = key
        else:
            self.brand_key = key
        return value


class ItemTag(Base):
    """Tags in their own table, so "tag contains" is an indexed join on every database."""

    __tablename__ = "item_tags"

    item_id: Mapped[int] = mapped_column(Id, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)

    item: Mapped[Item] = relationship(back_populates="tags")

    __table_args__ = (Index("ix_item_tags_tag_item", "tag", "item_id"),)


class TextKind(enum.StrEnum):
    TITLE = "title"
    DESCRIPTION = "description"
    CAPTION = "caption"
    SYNTHETIC = "synthetic"
    """A caption CapFilt sampled (nucleus) to bootstrap noisy texts; lives in the synthetic slots."""


class TextOrigin(enum.StrEnum):
    ORIGINAL = "original"
    """From the source (title, description) or the indexer's own caption; CapFilt never deletes it."""
    SYNTHETIC = "synthetic"


TEXT_SLOTS = 16
"""Text vectors of item `i` use ids `i * TEXT_SLOTS + slot`, so an item's texts form one id range."""

SLOT_OF_KIND = {TextKind.TITLE: 0, TextKind.DESCRIPTION: 1, TextKind.CAPTION: 2}
"""Fixed kinds only: synthetic texts take any of `SYNTHETIC_SLOTS`."""

SYNTHETIC_SLOTS = range(8, TEXT_SLOTS)
"""Slots 8..15: disjoint from the fixed kinds, so synthetic texts share the item's id range."""


def synthetic_slot(index: int) -> int:
    """The slot of an item's `index`-th synthetic text (0-based); refuses more than fit."""
    if not 0 <= index < len(SYNTHETIC_SLOTS):
        raise ValueError(f"an item holds at most {len(SYNTHETIC_SLOTS)} synthetic texts, not {index + 1}")
    return SYNTHETIC_SLOTS[index]


class ItemText(Base):
    """One text of an item with its ITC vector: the rows behind the image-to-text index.

    The vector id is derived from (item_id, slot) rather than stored, so that catching the text
    index up on an item means replacing one contiguous id range, whatever texts it had before.
    """

    __tablename__ = "item_texts"
    __table_args__ = (
        CheckConstraint(f"slot >= 0 AND slot < {TEXT_SLOTS}", name="slot_in_range"),
        CheckConstraint(
            "embedding_dtype IS NULL OR embedding_dtype IN ('float16', 'float32')",
            name="embedding_dtype_known",
        ),
        CheckConstraint("origin IN ('original', 'synthetic')", name="origin_known"),
    )

    item_id: Mapped[int] = mapped_column(Id, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dtype: Mapped[str | None] = mapped_column(String(8))
    model_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    origin: Mapped[str] = mapped_column(
        String(16),
        default=TextOrigin.ORIGINAL.value,
        server_default=TextOrigin.ORIGINAL.value,
        comment="original (source, indexer caption) or synthetic (CapFilt)",
    )
    generator_fingerprint: Mapped[str | None] = mapped_column(
        String(64), comment="the captioner that wrote a synthetic text"
    )
    filter_score: Mapped[float | None] = mapped_column(Float, comment="ITM match probability with the image")
    noisy: Mapped[bool | None] = mapped_column(
        Boolean, comment="score below the threshold; null: not filtered"
    )
    filter_fingerprint: Mapped[str | None] = mapped_column(String(64), comment="the ITM model that filtered")

    item: Mapped[Item] = relationship(back_populates="texts")

    @property
    def vector_id(self) -> int:
        return self.item_id * TEXT_SLOTS + self.slot


class Change(Base):
    """Append-only log of catalog writes; a vector index records the last id it applied."""

    __tablename__ = "changes"
    __table_args__ = (CheckConstraint("op IN ('upsert', 'delete')", name="op_known"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(Id, index=True)
    op: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class IngestJob(Base):
    """An indexing run requested through the API, kept in SQL so that it survives a restart.

    A job is claimed by one runner (`status` goes queued -> running atomically), reports its
    progress here while it runs, and ends succeeded, failed or cancelled. The running process
    holds a lease (`lease_expires_at`) that it renews while it works; once the lease has expired,
    any runner on any host may take the job over, so no process identity has to be trusted.
    """

    __tablename__ = "ingest_jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status_known"
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, comment="folder or manifest on the server")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, comment="prune, captions, index_kind, retry_failed")
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, comment="the run's report so far")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, comment="times a runner started it")
    worker: Mapped[str | None] = mapped_column(String(200), comment="host:pid:token of the runner")
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="a running job whose lease has passed may be taken over"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
