"""The indexer: source -> inspect (threads) -> embed (batches) -> catalog (a transaction per batch) -> index.

Order of durability: a batch is committed to SQL (items and their change-log entries together),
then applied to the in-memory indexes, which are committed to disk every
`index_checkpoint_items` items and at the end. A crash anywhere loses at most the uncommitted
batch; the next run skips everything already in SQL (content hashes) and the next open of the
indexes replays the changes they had not recorded.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from blipsearch.errors import InvalidInputError
from blipsearch.faults import crash_point
from blipsearch.indexer.inspect import Action, Inspection, InspectPolicy, inspect, reason_class
from blipsearch.indexer.progress import Progress
from blipsearch.indexer.sources import FolderSource, ManifestSource, SourceRecord, open_source
from blipsearch.models.captioner import Captioner
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.paths import IngestRoots
from blipsearch.remote_fetch import FetchOnDemand, canonical_url
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.index_spec import RequestedKind
from blipsearch.storage.item_writes import ItemMetadata, ItemWrite, TextVector, own_texts
from blipsearch.storage.schema import Item, ItemStatus, TextOrigin
from blipsearch.storage.store_choice import open_vector_store, writer_lock
from blipsearch.storage.vector_codec import round_trip
from blipsearch.storage.vector_store import VectorStore
from blipsearch.storage.vision_cache import VisionTokenCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    captions: bool = False
    prune: bool = False
    retry_failed: bool = False
    follow_symlinks: bool = False
    include_hidden: bool = False
    refetch_remote: bool = False
    """Fetch images named by URL again even when already embedded (see `inspect._examine_remote`)."""
    index_kind: RequestedKind | None = None
    roots: IngestRoots | None = None
    """Where the source and every file it names must lie (a server-side job); None: anywhere (the CLI)."""
    should_stop: Callable[[], bool] | None = None
    """Asked after each chunk is committed, and every few hundred files while listing; True ends the
    run there (the indexes are still committed and the report says `cancelled`), so a job can be
    cancelled or a server stopped without waiting."""


@dataclass
class IndexReport:
    source: str
    seen: int = 0
    embedded: int = 0
    reused: int = 0
    """New items whose bytes matched an item already embedded: vector copied, model not run."""
    unchanged: int = 0
    metadata_updated: int = 0
    captioned: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failed_examples: list[str] = field(default_factory=list)
    missing: int = 0
    pruned: int = 0
    rejected_rows: list[str] = field(default_factory=list)
    ignored_files: int = 0
    skipped_hidden: int = 0
    skipped_symlinks: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    generation: int = 0
    indexed_total: int = 0
    rebuilt: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    """`should_stop` ended the run early: later files were not looked at, nothing was marked missing."""
    engine: str = "local"

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seen": self.seen,
            "embedded": self.embedded,
            "reused": self.reused,
            "unchanged": self.unchanged,
            "metadata_updated": self.metadata_updated,
            "captioned": self.captioned,
            "failed": self.failed,
            "failures": dict(self.failures),
            "failed_examples": self.failed_examples,
            "missing": self.missing,
            "pruned": self.pruned,
            "rejected_rows": self.rejected_rows,
            "ignored_files": self.ignored_files,
            "skipped_hidden": self.skipped_hidden,
            "skipped_symlinks": self.skipped_symlinks,
            "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "generation": self.generation,
            "indexed_total": self.indexed_total,
            "rebuilt": self.rebuilt,
            "cancelled": self.cancelled,
            "engine": self.engine,
        }


class ChunkEngine(Protocol):
    """Somewhere else to inspect and embed (a Ray cluster): hands back whole chunks, vectors included.

    Each `Inspection` of action EMBED carries its `vector` (and `text_vectors` for the texts it will
    need), so the writer here only commits: the same transactions, order and crash rules as a local run.
    """

    name: str

    def chunks(
        self,
        records: Sequence[SourceRecord],
        existing: Callable[[list[str]], dict[str, Item]],
        policy: InspectPolicy,
    ) -> Iterator[list[Inspection]]: ...


class Indexer:
    """Writes one source into the catalog and the vector indexes of a data directory."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: RetrievalModel | None = None,
        captioner: Captioner | None = None,
        catalog: Catalog | None = None,
        progress: Progress | None = None,
        engine: ChunkEngine | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        """None: decode threads and the model in this process; else where the embedding runs."""
        self._model = model
        self._captioner = captioner
        self.catalog = catalog or Catalog.open(settings)
        self.progress = progress or Progress(enabled=False)

    @property
    def model(self) -> RetrievalModel:
        if self._model is None:
            self._model = RetrievalModel.load(self.settings.retrieval_model, self.settings)
        return self._model

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = Captioner.load(self.settings.caption_model, self.settings)
        return self._captioner

    def open_store(self, kind: RequestedKind | None = None, *, writer: bool = True) -> VectorStore:
        """This catalog's vectors for the model; a writer must hold `writer_lock` (as `run` does)."""
        return open_vector_store(
            self.settings,
            self.catalog,
            fingerprint=self.model.fingerprint,
            dim=self.model.embedding_dim,
            writer=writer,
            requested_kind=kind,
        )

    def run(self, path: Path, options: IndexOptions | None = None) -> IndexReport:
        options = options or IndexOptions()
        if self.engine is not None and options.captions:
            raise InvalidInputError(
                f"--captions runs on the local engine only; index with --engine {self.engine.name} first, "
                "then `blipsearch index PATH --captions` adds the captions (nothing is embedded twice)."
            )
        source = open_source(
            path,
            follow_symlinks=options.follow_symlinks,
            include_hidden=options.include_hidden,
            roots=options.roots,
            url_identity=lambda url: canonical_url(url, self.settings),
        )
        with writer_lock(self.settings, self.catalog, f"index {source.origin}"):
            return _Run(self, source, options).execute()


LIST_STOP_CHECK = 256
"""Records listed between two `should_stop` questions (one SQL read each in a job)."""


class _Run:
    """State of one indexing run; `execute` is the whole pipeline."""

    def __init__(
        self, indexer: Indexer, source: FolderSource | ManifestSource, options: IndexOptions
    ) -> None:
        self.indexer = indexer
        self.settings = indexer.settings
        self.catalog = indexer.catalog
        self.source = source
        self.options = options
        self.report = IndexReport(
            source=source.origin, engine=indexer.engine.name if indexer.engine else "local"
        )
        self.model = indexer.model
        self.captioner = indexer.captioner if options.captions else None
        self.store: VectorStore | None = None
        self.since_checkpoint = 0
        self.token_cache = (
            VisionTokenCache.for_model(self.settings, self.model)
            if self.settings.vision_tokens == "cache" and self.settings.vision_cache_bytes > 0
            else None
        )
        self.token_cache_room = self.token_cache.room_bytes() if self.token_cache is not None else 0

    def execute(self) -> IndexReport:
        started = time.perf_counter()
        self.store = self.indexer.open_store(self.options.index_kind)
        records = self._list_records()
        self.report.seen = len(records)
        policy = InspectPolicy(
            fingerprint=self.model.fingerprint,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            preprocess=self.model.pixel_values,
            caption_fingerprint=self.captioner.fingerprint if self.captioner else None,
            retry_failed=self.options.retry_failed,
            decode_at_least=(side := self._model_input_side(), side),
            fetch=FetchOnDemand(self.settings),
            refetch_remote=self.options.refetch_remote,
        )
        progress = self.indexer.progress
        progress.start(total=len(records), description=f"Indexing {Path(self.source.origin).name}")
        engine = self.indexer.engine
        if self.report.cancelled:
            pass
        elif engine is not None:
            chunks = engine.chunks(records, self.catalog.items_by_sources, policy)
            try:
                self._write_chunks(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # a cancelled run stops the cluster's work on chunks still ahead
        else:
            with ThreadPoolExecutor(self.settings.decode_workers, thread_name_prefix="decode") as pool:
                if not self._write_chunks(self._inspected_chunks(pool, records, policy)):
                    pool.shutdown(wait=False, cancel_futures=True)  # chunks decoding ahead: not needed
        progress.finish()
        if not self.report.cancelled:
            self._handle_disappeared({record.source for record in records})
        issues = self.source.issues
        self.report.rejected_rows = issues.rejected_rows
        self.report.ignored_files = issues.ignored_files
        self.report.skipped_hidden = issues.skipped_hidden
        self.report.skipped_symlinks = issues.skipped_symlinks
        self._finish_indexes()
        self.report.seconds = time.perf_counter() - started
        log.info("index run finished", extra=self.report.as_dict())
        return self.report

    def _write_chunks(self, chunks: Iterator[list[Inspection]]) -> bool:
        """Commit chunk after chunk; False if `should_stop` ended the run first."""
        progress = self.indexer.progress
        for inspections in chunks:
            self._write_chunk(inspections)
            progress.advance(len(inspections), embedded=self.report.embedded, failed=self.report.failed)
            if self.options.should_stop is not None and self.options.should_stop():
                self.report.cancelled = True
                return False
        return True

    def _list_records(self) -> list[SourceRecord]:
        """The source's records, asking `should_stop` every `LIST_STOP_CHECK` of them on the way:
        listing a large tree takes minutes, and a cancel must not wait for it to end."""
        records: list[SourceRecord] = []
        should_stop = self.options.should_stop
        for record in self.source.records():
            records.append(record)
            if should_stop is not None and len(records) % LIST_STOP_CHECK == 0 and should_stop():
                self.report.cancelled = True
                break
        return records

    def _model_input_side(self) -> int:
        sides = [self.model.image_size]
        if self.captioner is not None:
            sides.append(self.captioner.image_size)
        return max(sides)

    def _inspected_chunks(
        self, pool: ThreadPoolExecutor, records: Sequence[SourceRecord], policy: InspectPolicy
    ) -> Iterator[list[Inspection]]:
        """Inspections in record order, with the next chunk decoding while this one is embedded."""
        pending: list[list[Future[Inspection]]] = []
        chunk = self.settings.index_chunk_items
        starts = iter(range(0, len(records), chunk))

        def submit_next() -> None:
            start = next(starts, None)
            if start is None:
                return
            part = records[start : start + chunk]
            existing = self.catalog.items_by_sources([record.source for record in part])
            pending.append(
                [pool.submit(inspect, record, existing.get(record.source), policy) for record in part]
            )

        submit_next()
        submit_next()
        while pending:
            futures = pending.pop(0)
            results = [future.result() for future in futures]
            submit_next()
            yield results

    def _write_chunk(self, inspections: list[Inspection]) -> None:
        to_embed = [item for item in inspections if item.action is Action.EMBED]
        reused = self.catalog.embeddings_by_hash(
            [
                i.facts.content_hash
                for i in to_embed
                if i.facts and i.existing is None and not i.needs_caption
            ],
            self.model.fingerprint,
        )
        vectors: dict[str, np.ndarray] = {}
        tokens: dict[str, torch.Tensor] = {}
        run_model = [
            i
            for i in to_embed
            if not (i.facts and i.existing is None and i.facts.content_hash in reused and not i.needs_caption)
        ]
        for inspection in run_model:
            if inspection.vector is not None:
                vectors[inspection.record.source] = inspection.vector
        run_model = [i for i in run_model if i.vector is None]
        if run_model:
            started = time.perf_counter()
            pixels = torch.cat([i.pixels for i in run_model if i.pixels is not None])
            embedded = self.model.embed_images(pixels, return_vision_tokens=self.token_cache is not None)
            self.report.embed_seconds += time.perf_counter() - started
            for row, (inspection, vector) in enumerate(zip(run_model, embedded.vectors, strict=True)):
                vectors[inspection.record.source] = vector
                if embedded.vision_tokens is not None:
                    tokens[inspection.record.source] = embedded.vision_tokens[row]
            crash_point("index.embedded")
        captions = self._captions([i for i in run_model if i.needs_caption])
        writes: list[ItemWrite] = []
        for inspection in inspections:
            write = self._plan_write(inspection, vectors, reused, captions)
            if write is not None:
                writes.append(write)
            inspection.pixels = inspection.image = None
        if not writes:
            return
        known_texts = {text: vector for i in inspections for text, vector in (i.text_vectors or {}).items()}
        self._embed_texts(writes, {i.record.source: i.existing for i in inspections}, known_texts)
        ids = self.catalog.write(writes)
        self._cache_vision_tokens(writes, ids, tokens)
        assert self.store is not None
        # Replaying the change log, not just `ids`, also applies what other writers (the API's
        # uploads and deletes) committed meanwhile, so a checkpoint never claims a change it lacks.
        self.store.refresh()
        self.since_checkpoint += len(ids)
        if self.since_checkpoint >= self.settings.index_checkpoint_items:
            self.store.checkpoint()
            self.since_checkpoint = 0

    def _cache_vision_tokens(
        self, writes: list[ItemWrite], ids: list[int], tokens: dict[str, torch.Tensor]
    ) -> None:
        """Keep the vision tokens the embedding pass computed anyway, for ITM at query time.

        Only while the cache has room: past its bound, indexing would just churn the LRU.
        """
        if self.token_cache is None or not tokens:
            return
        for write, item_id in zip(writes, ids, strict=True):
            hidden = tokens.get(write.source)
            if hidden is None or write.file is None or self.token_cache_room <= 0:
                continue
            self.token_cache_room -= self.token_cache.write(item_id, write.file.content_hash, hidden)

    def _captions(self, inspections: list[Inspection]) -> dict[str, str]:
        if not inspections or self.captioner is None:
            return {}
        texts = self.captioner.caption([i.image for i in inspections if i.image is not None])
        self.report.captioned += len(texts)
        return {i.record.source: text for i, text in zip(inspections, texts, strict=True)}

    def _plan_write(
        self,
        inspection: Inspection,
        vectors: dict[str, np.ndarray],
        reused: dict[str, tuple[np.ndarray, Item]],
        captions: dict[str, str],
    ) -> ItemWrite | None:
        record, existing = inspection.record, inspection.existing
        metadata = record.metadata
        metadata_changed = metadata is not None and (existing is None or metadata.differs_from(existing))
        base = ItemWrite(
            source=record.source,
            origin=self.source.origin,
            status=ItemStatus.INDEXED,
            item_id=existing.id if existing else None,
            metadata=metadata if metadata_changed else None,
        )
        if inspection.action is Action.FAILED:
            error = inspection.error or "failed"
            self.report.failed += 1
            self.report.failures[reason_class(error, record.name)] += 1
            if len(self.report.failed_examples) < 20:
                self.report.failed_examples.append(error)
            if (
                existing is not None
                and existing.status == ItemStatus.FAILED.value
                and existing.error == error
                and not metadata_changed
            ):
                return None
            base.status, base.error, base.file = ItemStatus.FAILED, error, inspection.facts
            return base
        if inspection.action is Action.UNCHANGED:
            assert existing is not None
            if existing.status == ItemStatus.FAILED.value:
                self.report.failed += 1
                self.report.failures[reason_class(existing.error or "failed", record.name)] += 1
                if not metadata_changed:
                    return None
                base.status, base.error = ItemStatus.FAILED, existing.error
                return base
            self.report.unchanged += 1
            touched = inspection.facts is not None and inspection.facts.file_mtime != existing.file_mtime
            if not (metadata_changed or touched or inspection.came_back):
                return None
            if metadata_changed:
                self.report.metadata_updated += 1
            base.file = inspection.facts
            return base
        facts = inspection.facts
        assert facts is not None
        if record.source in vectors:
            self.report.embedded += 1
            base.embedding = vectors[record.source]
        else:
            vector, twin = reused[facts.content_hash]
            self.report.reused += 1
            base.embedding = vector
            if twin.caption and not inspection.needs_caption:
                base.caption, base.caption_fingerprint = twin.caption, twin.caption_fingerprint
        base.model_fingerprint = self.model.fingerprint
        base.file = facts
        if record.source in captions and self.captioner is not None:
            base.caption, base.caption_fingerprint = captions[record.source], self.captioner.fingerprint
        return base

    def _embed_texts(
        self,
        writes: list[ItemWrite],
        existing: dict[str, Item | None],
        known: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Give each write the texts (title, description, caption) its item should have, embedded.

        `known`: texts already embedded by the same model elsewhere (a Ray actor); only the rest run here.
        """
        wanted: list[tuple[ItemWrite, list[tuple[int, str, str]]]] = []
        for write in writes:
            if write.status is not ItemStatus.INDEXED:
                continue
            item = existing.get(write.source)
            meta = write.metadata or (ItemMetadata.of(item) if item else None)
            caption = write.caption if write.caption is not None else (item.caption if item else None)
            texts = own_texts(meta, caption)
            # CapFilt's synthetic texts are not the indexer's to compare (Catalog.write keeps them).
            own = [t for t in item.texts if t.origin != TextOrigin.SYNTHETIC.value] if item else []
            current = sorted((t.slot, t.kind, t.text) for t in own)
            stale_model = any(t.model_fingerprint != self.model.fingerprint for t in own)
            if texts != current or stale_model or (item is None and texts):
                wanted.append((write, texts))
        flat = [text for _, texts in wanted for _, _, text in texts]
        if not flat:
            for write, _ in wanted:
                write.texts, write.model_fingerprint = [], write.model_fingerprint or self.model.fingerprint
            return
        known = known or {}
        missing = list(dict.fromkeys(text for text in flat if text not in known))
        fresh = dict(zip(missing, self.model.embed_texts(missing), strict=True)) if missing else {}
        embedded = np.stack([known[text] if text in known else fresh[text] for text in flat])
        vectors = iter(round_trip(embedded, self.catalog.embedding_storage))
        for write, texts in wanted:
            write.texts = [TextVector(slot, kind, text, next(vectors)) for slot, kind, text in texts]
            write.model_fingerprint = write.model_fingerprint or self.model.fingerprint

    def _handle_disappeared(self, seen: set[str]) -> None:
        """Items this origin brought in earlier that it no longer lists: missing, or gone with --prune."""
        known = self.catalog.sources_in_origin(self.source.origin)
        gone = [(item_id, status) for source, (item_id, status) in known.items() if source not in seen]
        if self.options.prune:
            ids = [item_id for item_id, _ in gone]
            self.catalog.delete_items(ids)
            self.report.pruned = len(ids)
        else:
            ids = [item_id for item_id, status in gone if status != ItemStatus.MISSING.value]
            self.catalog.mark_missing(ids)
            self.report.missing = len(gone)
        if ids and self.store is not None:
            self.store.refresh()

    def _finish_indexes(self) -> None:
        assert self.store is not None
        summary = self.store.finish_run()
        self.report.rebuilt.update(summary.rebuilt)
        self.report.generation = summary.generation
        self.report.indexed_total = summary.indexed_total
