"""Prometheus metrics: requests and latency per route, model time per stage, index size.

Each app gets its own registry, so several apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "blipsearch_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "blipsearch_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.stage = Histogram(
            "blipsearch_stage_seconds",
            "Time per query stage (encode, vector, keyword, rerank, fetch, filter)",
            ["stage"],
            registry=self.registry,
        )
        self.vectors = Gauge(
            "blipsearch_index_vectors", "Vectors in each live index", ["index"], registry=self.registry
        )
        self.items = Gauge("blipsearch_items", "Catalog items by status", ["status"], registry=self.registry)
        self.in_progress = Gauge(
            "blipsearch_admitted_requests",
            "Requests admitted to model work (running or waiting)",
            registry=self.registry,
        )
        self.shed = Counter(
            "blipsearch_rerank_shed",
            "Requests admitted with less than the full re-ranking depth (overload)",
            registry=self.registry,
        )
        self.refused = Counter(
            "blipsearch_overload_refused", "Requests refused with 503 overloaded", registry=self.registry
        )
        self.batch_items = Histogram(
            "blipsearch_batch_items",
            "Items per batched forward (texts, itm pairs, images, captions)",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )

    def observe_stages(self, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage.labels(stage).observe(seconds)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            metrics.requests.labels(request.method, template, str(status)).inc()
            metrics.latency.labels(request.method, template).observe(time.perf_counter() - started)
