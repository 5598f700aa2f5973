"""The interactive API docs and the favicon come from the server itself, so they work offline.

FastAPI's default /docs and /redoc load Swagger UI, ReDoc, Google Fonts and a favicon from CDNs;
here every URL in those pages must be the server's own, and each asset must be served. The browser
side (the pages really render, with no request elsewhere) is tests/test_web_docs.py.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest

from blipsearch.settings import Settings

ASSET_TYPES = {
    "/static/third-party/swagger-ui/swagger-ui-bundle.js": "text/javascript",
    "/static/third-party/swagger-ui/swagger-ui.css": "text/css",
    "/static/third-party/redoc/redoc.standalone.js": "text/javascript",
    "/static/third-party/redoc/logo-mini.svg": "image/svg+xml",
    "/favicon.ico": "image/svg+xml",
}


def docs_settings(data_dir: Path, tiny_checkpoints) -> Settings:  # type: ignore[no-untyped-def]
    """An empty catalog is enough: the docs describe the API, not the data."""
    return Settings(
        data_dir=data_dir,
        retrieval_model=str(tiny_checkpoints.retrieval),
        device="cpu",
        dtype="float32",
        offline=True,
    )


@pytest.fixture
def client(tmp_path: Path, tiny_checkpoints, api_server: Callable[..., str]) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    base = api_server(docs_settings(tmp_path / "data", tiny_checkpoints))
    with httpx.Client(base_url=base, timeout=120) as session:
        yield session


def _urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_reference_only_the_server_itself(client: httpx.Client, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = _urls(page.text)
    assert "/openapi.json" in urls and "/favicon.ico" in urls
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert "fonts.googleapis" not in page.text and "cdn." not in page.text
    for url in urls:
        assert client.get(url).status_code == 200, url
    policy = page.headers["content-security-policy"]
    assert "http" not in policy and "default-src 'self'" in policy


def test_redoc_page_allows_no_inline_script(client: httpx.Client) -> None:
    policy = client.get("/redoc").headers["content-security-policy"]
    assert "script-src 'self';" in policy + ";" and "worker-src 'self' blob:" in policy


def test_docs_assets_and_favicon_are_served_with_their_types(client: httpx.Client) -> None:
    for path, content_type in ASSET_TYPES.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] == content_type, path
        assert response.content
    assert "SwaggerUIBundle" in client.get("/static/third-party/swagger-ui/swagger-ui-bundle.js").text
    assert "cdn.redoc.ly" not in client.get("/static/third-party/redoc/redoc.standalone.js").text


def test_oauth2_redirect_page_is_served(client: httpx.Client) -> None:
    page = client.get("/docs/oauth2-redirect")
    assert page.status_code == 200 and "swaggerUIRedirectOauth2" in page.text


def _matches(path: PurePosixPath, pattern: str) -> bool:
    """setuptools' package-data globs: one `*` never crosses a `/`."""
    parts = PurePosixPath(pattern).parts
    return len(parts) == len(path.parts) and all(map(fnmatch.fnmatchcase, path.parts, parts))


def test_every_web_file_is_package_data_of_the_wheel() -> None:
    """An installed wheel must carry the vendored docs assets and their licences, not just a checkout."""
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["blipsearch.web"]
    web = root / "web"
    files = [PurePosixPath(path.relative_to(web).as_posix()) for path in web.rglob("*") if path.is_file()]
    assert any(path.parts[0] == "third-party" for path in files)
    missing = [str(path) for path in files if not any(_matches(path, pattern) for pattern in patterns)]
    assert not missing, missing
