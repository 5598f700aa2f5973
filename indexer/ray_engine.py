"""`blipsearch index --engine ray`: read, decode and embed on a Ray cluster; commit in this process.

The driver (this process) lists the source, looks up what the catalog already knows, settles
what it can without reading a byte (a stat matching the catalog, a URL already embedded), and
hands Ray the rest a shard at a time. Read tasks decide exactly as the local indexer does
(`inspect.examine` on a detached `KnownFile`): unchanged bytes are not decoded. An actor pool
(one model per actor, fractional CPUs, `num_gpus` on GPU clusters) embeds what is left. Results
stream back as workers finish them, and the driver commits them through the same
`_Run._write_chunk` as a local run, so the catalog has one writer, one transaction per
chunk, and the local crash rules: a SIGKILLed driver loses at most the chunk it was committing,
and a re-run finds everything committed unchanged and embeds only the rest.

A worker that dies mid-batch is Ray's to retry: an actor is restarted up to
`ray_worker_restarts` times and its batch runs again; a read task is retried by Ray Data. Past
that, the run ends with a `BlipsearchError` that says so, not Ray's traceback: what was committed
stays, and a re-run resumes.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from blipsearch.errors import BlipsearchError, ConfigError
from blipsearch.faults import arm, crash_point
from blipsearch.indexer.inspect import (
    Action,
    Inspection,
    InspectPolicy,
    KnownFile,
    examine,
    unchanged_without_reading,
)
from blipsearch.indexer.sources import SourceRecord
from blipsearch.models.loading import preprocess_with
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.item_writes import own_texts
from blipsearch.storage.schema import Item

if TYPE_CHECKING:
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil


log = logging.getLogger(__name__)

RAY_MISSING = "--engine ray needs Ray: pip install 'blipsearch[distributed]'."
READ_TASK_CPUS = 0.25
"""A read task is mostly I/O and one decode: a quarter CPU lets four run per core beside the actors."""


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class WorkerPlan:
    """How many embedding actors, and what each reserves."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @classmethod
    def for_cluster(cls, settings: Settings, resources: dict[str, float]) -> WorkerPlan:
        cpus = float(resources.get("CPU", 0.0))
        gpus = float(resources.get("GPU", 0.0))
        per_gpu = settings.ray_gpus_per_worker
        if per_gpu > 0 and gpus < per_gpu:
            raise ConfigError(
                f"--gpus-per-worker {per_gpu:g}: the Ray cluster has {gpus:g} GPUs; use 0 to embed on CPUs."
            )
        if cpus < settings.ray_cpus_per_worker + READ_TASK_CPUS:
            raise ConfigError(
                f"The Ray cluster has {cpus:g} CPUs: too few for one embedding actor "
                f"({settings.ray_cpus_per_worker:g} CPUs) beside a read task."
            )
        if settings.ray_workers:
            workers = settings.ray_workers
        elif per_gpu > 0:
            workers = max(1, int(gpus // per_gpu))
        else:
            workers = max(1, int(cpus // 2))
        return cls(workers, settings.ray_cpus_per_worker, per_gpu)


class ImagePreprocess:
    """The checkpoint's own resize and normalisation, picklable for read tasks (no model weights)."""

    def __init__(self, processor: BlipImageProcessorPil) -> None:
        self.processor = processor

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return preprocess_with(self.processor, images)


def read_batch(batch: dict[str, np.ndarray], policy: InspectPolicy) -> dict[str, list[Any]]:
    """A Ray read task: decide, read, hash, decode and preprocess each record of one block."""
    out: dict[str, list[Any]] = {key: [] for key in ("index", "action", "facts", "error", "pixels", "texts")}
    for index, record_bytes, known_bytes in zip(batch["index"], batch["record"], batch["known"], strict=True):
        record: SourceRecord = pickle.loads(record_bytes)
        known: KnownFile | None = pickle.loads(known_bytes)
        inspection = examine(record, known, policy)
        embed = inspection.action is Action.EMBED and inspection.pixels is not None
        out["index"].append(int(index))
        out["action"].append(inspection.action.value)
        out["facts"].append(pickle.dumps(inspection.facts))
        out["error"].append(inspection.error or "")
        pixels = inspection.pixels if embed else None
        out["pixels"].append(pixels.numpy().astype(np.float32).tobytes() if pixels is not None else b"")
        texts = [text for _, _, text in own_texts(record.metadata, None)] if embed else []
        out["texts"].append(pickle.dumps(texts))
    return out


class EmbedActor:
    """One model per actor, loaded once; embeds the images (and their metadata texts) of a batch.

    The settings come as a constructor argument. A class made per run with the settings as a class
    attribute looked tidier, but Ray's workers cache a class by its name: a later run in the same
    Ray job got the first run's settings (model, fault injection) back.
    """

    def __init__(self, settings: Settings) -> None:
        arm(settings.fault_injection)
        self.model = RetrievalModel.load(settings.retrieval_model, settings)
        self.side = self.model.image_size
        self.restarted = bool(_ray().get_runtime_context().was_current_actor_reconstructed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        crash_point("ray.embed")  # every life of the actor: it never gets past its restarts
        if not self.restarted:
            # The first life only: the restarted actor finishes. Ray runs several batches on an
            # actor at once, so "die on the N-th batch" in every life could die before any ended.
            crash_point("ray.embed_first_life")
        rows = [row for row, blob in enumerate(batch["pixels"]) if len(blob)]
        vectors: list[bytes] = [b""] * len(batch["index"])
        if rows:
            pixels = np.stack(
                [
                    np.frombuffer(batch["pixels"][row], dtype=np.float32).reshape(3, self.side, self.side)
                    for row in rows
                ]
            )
            embedded = self.model.embed_images(torch.from_numpy(pixels)).vectors
            for row, vector in zip(rows, embedded, strict=True):
                vectors[row] = np.asarray(vector, dtype=np.float32).tobytes()
        texts = [pickle.loads(blob) for blob in batch["texts"]]
        flat = list(dict.fromkeys(text for row in texts for text in row))
        embedded_texts = dict(zip(flat, self.model.embed_texts(flat), strict=True)) if flat else {}
        return {
            "index": batch["index"],
            "action": batch["action"],
            "facts": batch["facts"],
            "error": batch["error"],
            "vector": vectors,
            "texts": [pickle.dumps({text: embedded_texts[text] for text in row}) for row in texts],
        }


class RayEngine:
    """A `ChunkEngine` on a Ray cluster: `start()` joins (or starts) it, `close()` leaves it."""

    name = "ray"

    def __init__(
        self, settings: Settings, model: RetrievalModel, *, clock: Callable[[], float] = time.perf_counter
    ):
        self.settings = settings
        self.model = model
        self.clock = clock
        self.plan: WorkerPlan | None = None
        self.startup_seconds = 0.0
        self._started_here = False

    def start(self) -> WorkerPlan:
        ray = _ray()
        started = self.clock()
        if not ray.is_initialized():
            address = self.settings.ray_address
            try:
                ray.init(
                    # "local" starts a cluster of this process's own: None would join any cluster
                    # already running on the machine (`ray start`), which nobody asked for.
                    address=address or "local",
                    num_cpus=None if address else os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except ConnectionError:
                raise ConfigError(f"No Ray cluster answers at {address}.") from None
            self._started_here = True
        # Our own progress and summary say it; a failure reaches the user as `_workers_failed`'s
        # sentence, not as Ray Data's tracebacks logged on the way.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        # Results arrive in whatever order the workers finish (`_inspection` finds each record by
        # its index): with order preserved, Ray Data held every chunk back until the shard's end,
        # so a driver killed mid-shard had committed nothing.
        context.execution_options.preserve_order = False
        context.enable_progress_bars = False
        self.plan = WorkerPlan.for_cluster(self.settings, ray.cluster_resources())
        self.startup_seconds = self.clock() - started
        log.info(
            "ray cluster joined",
            extra={
                "workers": self.plan.workers,
                "cpus_per_worker": self.plan.cpus_per_worker,
                "gpus_per_worker": self.plan.gpus_per_worker,
                "seconds": round(self.startup_seconds, 3),
            },
        )
        return self.plan

    def close(self) -> None:
        if self._started_here:
            _ray().shutdown()
            self._started_here = False

    def __enter__(self) -> RayEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chunks(
        self,
        records: Sequence[SourceRecord],
        existing: Callable[[list[str]], dict[str, Item]],
        policy: InspectPolicy,
    ) -> Iterator[list[Inspection]]:
        plan = self.plan or self.start()
        remote_policy = replace(policy, preprocess=ImagePreprocess(self.model.image_processor))
        shard = self.settings.ray_shard_items
        chunk = self.settings.index_chunk_items
        for start in range(0, len(records), shard):
            part = list(records[start : start + shard])
            known = existing([record.source for record in part])
            decided, rest = self._decided_here(part, known, policy)
            for first in range(0, len(decided), chunk):
                yield decided[first : first + chunk]
            if rest:
                yield from self._shard_chunks(rest, known, remote_policy, plan)

    def _decided_here(
        self, part: list[SourceRecord], known: dict[str, Item], policy: InspectPolicy
    ) -> tuple[list[Inspection], list[tuple[SourceRecord, KnownFile | None]]]:
        """Records the driver can call unchanged without a byte read, and the rest for the cluster.

        A re-run over an unchanged catalog then starts no task and loads no model. A file the
        driver cannot stat (not mounted here) simply goes to the cluster, which decides the same way.
        """
        decided: list[Inspection] = []
        rest: list[tuple[SourceRecord, KnownFile | None]] = []
        for record in part:
            item = known.get(record.source)
            facts = KnownFile.of(item)
            inspection = unchanged_without_reading(record, facts, policy)
            if inspection is None:
                rest.append((record, facts))
            else:
                inspection.existing = item
                decided.append(inspection)
        return decided, rest

    def _shard_chunks(
        self,
        rest: list[tuple[SourceRecord, KnownFile | None]],
        known: dict[str, Item],
        policy: InspectPolicy,
        plan: WorkerPlan,
    ) -> Iterator[list[Inspection]]:
        ray = _ray()
        part = [record for record, _ in rest]
        rows = [
            {"index": index, "record": pickle.dumps(record), "known": pickle.dumps(facts)}
            for index, (record, facts) in enumerate(rest)
        ]
        blocks = max(1, math.ceil(len(rows) / self.settings.ray_block_items))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        dataset = dataset.map_batches(
            read_batch, fn_kwargs={"policy": policy}, batch_size=None, num_cpus=READ_TASK_CPUS
        )
        with warnings.catch_warnings():
            # Ray 2.60 names extra actor options (restarts) deprecated without a replacement yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(
                EmbedActor,
                fn_constructor_kwargs={"settings": self.settings},
                batch_size=self._embed_batch(),
                compute=ray.data.ActorPoolStrategy(size=plan.workers),
                num_cpus=plan.cpus_per_worker,
                num_gpus=plan.gpus_per_worker,
                max_restarts=self.settings.ray_worker_restarts,
                max_task_retries=-1,
            )
        batches = iter(
            dataset.iter_batches(
                batch_size=self.settings.index_chunk_items, batch_format="numpy", prefetch_batches=1
            )
        )
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (ray.exceptions.RayError, ray.data.exceptions.SystemException) as exc:
                raise self._workers_failed(ray, exc) from None
            yield [self._inspection(part, known, batch, row) for row in range(len(batch["index"]))]

    def _workers_failed(self, ray: Any, exc: Exception) -> BlipsearchError:
        """Ray's message is a traceback from its executor: the user gets a sentence, DEBUG the traceback."""
        log.warning("ray workers failed", extra={"error": type(exc).__name__})
        log.debug("ray workers failed", exc_info=exc)
        if isinstance(exc, ray.exceptions.RayActorError):
            restarts = self.settings.ray_worker_restarts
            allowed = f"{restarts} restart" + ("" if restarts == 1 else "s")
            what = f"an embedding actor died {restarts + 1} times (ray_worker_restarts allows {allowed})"
        else:
            what = f"a task failed ({type(exc).__name__})"
        return BlipsearchError(f"The Ray workers failed: {what}; committed work is kept, re-run to resume.")

    def _embed_batch(self) -> int:
        return max(8, self.settings.image_batch_size or 16)

    def _inspection(
        self, part: list[SourceRecord], known: dict[str, Item], batch: dict[str, np.ndarray], row: int
    ) -> Inspection:
        record = part[int(batch["index"][row])]
        vector_bytes = batch["vector"][row]
        text_vectors: dict[str, np.ndarray] = pickle.loads(batch["texts"][row])
        return Inspection(
            record=record,
            existing=known.get(record.source),
            action=Action(str(batch["action"][row])),
            facts=pickle.loads(batch["facts"][row]),
            error=str(batch["error"][row]) or None,
            vector=np.frombuffer(vector_bytes, dtype=np.float32).copy() if len(vector_bytes) else None,
            text_vectors=text_vectors or None,
        )
