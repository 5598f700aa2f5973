"""Hostile requests against the real server over loopback, on SQLite and PostgreSQL (issue 26).

Each class of request the issue reproduced is replayed here: reads that used to write captions,
NUL bytes that PostgreSQL refused with a 500 while SQLite stored them, bodies spooled to disk
before the size check, pixel bombs decoded in full, missing security headers, errors that leaked
server messages or dropped the connection under the client.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image

from blipsearch.indexer.pipeline import Indexer
from blipsearch.models.retrieval import RetrievalModel
from blipsearch.settings import Settings
from blipsearch.storage.catalog import Catalog

from imagesets import write_valid_images
from live_server import serving

KEY = "security-key"
UPLOAD_LIMIT = 1_000_000


@pytest.fixture
def shop(
    database_url: str,
    tmp_path: Path,
    indexer_settings: Callable[..., Settings],
    retrieval: RetrievalModel,
) -> Settings:
    """Four indexed pictures without captions; the server takes writes with KEY."""
    settings = indexer_settings(database_url, api_key=KEY, max_image_bytes=UPLOAD_LIMIT)
    write_valid_images(tmp_path / "photos", 4, seed=11)
    Indexer(settings, model=retrieval).run(tmp_path / "photos")
    return settings


@pytest.fixture
def client(shop: Settings, api_server: Callable[..., str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server(shop), timeout=120) as session:
        yield session


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == status, body
    if code is not None:
        assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text and "/tmp" not in response.text and "/home" not in response.text
    return body["error"]


def _catalog_state(settings: Settings) -> tuple[int, list[str | None]]:
    catalog = Catalog.open(settings)
    try:
        items = catalog.items_by_ids(list(range(1, 50)))
        return catalog.last_change_id(), [item.caption for item in items]
    finally:
        catalog.close()


def _png(size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


# --- reads never write --------------------------------------------------------------------------


def test_unauthenticated_caption_requests_write_nothing(client: httpx.Client, shop: Settings) -> None:
    before = _catalog_state(shop)
    assert before[0] > 0 and before[1] and not any(before[1]), "the shop starts without captions"
    for path, params in (
        ("/v1/search", {"q": "a red picture", "caption": "true", "k": 4}),
        ("/v1/search", {"q": "a red picture", "caption": "generate", "k": 4, "mode": "keyword"}),
        ("/v1/items/1/similar", {"caption": "true"}),
        ("/v1/items/1/texts", {"caption": "true"}),
    ):
        response = client.get(path, params=params)
        assert response.status_code in (200, 400, 422), response.text
    assert _catalog_state(shop) == before, "a read changed the catalog"

    _error(client.post("/v1/items/1/caption"), 401, "unauthorized")
    assert _catalog_state(shop) == before

    made = client.post("/v1/items/1/caption", headers={"X-API-Key": KEY})
    assert made.status_code == 200, made.text
    assert made.json()["generated"] and made.json()["caption"]
    after = _catalog_state(shop)
    assert after[0] > before[0] and after[1][0] == made.json()["caption"]
    hit = client.get("/v1/items/1").json()
    assert hit["caption"] == made.json()["caption"], "the stored caption is what reads show"
    again = client.post("/v1/items/1/caption", headers={"X-API-Key": KEY}).json()
    assert again == {**made.json(), "generated": False}
    assert _catalog_state(shop) == after


# --- NUL bytes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/search", {"params": {"q": "red\x00bag", "mode": "keyword"}}),
        ("GET", "/v1/search", {"params": {"q": "red\x00bag", "mode": "hybrid"}}),
        ("GET", "/v1/search", {"params": {"q": "red", "filter": "brand=ac\x00me"}}),
        ("GET", "/v1/search", {"params": {"q": "red", "filter": "attributes.co\x00l=red"}}),
        ("GET", "/v1/search", {"params": {"q": "red", "filter": "tags in red,b\x00lue"}}),
        ("GET", "/v1/items/1/similar", {"params": {"filter": "category=sh\x00oes"}}),
        ("PATCH", "/v1/items/1", {"json": {"title": "a\x00b"}}),
        ("PATCH", "/v1/items/1", {"json": {"tags": ["ok", "b\x00ad"]}}),
        ("PATCH", "/v1/items/1", {"json": {"attributes": {"colour": "re\x00d"}}}),
        ("PATCH", "/v1/items/1", {"json": {"attributes": {"col\x00our": "red"}}}),
        ("PATCH", "/v1/items/1", {"json": {"sku": "SKU-\x001"}}),
    ],
)
def test_nul_bytes_are_the_same_400_on_every_catalog(
    client: httpx.Client, shop: Settings, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    before = _catalog_state(shop)
    response = client.request(method, path, headers={"X-API-Key": KEY}, **kwargs)
    assert "NUL" in _error(response, 400, "invalid_input")["message"]
    assert _catalog_state(shop) == before


def test_nul_bytes_in_an_upload_form_are_refused(client: httpx.Client, shop: Settings) -> None:
    before = _catalog_state(shop)
    response = client.post(
        "/v1/items",
        headers={"X-API-Key": KEY},
        files={"file": ("new.png", _png((30, 30)), "image/png")},
        data={"title": "new\x00item", "brand": "acme"},
    )
    _error(response, 400, "invalid_input")
    assert _catalog_state(shop) == before


# --- request sizes --------------------------------------------------------------------------------

_HUGE = 500 * 1024 * 1024


def _raw_request(base_url: str, head: str) -> socket.socket:
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    assert port is not None
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed without answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("path", ["/v1/search/image", "/v1/search/texts", "/v1/items", "/v1/items/1/ask"])
def test_a_declared_oversized_body_is_refused_before_it_is_read(client: httpx.Client, path: str) -> None:
    """Only the head is sent: the answer must come without the server waiting for 500 MB."""
    sock = _raw_request(
        str(client.base_url),
        f"POST {path} HTTP/1.1\r\nHost: test\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {_HUGE}\r\n\r\n",
    )
    with sock:
        status, headers, body = _read_response(sock)
    assert status == 413 and headers.get("connection") == "close"
    assert json.loads(body)["error"]["code"] == "too_large"


class _TempUse:
    """Peak bytes of temporary files the server process (this one) holds open in `directory`.

    Spooled uploads are unlinked at once, so the directory listing shows nothing: the process's
    open file descriptors are what hold the disk.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _current(self) -> int:
        total = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory):
                    total += os.fstat(int(fd)).st_size
            except OSError:
                continue
        return total

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._current())
            time.sleep(0.005)

    def __enter__(self) -> _TempUse:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._current())


def test_a_streamed_oversized_upload_is_cut_off_without_filling_the_disk(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 MB in chunked encoding (no Content-Length), produced as it is sent."""
    spool = tmp_path / "server-tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the server spools uploads
    sock = _raw_request(
        str(client.base_url),
        "POST /v1/search/image HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n",
    )
    preamble = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    piece = b"\x89" * (1024 * 1024)
    sent = 0
    status: int | None = None
    with sock, _TempUse(spool) as use:
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(preamble), preamble))
            while sent < _HUGE:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: the rest is never sent
        try:
            status = _read_response(sock)[0]
        except (OSError, AssertionError):
            status = None  # the answer was lost to the reset; the disk use below is what counts
    limit = UPLOAD_LIMIT + 256 * 1024
    print(f"streamed 500 MB: {sent / 2**20:.0f} MiB sent, peak temp disk {use.peak / 2**20:.2f} MiB")
    assert use.peak < 2 * limit, f"the server spooled {use.peak} bytes"
    assert sent < _HUGE, "the server read the whole body"
    assert status in (413, None)


def test_a_large_json_body_is_refused(client: httpx.Client) -> None:
    body = json.dumps({"question": "x" * (2 * 1024 * 1024)})
    response = client.post("/v1/items/1/ask", content=body, headers={"Content-Type": "application/json"})
    _error(response, 413, "too_large")


# --- pixel budget ---------------------------------------------------------------------------------


def _png_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of flat black, compressed row by row so it is never whole in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _PeakRss:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_a_png_pixel_bomb_is_refused_before_decoding(shop: Settings, api_server: Callable[..., str]) -> None:
    """7999x7999 fits the default file pixel limit (64 Mpx) in a 190 KB PNG: only the query budget
    (default 16 Mpx) stops it, before a byte of it is decoded."""
    default_pixels = Settings.model_fields["max_image_pixels"].default
    settings = shop.model_copy(update={"max_image_pixels": default_pixels})
    bomb = _png_bomb(7999, 7999)
    assert len(bomb) < settings.max_image_bytes and settings.max_image_pixels >= 7999 * 7999
    with httpx.Client(base_url=api_server(settings), timeout=300) as session, _PeakRss() as rss:
        for path in ("/v1/search/image", "/v1/search/texts"):
            response = session.post(path, files={"file": ("bomb.png", bomb, "image/png")})
            assert "pixel" in _error(response, 413, "too_large")["message"]
    # Decoding it costs ~850 MB (192 MB of RGB and its copies); the header alone costs nothing.
    assert rss.growth < 100 * 1024 * 1024, f"RSS grew by {rss.growth / 2**20:.0f} MiB"
    print(f"pixel bomb: peak RSS growth {rss.growth / 2**20:.1f} MiB")


def test_a_large_jpeg_query_is_decoded_reduced(shop: Settings, api_server: Callable[..., str]) -> None:
    """JPEG decodes at 1/8 scale, so a photo over the query budget still works; a PNG does not."""
    settings = shop.model_copy(update={"max_query_pixels": 1_000_000, "max_image_bytes": 5_000_000})
    with httpx.Client(base_url=api_server(settings), timeout=120) as session:
        jpeg = session.post("/v1/search/image", files={"file": ("big.jpg", _png((3000, 2000), "JPEG"))})
        assert jpeg.status_code == 200, jpeg.text
        png = session.post("/v1/search/image", files={"file": ("big.png", _png((3000, 2000)))})
        _error(png, 413, "too_large")


# --- headers and honest errors --------------------------------------------------------------------


def test_security_headers_on_every_kind_of_response(client: httpx.Client) -> None:
    responses = {
        "ui": client.get("/"),
        "script": client.get("/static/app.js"),
        "api": client.get("/v1/search", params={"q": "red"}),
        "not found": client.get("/v1/nothing-here"),
        "invalid": client.get("/v1/search", params={"q": "red", "k": 0}),
        "too large": client.post("/v1/items/1/ask", content=b"{" * 2_000_000),
        "openapi": client.get("/openapi.json"),
        "docs": client.get("/docs"),
    }
    for name, response in responses.items():
        headers = response.headers
        policy = headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, name
        assert headers.get("x-frame-options") == "DENY", name
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "no-referrer", name
    assert "'unsafe-inline'" not in responses["ui"].headers["content-security-policy"]
    page = responses["ui"].text
    assert "<style" not in page and not re.search(r"<[^>]*\s(style|on[a-z]+)\s*=", page), "inline style"
    assert all("src=" in tag for tag in page.split("<script")[1:]), "the UI has no inline script"


def test_405_names_every_allowed_method(client: httpx.Client) -> None:
    response = client.put("/v1/items/1")
    _error(response, 405, "method_not_allowed")
    assert {part.strip() for part in response.headers["allow"].split(",")} == {"GET", "PATCH", "DELETE"}
    assert client.delete("/v1/search").headers["allow"] == "GET"


def test_a_long_query_is_answered_in_the_error_shape(client: httpx.Client) -> None:
    """Over the HTTP parser's default limit; httpx refuses to send it, so a raw request does."""
    sock = _raw_request(str(client.base_url), f"GET /v1/search?q={'a' * 100_000} HTTP/1.1\r\nHost: t\r\n\r\n")
    with sock:
        status, headers, body = _read_response(sock)
    assert status == 400 and headers["content-type"] == "application/json", body
    assert json.loads(body)["error"]["code"] == "query_too_long"


def test_server_failures_answer_generically_without_their_message(
    shop: Settings, tmp_path: Path, api_server: Callable[..., str]
) -> None:
    """A captioner that cannot load raised a ModelLoadError whose message names its path: it was
    answered 400 invalid_input with that message."""
    missing = tmp_path / "no-such-captioner"
    settings = shop.model_copy(update={"caption_model": str(missing)})
    with httpx.Client(base_url=api_server(settings), timeout=120) as session:
        response = session.post("/v1/items/1/caption", headers={"X-API-Key": KEY})
        error = _error(response, 503, "model_unavailable")
        assert str(missing) not in response.text and "request " in error["message"]
        assert response.headers.get("retry-after")


def test_after_a_500_the_next_pooled_request_succeeds(shop: Settings) -> None:
    """An unexpected exception in a route: the answer says `Connection: close`, so a client's
    pool opens a new connection instead of reusing one the server is about to drop."""
    from blipsearch.api.app import create_app

    app = create_app(shop)

    @app.get("/fault")
    def fault() -> None:
        raise RuntimeError("/secret/path/of/the/server")

    with serving(app, log_level="critical") as base, httpx.Client(base_url=base, timeout=60) as session:
        for _ in range(5):
            failed = session.get("/fault")
            error = _error(failed, 500, "internal")
            assert "secret" not in failed.text and "request " in error["message"]
            assert failed.headers.get("connection") == "close"
            assert session.get("/healthz").status_code == 200
