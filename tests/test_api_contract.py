"""The OpenAPI document tells the truth: schemathesis against the real server over loopback.

Every operation is exercised with positive and negative data under every response check
schemathesis has (the CLI's `--checks all`), with the API key sent so writes run too. The run is
bounded (a fixed number of examples per operation and mode, a fixed seed, no shrinking), so it
takes a few minutes at most on two cores and gives the same requests every time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from blipsearch.indexer.pipeline import Indexer
from hypothesis import HealthCheck, Phase, given, seed
from imagesets import write_valid_images

from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import CHECKS, is_check_class, load_all_checks  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

KEY = "contract-key"
EXAMPLES = 12
"""Per operation and mode: ~24 operations x 2 modes x 12 is about 600 requests."""


def _all_checks() -> list[Any]:
    load_all_checks()
    return [check for check in CHECKS.get_all() if not is_check_class(check)]


def test_every_operation_matches_the_openapi_document(
    tmp_path: Path,
    indexer_settings: Callable[..., Settings],
    retrieval: RetrievalModel,
    api_server: Callable[..., str],
) -> None:
    settings = indexer_settings(None, api_key=KEY, max_image_bytes=2_000_000, inference_queue=64, max_k=20)
    write_valid_images(tmp_path / "photos", 4, seed=5)
    Indexer(settings, model=retrieval).run(tmp_path / "photos")
    base_url = api_server(settings)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checks = _all_checks()
    assert len(checks) >= 10, [check.__name__ for check in checks]

    requests = 0
    failures: list[str] = []
    with httpx.Client(timeout=120):
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)

                @seed(2026)
                @settings(
                    max_examples=EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def exercise(case: Any) -> None:
                    nonlocal requests
                    requests += 1
                    case.call_and_validate(
                        base_url=base_url, headers={"X-API-Key": KEY}, checks=checks, timeout=120
                    )

                try:
                    exercise()
                except Exception as exc:  # a failed check: collect them all, then report
                    failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    print(f"schemathesis: {requests} requests, {len(failures)} failing operations")
    assert requests > 200
    assert not failures, "\n\n".join(failures)
