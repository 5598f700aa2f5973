"""CapFilt: BLIP's bootstrapping of a catalog's noisy texts (captioner + filter).

BLIP trains on web alt-texts that often do not describe the picture. Its remedy (CapFilt) is a
captioner that writes synthetic captions by nucleus sampling (diverse, so they add information)
and a filter, the ITM head, that marks every text, original or synthetic, whose match probability
with its image is below a threshold as noisy. Here that is applied to a catalog: synthetic texts
go into the item's synthetic slots (8..15) with their ITC vectors, so image-to-text search finds
them, and each text gets its filter verdict, so `Catalog.clean_texts` can hand training and search
only the texts that match. Originals are scored but never changed or deleted: a noisy title is
still the seller's title.

A run is idempotent: it replaces an item's synthetic texts and re-scores everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from sqlalchemy import select

from blipsearch.errors import BlipsearchError
from blipsearch.models.captioner import Captioner, CaptionOptions
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.models.runtime import chunks
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog
from blipsearch.storage.item_images import ItemImages
from blipsearch.storage.schema import SYNTHETIC_SLOTS, Item, ItemStatus, TextOrigin
from blipsearch.storage.store_choice import open_vector_store, writer_lock
from blipsearch.storage.vector_codec import round_trip

log = logging.getLogger(__name__)


@dataclass
class CapFiltReport:
    """What a run did; `noisy_*` count texts whose ITM probability fell below the threshold."""

    items: int = 0
    skipped: int = 0
    """Indexed items whose image could not be read any more (moved, broken): left as they were."""
    synthetic_written: int = 0
    texts_scored: int = 0
    noisy_original: int = 0
    noisy_synthetic: int = 0
    threshold: float = 0.5
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CapFilt:
    """Runs the captioner and the ITM filter over indexed items and records the result in SQL."""

    def __init__(
        self,
        settings: Settings,
        retrieval_model: RetrievalModel,
        captioner: Captioner,
        *,
        catalog: Catalog | None = None,
    ) -> None:
        self.settings = settings
        self.model = retrieval_model
        self.captioner = captioner
        self.catalog = catalog or Catalog.open(settings)
        self.item_images = ItemImages(settings)

    def run(
        self,
        item_ids: Sequence[int] | None = None,
        *,
        synthetic_per_image: int = 1,
        threshold: float = 0.5,
        batch: int = 16,
        limit: int | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> CapFiltReport:
        """Caption, embed, store and filter the given items (default: every indexed item).

        `threshold` applies to the ITM match probability; 0 marks nothing noisy, anything above 1
        marks everything. Sampling is seeded (`seed`), so a re-run with the same models and
        batches writes the same synthetic captions. The vector indexes are caught up and committed
        at the end, under the data directory's writer lock like an index run.
        """
        if not 0 <= synthetic_per_image <= len(SYNTHETIC_SLOTS):
            raise ValueError(f"synthetic_per_image must be 0..{len(SYNTHETIC_SLOTS)}")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        started = time.perf_counter()
        report = CapFiltReport(threshold=threshold)
        with writer_lock(self.settings, self.catalog, "capfilt"):
            ids = self._indexed_ids(item_ids)
            if limit is not None:
                ids = ids[: max(0, limit)]
            options = CaptionOptions(strategy="nucleus", seed=seed)
            for part in chunks(ids, batch):
                self._run_batch(list(part), synthetic_per_image, threshold, options, report)
                done = min(len(ids), report.items + report.skipped)
                log.info("capfilt progress", extra={"done": done, "total": len(ids), **report.as_dict()})
                if progress is not None:
                    progress(done, len(ids))
            self._sync_indexes()
        report.seconds = time.perf_counter() - started
        log.info("capfilt finished", extra=report.as_dict())
        return report

    def _indexed_ids(self, item_ids: Sequence[int] | None) -> list[int]:
        with self.catalog.sessions() as session:
            query = select(Item.id).where(Item.status == ItemStatus.INDEXED.value).order_by(Item.id)
            indexed = [int(i) for i in session.scalars(query)]
        if item_ids is None:
            return indexed
        wanted = {int(i) for i in item_ids}
        return [i for i in indexed if i in wanted]

    def _images(self, items: Sequence[Item], report: CapFiltReport) -> dict[int, Image.Image]:
        images: dict[int, Image.Image] = {}
        for item in items:
            try:
                images[item.id] = self.item_images.open(
                    item, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
                )
            except (BlipsearchError, OSError) as exc:
                report.skipped += 1
                log.warning("capfilt skipped an item", extra={"item_id": item.id, "reason": str(exc)})
        return images

    def _run_batch(
        self,
        item_ids: list[int],
        per_image: int,
        threshold: float,
        options: CaptionOptions,
        report: CapFiltReport,
    ) -> None:
        items = self.catalog.items_by_ids(item_ids)
        images = self._images(items, report)
        if not images:
            return
        order = sorted(images)
        # 1. Captioner: N nucleus samples per image, embedded with the retrieval model's ITC head.
        synthetic: dict[int, list[tuple[str, np.ndarray, str]]] = {i: [] for i in order}
        if per_image:
            repeated = [images[i] for i in order for _ in range(per_image)]
            captions = self.captioner.caption(repeated, options=options)
            owners = [i for i in order for _ in range(per_image)]
            kept = [(owner, " ".join(text.split())) for owner, text in zip(owners, captions, strict=True)]
            kept = [(owner, text) for owner, text in kept if text]  # an empty sample embeds nothing
            if kept:
                vectors = round_trip(
                    self.model.embed_texts([text for _, text in kept]), self.catalog.embedding_storage
                )
                for (owner, text), vector in zip(kept, vectors, strict=True):
                    synthetic[owner].append((text, vector, self.captioner.fingerprint))
        report.synthetic_written += self.catalog.store_synthetic_texts(synthetic, self.model.fingerprint)
        # 2. Filter: every text of the item against its own image, vision tokens once per image.
        rows = [
            (item.id, text.slot, text.text, text.origin)
            for item in self.catalog.items_by_ids(order)
            for text in item.texts
        ]
        if rows:
            vision = self.model.vision_tokens([images[i] for i in order])
            position = {item_id: index for index, item_id in enumerate(order)}
            index = torch.tensor([position[row[0]] for row in rows], device=vision.device)
            scores = self.model.itm_scores([row[2] for row in rows], vision_tokens=vision[index])
            verdicts = []
            for (item_id, slot, _, origin), score in zip(rows, scores, strict=True):
                noisy = bool(score < threshold)
                verdicts.append((item_id, slot, float(score), noisy))
                if noisy and origin == TextOrigin.SYNTHETIC.value:
                    report.noisy_synthetic += 1
                elif noisy:
                    report.noisy_original += 1
            report.texts_scored += self.catalog.store_filter_scores(verdicts, self.model.fingerprint)
        report.items += len(order)

    def _sync_indexes(self) -> None:
        """Apply the run's catalog writes to the vector store, as an index run would."""
        store = open_vector_store(
            self.settings,
            self.catalog,
            fingerprint=self.model.fingerprint,
            dim=self.model.embedding_dim,
            writer=True,
        )
        store.refresh()
        store.checkpoint()
