"""The FastAPI application: engine loaded once, routes under /v1, the web UI at /.

`create_app(settings)` builds everything at start-up (lifespan): the retrieval model, catalog and
live indexes through `SearchService`, the VQA model when configured, and the ingest-job runner.
Model work runs in worker threads behind `InferenceGate`; the event loop only does I/O.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from blipsearch import __version__
from blipsearch.api import captions, facets, items, search_routes
from blipsearch.api.admission import gate_for
from blipsearch.api.consistency import ConsistentReads
from blipsearch.api.contract import declare_error_responses
from blipsearch.api.deps import AppState
from blipsearch.api.docs_pages import FAVICON_PATH, install_docs_pages
from blipsearch.api.errors import ApiError, UnexpectedErrors, errors, install_error_handlers
from blipsearch.api.headers import SecurityHeaders
from blipsearch.api.limits import BodyLimit
from blipsearch.api.metrics import Metrics, install_metrics
from blipsearch.api.upkeep import ServerUpkeep
from blipsearch.api.workers import SINGLE_PROCESS, WorkerRole
from blipsearch.models.vqa import VisualQA
from blipsearch.search.service import SearchService
from blipsearch.settings import Settings
from blipsearch.storage.read_routing import CONSISTENCY_HEADER

log = logging.getLogger(__name__)


def web_directory() -> Path:
    """The static UI: installed as package data of `blipsearch.web`, or the checkout's web/."""
    try:
        return Path(str(importlib.resources.files("blipsearch.web")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "web"


def create_app(
    settings: Settings, *, service: SearchService | None = None, worker: WorkerRole = SINGLE_PROCESS
) -> FastAPI:
    """`worker`: which of `serve --workers N`'s processes this app serves in; only the upkeep
    worker cleans the image store, commits checkpoints and runs ingest jobs."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = service or SearchService.open(settings)
        engine.reranker.agreement = worker.rerank_depth
        if settings.rerank:
            engine.reranker.deployment_depth()  # calibrated before the first query, never during one
        vqa = VisualQA.load(settings.vqa_model, settings) if settings.vqa_model else None
        state = AppState(
            settings=settings,
            service=engine,
            gate=gate_for(settings, metrics),
            vqa=vqa,
            started=time.time(),
        )
        state.extras["metrics"] = metrics
        engine.work.observe(lambda kind, size: metrics.batch_items.labels(kind).observe(size))
        upkeep = ServerUpkeep(settings, engine, owner=worker.upkeep).start()
        state.jobs = _start_jobs(settings, engine) if worker.upkeep else None
        state.extras["worker"] = worker
        app.state.blip = state
        log.info(
            "api ready",
            extra={
                "items": len(engine.store.images),
                "model": engine.model.fingerprint,
                "worker": worker.index,
            },
        )
        try:
            yield
        finally:
            if state.jobs is not None:
                state.jobs.stop()
            upkeep.stop()
            if service is None:
                engine.close()

    app = FastAPI(
        title="blipsearch",
        version=__version__,
        summary="Cross-modal image search on BLIP: text to images, image to images, image to texts.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_metrics(app, metrics)
    app.add_middleware(ConsistentReads)
    app.add_middleware(BodyLimit, fastapi=app, max_upload_bytes=settings.max_image_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", CONSISTENCY_HEADER],
            expose_headers=[CONSISTENCY_HEADER],
        )
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries the headers
    app.include_router(search_routes.router)
    app.include_router(facets.router)
    app.include_router(items.router)
    app.include_router(captions.router)
    _include_jobs(app)
    _health_routes(app, metrics)
    declare_error_responses(app, keyed_reads=settings.api_keyed_reads)
    web = web_directory()
    if (web / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=web), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(web / "index.html", headers={"Cache-Control": "no-cache"})

        @app.get(FAVICON_PATH, include_in_schema=False)
        async def favicon() -> FileResponse:
            return FileResponse(web / "favicon.svg", media_type="image/svg+xml")

        install_docs_pages(app, static_path="/static")

    return app


def _start_jobs(settings: Settings, service: SearchService) -> Any:
    try:
        from blipsearch.indexer.jobs import JobRunner
    except ImportError:
        return None
    runner = JobRunner(settings, model=service.model)
    runner.start()
    return runner


def _include_jobs(app: FastAPI) -> None:
    try:
        from blipsearch.api import jobs
    except ImportError:
        return
    app.include_router(jobs.router)


def _health_routes(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Model loaded, index generation, item count, which worker answered",
        responses=errors(503),
    )
    async def readyz(request: Request) -> dict[str, Any]:
        state: AppState | None = getattr(request.app.state, "blip", None)
        if state is None:
            raise ApiError(503, "not_ready", "The engine is still loading.")
        service = state.service
        await anyio.to_thread.run_sync(service.refresh)
        decided = service.reranker.decided
        vectors = await anyio.to_thread.run_sync(service.store.state)
        return {
            "ready": True,
            "items": vectors["items"],
            "texts": vectors["texts"],
            "vector_store": vectors["backend"],
            "generation": vectors.get("generation", {}),
            "last_change_id": vectors.get("last_change_id"),
            "model": service.model.fingerprint,
            "vqa": state.vqa is not None,
            "rerank_depth": decided.depth if decided is not None else None,
            "rerank_depth_source": decided.source if decided is not None else None,
            "uptime_seconds": round(time.time() - state.started, 1),
            "worker": state.extras["worker"].describe(),
        }

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        state: AppState | None = getattr(request.app.state, "blip", None)
        if state is not None:
            metrics.vectors.labels("images").set(len(state.service.store.images))
            metrics.vectors.labels("texts").set(len(state.service.store.texts))
            for status, count in state.catalog.status_counts().items():
                metrics.items.labels(status).set(count)
        return metrics.render()
