"""The OpenAPI document tells the truth: schemathesis against the real server over loopback.

Every operation is exercised with positive and negative data under every response check
schemathesis has (the CLI's `--checks all`), with the API key sent so writes run too. The run is
bounded (a fixed number of examples per operation and mode, a fixed seed, no shrinking), so it
takes a few minutes at most on two cores and gives the same requests every time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as run_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings

from imagesets import write_valid_images

KEY = "contract-key"
EXAMPLES = 30
"""Per operation and mode: about 1,000 requests in all (fewer where an operation has few inputs)."""
CONFIG = {
    "checks": {
        # A schema cannot say "bytes that decode as an image", "a filter in the filter grammar" or
        # "a query of more than blanks": input that fits the schema may still be refused as 400
        # (or 413 past the pixel budget), and those statuses are declared on the routes.
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "413", "429", "5xx"]
        }
    }
}


_UNFRAMABLE = re.compile(r'[^\x20-\x7e]|["\\]')


def _framable(case: Any) -> bool:
    """Multipart form field names travel in a quoted header parameter: a name holding a quote, a
    control character or (unencoded) non-ASCII text cannot be framed (RFC 7578), so the body the
    server receives is not the one generated; nor can a form field be null (it is sent as the
    text "null"). Such cases test the encoder, not the API."""
    body = getattr(case, "body", None)
    if "multipart" not in str(getattr(case, "media_type", "")) or not isinstance(body, dict):
        return True
    return not any(_UNFRAMABLE.search(str(name)) or value is None for name, value in body.items())


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
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG)
    )
    checks = _all_checks()
    assert len(checks) >= 10, [check.__name__ for check in checks]

    requests = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode).filter(_framable)

            @seed(2026)
            @run_settings(
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
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong
            except BaseException as exc:  # a failed check (a group): collect them all, then report
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    print(f"schemathesis: {requests} requests, {len(failures)} failing operations")
    assert requests > 200
    assert not failures, "\n\n".join(failures)
