"""Per-file work that runs in the decode threads: decide, read, hash, decode, preprocess.

The decision comes first and is as cheap as possible: a file whose size and modification time
match an item already embedded by the current model is not even read; one whose bytes hash to the
stored content hash is not decoded. Only new or changed content reaches the model.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from blipsearch.errors import InvalidInputError
from blipsearch.images import decode_image, read_image_file
from blipsearch.indexer.sources import SourceRecord
from blipsearch.storage.item_writes import FileFacts
from blipsearch.storage.schema import Item, ItemStatus


class Action(enum.Enum):
    UNCHANGED = "unchanged"
    """Same file as last time (size and mtime, or bytes): nothing to embed."""
    EMBED = "embed"
    """New or changed bytes: decoded and preprocessed, waiting for the model."""
    FAILED = "failed"
    """Missing, unreadable or refused; `error` says why."""


@dataclass
class Inspection:
    record: SourceRecord
    existing: Item | None
    action: Action
    facts: FileFacts | None = None
    pixels: torch.Tensor | None = None
    image: Image.Image | None = None
    error: str | None = None
    needs_caption: bool = False
    vector: np.ndarray | None = None
    """The ITC vector, when the embedding ran elsewhere (a Ray actor): the writer skips the model."""
    text_vectors: dict[str, np.ndarray] | None = None
    """Texts of the record's metadata embedded beside the image elsewhere, by text."""

    @property
    def came_back(self) -> bool:
        """A missing item whose file reappeared unchanged: re-activated without embedding."""
        return self.existing is not None and self.existing.status == ItemStatus.MISSING.value


@dataclass(frozen=True)
class InspectPolicy:
    fingerprint: str
    max_bytes: int
    max_pixels: int
    preprocess: Callable[[list[Image.Image]], torch.Tensor]
    caption_fingerprint: str | None = None
    retry_failed: bool = False
    decode_at_least: tuple[int, int] | None = None
    """The models' input size: JPEGs decode at the smallest DCT scale that still covers it."""
    fetch: Callable[[str, int], bytes] | None = None
    """(url, max_bytes) -> bytes for records named by URL; None refuses them."""
    refetch_remote: bool = False
    """Fetch URLs already embedded again (to notice changed bytes); by default a URL is its content."""


@dataclass(frozen=True)
class KnownFile:
    """What the catalog knows about a source's file, detached from any SQL session.

    The decision in `examine` needs only this, so it can run where the catalog is out of reach (a
    Ray read task on another machine) and still decide exactly as the local indexer does.
    """

    status: str
    size_bytes: int | None
    file_mtime: float | None
    content_hash: str | None
    embedded_by: str | None
    """The model fingerprint of the stored vector, None without one."""
    caption_fingerprint: str | None
    format: str | None = None
    width: int | None = None
    height: int | None = None

    @classmethod
    def of(cls, item: Item | None) -> KnownFile | None:
        if item is None:
            return None
        return cls(
            status=item.status,
            size_bytes=item.size_bytes,
            file_mtime=item.file_mtime,
            content_hash=item.content_hash,
            embedded_by=item.model_fingerprint if item.embedding is not None else None,
            caption_fingerprint=item.caption_fingerprint,
            format=item.format,
            width=item.width,
            height=item.height,
        )


def _embedded_by(known: KnownFile | None, fingerprint: str) -> bool:
    return (
        known is not None
        and known.embedded_by == fingerprint
        and known.status in (ItemStatus.INDEXED.value, ItemStatus.MISSING.value)
    )


def _wants_caption(known: KnownFile | None, policy: InspectPolicy) -> bool:
    return policy.caption_fingerprint is not None and (
        known is None or known.caption_fingerprint != policy.caption_fingerprint
    )


def inspect(record: SourceRecord, existing: Item | None, policy: InspectPolicy) -> Inspection:
    """Classify one file; never raises for a bad file (that is an `Action.FAILED`)."""
    inspection = examine(record, KnownFile.of(existing), policy)
    inspection.existing = existing
    return inspection


def _settled(known: KnownFile, policy: InspectPolicy) -> bool:
    """Nothing to do for a file that is the one the catalog knows: embedded by this model, or failed
    and not to be retried."""
    if known.status == ItemStatus.FAILED.value:
        return not policy.retry_failed
    return known.status == ItemStatus.INDEXED.value and _embedded_by(known, policy.fingerprint)


def _same_file(known: KnownFile, stat: os.stat_result) -> bool:
    return known.size_bytes == stat.st_size and known.file_mtime == stat.st_mtime


def unchanged_without_reading(
    record: SourceRecord, known: KnownFile | None, policy: InspectPolicy
) -> Inspection | None:
    """`examine`'s answer when it needs no byte of the image (a stat at most), else None.

    A Ray driver asks this first for every record it can stat itself, so a re-run over an
    unchanged catalog hands the cluster nothing: no task, no actor, no model load.
    """
    if known is None or _wants_caption(known, policy):
        return None
    if record.path is None:
        same = not policy.refetch_remote
    else:
        try:
            same = _same_file(known, record.path.stat())
        except OSError:
            return None
    return Inspection(record, None, Action.UNCHANGED) if same and _settled(known, policy) else None


def examine(record: SourceRecord, known: KnownFile | None, policy: InspectPolicy) -> Inspection:
    """`inspect` on a detached `KnownFile`; the `Inspection` it returns has no `existing` item."""
    if record.path is None:
        return unchanged_without_reading(record, known, policy) or _examine_remote(record, known, policy)
    try:
        stat = record.path.stat()
    except OSError as exc:
        reason = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
        return Inspection(record, None, Action.FAILED, error=f"{record.name}: {reason}.")
    needs_caption = _wants_caption(known, policy)
    if known is not None and not needs_caption and _same_file(known, stat) and _settled(known, policy):
        return Inspection(record, None, Action.UNCHANGED)
    try:
        data = read_image_file(record.path, max_bytes=policy.max_bytes)
    except InvalidInputError as exc:
        return Inspection(record, None, Action.FAILED, error=str(exc), facts=_bare_facts(stat))
    return _from_bytes(record, known, policy, data, stat.st_mtime, needs_caption)


REMOTE_MTIME = 0.0
"""A URL has no modification time the catalog could compare; its bytes' hash is what counts."""


def _examine_remote(record: SourceRecord, known: KnownFile | None, policy: InspectPolicy) -> Inspection:
    """An image named by URL: fetched only if the catalog has no vector of it from this model yet.

    A URL is taken as naming fixed content (catalog image URLs are versioned in practice), so an
    incremental run over ten million URLs asks no host anything for what it already embedded;
    `refetch_remote` fetches again and compares the bytes' hash, as a local run does for a touched file.
    """
    needs_caption = _wants_caption(known, policy)
    listed_again = (
        known is not None
        and not policy.refetch_remote
        and not needs_caption
        and _embedded_by(known, policy.fingerprint)
        and known.content_hash
    )
    if listed_again:  # a missing item whose URL the manifest names again: back, without a fetch
        assert known is not None and known.content_hash is not None
        facts = FileFacts(
            known.content_hash, known.size_bytes or 0, REMOTE_MTIME, known.format, known.width, known.height
        )
        return Inspection(record, None, Action.UNCHANGED, facts=facts)
    if policy.fetch is None:
        return Inspection(record, None, Action.FAILED, error=f"{record.source}: URLs are not fetched here.")
    try:
        data = policy.fetch(record.source, policy.max_bytes)
    except InvalidInputError as exc:
        return Inspection(record, None, Action.FAILED, error=str(exc), facts=FileFacts("", 0, REMOTE_MTIME))
    return _from_bytes(record, known, policy, data, REMOTE_MTIME, needs_caption)


def _from_bytes(
    record: SourceRecord,
    known: KnownFile | None,
    policy: InspectPolicy,
    data: bytes,
    mtime: float,
    needs_caption: bool,
) -> Inspection:
    """Hash, then decode and preprocess unless the catalog already has these bytes embedded."""
    name = record.name
    digest = hashlib.sha256(data).hexdigest()
    facts = FileFacts(content_hash=digest, size_bytes=len(data), file_mtime=mtime)
    if (
        known is not None
        and known.content_hash == digest
        and _embedded_by(known, policy.fingerprint)
        and not needs_caption
    ):
        facts = FileFacts(digest, len(data), mtime, known.format, known.width, known.height)
        return Inspection(record, None, Action.UNCHANGED, facts=facts)
    try:
        decoded = decode_image(data, max_pixels=policy.max_pixels, name=name, at_least=policy.decode_at_least)
        pixels = policy.preprocess([decoded.image])
    except InvalidInputError as exc:
        return Inspection(record, None, Action.FAILED, facts=facts, error=str(exc))
    except (OSError, ValueError, RuntimeError) as exc:
        return Inspection(
            record, None, Action.FAILED, facts=facts, error=f"{name} could not be decoded ({exc})."
        )
    facts = FileFacts(digest, len(data), mtime, decoded.format, decoded.width, decoded.height)
    return Inspection(
        record,
        None,
        Action.EMBED,
        facts=facts,
        pixels=pixels,
        image=decoded.image if needs_caption else None,
        needs_caption=needs_caption,
    )


def _bare_facts(stat: object) -> FileFacts:
    return FileFacts(
        content_hash="",
        size_bytes=int(getattr(stat, "st_size", 0)),
        file_mtime=float(getattr(stat, "st_mtime", 0.0)),
    )


_DETAIL = re.compile(r"\s*\([^)]*\)")


def reason_class(error: str, name: str) -> str:
    """An error message with the file name and details dropped, to group failures in the summary."""
    return _DETAIL.sub("", error.replace(name, "FILE")).strip()
