"""Remote image fetching against a real loopback HTTP server whose routes the tests control.

Host names are mapped to addresses by an injected resolver (no DNS), waits go to an injected sleep
that advances an injected clock, and only the timeout tests spend real time (fractions of a second).
"""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fsspec
import pytest

from blipsearch.errors import ConfigError, InvalidInputError, TooLargeError
from blipsearch.remote_fetch import (
    BACKOFF_CAP_SECONDS,
    RemoteFetcher,
    canonical_url,
    follow_redirect,
)
from blipsearch.settings import Settings, load_settings

PAYLOAD = bytes(range(256)) * 40
LOOPBACK = ["127.0.0.1/32"]


@dataclass
class Seen:
    path: str
    host: str
    user_agent: str
    client_port: int


@dataclass
class Server:
    """The loopback server: `routes` answer paths, `seen` records every request that arrived."""

    httpd: ThreadingHTTPServer
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    stream_outcome: list[tuple[int, bool]] = field(default_factory=list)
    stream_done: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.seen]


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def sequence(*steps: Callable[[BaseHTTPRequestHandler], None]) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route answering its n-th request with the n-th step (the last one repeats)."""
    calls = iter(range(10_000))

    def route(handler: BaseHTTPRequestHandler) -> None:
        steps[min(next(calls), len(steps) - 1)](handler)

    return route


def start_server(tls: ssl.SSLContext | None = None) -> Server:
    box: list[Server] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state = box[0]
            state.seen.append(
                Seen(self.path, self.headers["Host"], self.headers["User-Agent"], self.client_address[1])
            )
            route = state.routes.get(self.path.split("?")[0])
            try:
                if route is None:
                    reply(self, 404, b"no such image")
                else:
                    route(self)
            except OSError:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state = Server(httpd)
    box.append(state)
    state.routes["/a.png"] = lambda h: reply(h, 200, PAYLOAD, Content_Type="image/png")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return state


def stop_server(state: Server) -> None:
    state.release.set()
    state.httpd.shutdown()
    state.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    state = start_server()
    yield state
    stop_server(state)


class FakeTime:
    """The fetcher's clock and sleep: a wait is recorded and moves the clock, and takes no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class Resolver:
    """Names to addresses; a name with several answers gives them in turn (the last one repeats)."""

    def __init__(self, **answers: list[str] | list[list[str]]) -> None:
        self.answers = {name.replace("_", "."): value for name, value in answers.items()}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.answers[host]
        if answer and isinstance(answer[0], list):
            turns = [a for a in answer if isinstance(a, list)]
            return turns[min(len(self.calls) - 1, len(turns) - 1)]
        return [a for a in answer if isinstance(a, str)]


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "remote_allow_networks": LOOPBACK,
        "remote_protocols": ["http", "https", "memory"],
        "remote_backoff_seconds": 0.1,
    }
    values.update(overrides)
    return Settings(**values)


def fetcher_for(
    tmp_path: Path, resolver: Resolver | None = None, fake: FakeTime | None = None, **overrides: object
) -> RemoteFetcher:
    fake = fake or FakeTime()
    return RemoteFetcher(
        settings_for(tmp_path, **overrides), sleep=fake.sleep, clock=fake.clock, resolve=resolver
    )


# --- fetching and the SSRF guard -------------------------------------------------------------------


def test_fetches_the_served_bytes_from_the_checked_address_with_the_original_host(
    server: Server, tmp_path: Path
) -> None:
    resolver = Resolver(images_example=["127.0.0.1"])
    with fetcher_for(tmp_path, resolver) as fetcher:
        data = fetcher.fetch(server.url("/a.png", host="Images.Example"), max_bytes=len(PAYLOAD))
    assert data == PAYLOAD
    assert resolver.calls == [("images.example", server.port)]
    assert [(s.path, s.host) for s in server.seen] == [("/a.png", f"images.example:{server.port}")]
    assert server.seen[0].user_agent.startswith("blipsearch-indexer/")


def test_one_fetcher_reuses_its_connection(server: Server, tmp_path: Path) -> None:
    with fetcher_for(tmp_path) as fetcher:
        for _ in range(3):
            assert fetcher.fetch(server.url("/a.png"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert len(server.seen) == 3
    assert len({s.client_port for s in server.seen}) == 1


def test_loopback_is_refused_without_the_allowlist_and_nothing_is_sent(
    server: Server, tmp_path: Path
) -> None:
    with (
        fetcher_for(tmp_path, remote_allow_networks=[]) as fetcher,
        pytest.raises(InvalidInputError, match="refused: the address is private, loopback"),
    ):
        fetcher.fetch(server.url("/a.png"), max_bytes=len(PAYLOAD))
    resolver = Resolver(images_example=["127.0.0.1"])
    with (
        fetcher_for(tmp_path, resolver, remote_allow_networks=[]) as fetcher,
        pytest.raises(InvalidInputError, match="refused: the host resolves to a private"),
    ):
        fetcher.fetch(server.url("/a.png", host="images.example"), max_bytes=len(PAYLOAD))
    assert server.seen == []


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.2",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "240.0.0.1",
        "fe80::1",
        "fd12:3456::1",
        "fec0::1",
    ],
)
def test_internal_addresses_are_refused(server: Server, tmp_path: Path, address: str) -> None:
    resolver = Resolver(evil_example=[address])
    with fetcher_for(tmp_path, resolver) as fetcher, pytest.raises(InvalidInputError) as caught:
        fetcher.fetch(server.url("/a.png", host="evil.example"), max_bytes=len(PAYLOAD))
    message = str(caught.value)
    assert "refused: the host resolves to a private, loopback or link-local address" in message
    assert address not in message.replace("evil.example", "")
    assert "Traceback" not in message
    assert server.seen == []


def test_a_literal_metadata_address_is_refused_without_resolving(tmp_path: Path) -> None:
    resolver = Resolver()
    with (
        fetcher_for(tmp_path, resolver) as fetcher,
        pytest.raises(InvalidInputError, match="refused"),
    ):
        fetcher.fetch("http://169.254.169.254/latest/meta-data/", max_bytes=100)
        with pytest.raises(InvalidInputError, match="refused"):
            fetcher.fetch("http://[::ffff:127.0.0.1]:1/x", max_bytes=100)
    assert resolver.calls == []


def test_a_name_with_one_public_and_one_private_address_is_refused(server: Server, tmp_path: Path) -> None:
    resolver = Resolver(mixed_example=["93.184.216.34", "10.0.0.5"])
    with fetcher_for(tmp_path, resolver) as fetcher, pytest.raises(InvalidInputError, match="refused"):
        fetcher.fetch(server.url("/a.png", host="mixed.example"), max_bytes=len(PAYLOAD))
    assert server.seen == []


def test_the_allowlist_admits_its_network_only(server: Server, tmp_path: Path) -> None:
    resolver = Resolver(other_example=["127.0.0.2"])
    with fetcher_for(tmp_path, resolver) as fetcher, pytest.raises(InvalidInputError, match="refused"):
        fetcher.fetch(server.url("/a.png", host="other.example"), max_bytes=len(PAYLOAD))


def test_dns_rebinding_cannot_move_the_connection(server: Server, tmp_path: Path) -> None:
    """The first answer is checked and connected to; a later, different answer is never asked for."""
    resolver = Resolver(rebind_example=[["127.0.0.1"], ["93.184.216.34"], ["169.254.169.254"]])
    with fetcher_for(tmp_path, resolver) as fetcher:
        assert fetcher.fetch(server.url("/a.png", host="rebind.example"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert len(resolver.calls) == 1
    assert [(s.path, s.host) for s in server.seen] == [("/a.png", f"rebind.example:{server.port}")]


def test_an_unresolvable_name_is_refused_clearly(tmp_path: Path) -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    fetcher = RemoteFetcher(settings_for(tmp_path), resolve=fail)
    with fetcher, pytest.raises(InvalidInputError, match="does not resolve"):
        fetcher.fetch("http://nowhere.example/a.png", max_bytes=100)


def test_https_goes_to_the_checked_address_with_the_original_server_name(tmp_path: Path) -> None:
    resolver = Resolver(cdn_example=["93.184.216.34"])
    with fetcher_for(tmp_path, resolver) as fetcher:
        target = fetcher._vet("https://cdn.example/img/a.png?v=2")
        with fetcher._lease(target) as client:
            request = fetcher._request(client, target, 1.0)
    assert str(request.url) == "https://93.184.216.34/img/a.png?v=2"
    assert request.headers["Host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"


@dataclass
class TlsServer:
    server: Server
    client_context: ssl.SSLContext
    server_names: list[str | None]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """A loopback HTTPS server whose self-signed certificate names only cdn.example."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=cdn.example",
         "-addext", "subjectAltName=DNS:cdn.example"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    def record_name(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        names.append(name)

    server_context.sni_callback = record_name
    state = start_server(server_context)
    yield TlsServer(state, ssl.create_default_context(cafile=str(cert)), names)
    stop_server(state)


def test_https_is_verified_against_the_original_name_at_the_checked_address(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    resolver = Resolver(cdn_example=["127.0.0.1"])
    port = tls_server.server.port
    fetcher = RemoteFetcher(settings_for(tmp_path), resolve=resolver, verify=tls_server.client_context)
    with fetcher:
        assert fetcher.fetch(f"https://CDN.example:{port}/a.png", max_bytes=len(PAYLOAD)) == PAYLOAD
    assert tls_server.server_names == ["cdn.example"]
    assert [(s.path, s.host) for s in tls_server.server.seen] == [("/a.png", f"cdn.example:{port}")]


def test_a_certificate_for_another_name_is_refused_without_retrying(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    resolver = Resolver(other_example=["127.0.0.1"])
    fake = FakeTime()
    fetcher = RemoteFetcher(
        settings_for(tmp_path),
        resolve=resolver,
        sleep=fake.sleep,
        clock=fake.clock,
        verify=tls_server.client_context,
    )
    with fetcher, pytest.raises(InvalidInputError, match="TLS certificate was not accepted"):
        fetcher.fetch(f"https://other.example:{tls_server.server.port}/a.png", max_bytes=len(PAYLOAD))
    assert fake.waits == []
    assert tls_server.server.seen == []


# --- timeouts, deadline and retries ----------------------------------------------------------------


def slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(0.5)
    reply(handler, 200, PAYLOAD)


def test_a_timeout_is_retried_then_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/slow"] = slow
    fake = FakeTime()
    with (
        fetcher_for(tmp_path, fake=fake, remote_timeout_seconds=0.2, remote_retries=1) as fetcher,
        pytest.raises(InvalidInputError, match="timed out after 2 attempts"),
    ):
        fetcher.fetch(server.url("/slow"), max_bytes=len(PAYLOAD))
    assert server.paths() == ["/slow", "/slow"]
    assert len(fake.waits) == 1


def test_retries_stop_before_a_wait_would_pass_the_deadline(server: Server, tmp_path: Path) -> None:
    server.routes["/busy"] = lambda h: reply(h, 503)
    fake = FakeTime()
    overrides: dict[str, Any] = {
        "remote_retries": 10,
        "remote_backoff_seconds": 1.0,
        "remote_deadline_seconds": 5.0,
    }
    with (
        fetcher_for(tmp_path, fake=fake, **overrides) as fetcher,
        pytest.raises(InvalidInputError, match="HTTP 503 after") as caught,
    ):
        fetcher.fetch(server.url("/busy"), max_bytes=len(PAYLOAD))
    assert "5 s limit" in str(caught.value)
    assert sum(fake.waits) < 5.0
    assert len(server.seen) == len(fake.waits) + 1 < 11


def test_503_twice_then_200_backs_off_with_growing_waits(server: Server, tmp_path: Path) -> None:
    busy = lambda h: reply(h, 503)  # noqa: E731
    server.routes["/flaky"] = sequence(busy, busy, lambda h: reply(h, 200, PAYLOAD))
    fake = FakeTime()
    with fetcher_for(tmp_path, fake=fake, remote_backoff_seconds=0.5) as fetcher:
        assert fetcher.fetch(server.url("/flaky"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert server.paths() == ["/flaky"] * 3
    first, second = fake.waits
    assert 0.5 <= first <= 0.75
    assert 1.0 <= second <= 1.5


def test_retry_after_is_honoured_up_to_the_cap(server: Server, tmp_path: Path) -> None:
    ok = lambda h: reply(h, 200, PAYLOAD)  # noqa: E731
    server.routes["/later"] = sequence(lambda h: reply(h, 429, Retry_After="7"), ok)
    server.routes["/much-later"] = sequence(lambda h: reply(h, 503, Retry_After="86400"), ok)
    fake = FakeTime()
    with fetcher_for(tmp_path, fake=fake) as fetcher:
        assert fetcher.fetch(server.url("/later"), max_bytes=len(PAYLOAD)) == PAYLOAD
        assert fetcher.fetch(server.url("/much-later"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert fake.waits == [7.0, BACKOFF_CAP_SECONDS]


def test_404_fails_at_once(server: Server, tmp_path: Path) -> None:
    fake = FakeTime()
    with fetcher_for(tmp_path, fake=fake) as fetcher, pytest.raises(InvalidInputError) as caught:
        fetcher.fetch(server.url("/missing.png"), max_bytes=100)
    assert str(caught.value) == f"{server.url('/missing.png')} could not be fetched: HTTP 404."
    assert server.paths() == ["/missing.png"]
    assert fake.waits == []


def test_a_refused_connection_is_retried(tmp_path: Path) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    fake = FakeTime()
    with (
        fetcher_for(tmp_path, fake=fake, remote_retries=2) as fetcher,
        pytest.raises(InvalidInputError, match="could not connect after 3 attempts"),
    ):
        fetcher.fetch(f"http://127.0.0.1:{port}/a.png", max_bytes=100)
    assert len(fake.waits) == 2


# --- size ------------------------------------------------------------------------------------------


def test_a_declared_size_over_the_limit_is_refused_without_reading(server: Server, tmp_path: Path) -> None:
    def declared_huge(handler: BaseHTTPRequestHandler) -> None:
        """Promises 10 MB and sends nothing: a client that reads the body times out instead."""
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.flush()
        server.release.wait(2)
        handler.close_connection = True

    server.routes["/huge"] = declared_huge
    with (
        fetcher_for(tmp_path, remote_timeout_seconds=0.5) as fetcher,
        pytest.raises(TooLargeError) as caught,
    ):
        fetcher.fetch(server.url("/huge"), max_bytes=1024 * 1024)
    assert str(caught.value) == f"{server.url('/huge')} is over the 1 MB limit."
    assert server.paths() == ["/huge"]


def test_a_chunked_body_over_the_limit_is_cut_off(server: Server, tmp_path: Path) -> None:
    total = 32 * 1024 * 1024

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < total:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            server.stream_outcome.append((sent, False))
        else:
            server.stream_outcome.append((sent, True))
        finally:
            server.stream_done.set()
            handler.close_connection = True

    server.routes["/endless"] = endless
    with (
        fetcher_for(tmp_path) as fetcher,
        pytest.raises(TooLargeError, match="over the 100000-byte limit"),
    ):
        fetcher.fetch(server.url("/endless"), max_bytes=100_000)
    assert server.stream_done.wait(5)
    sent, finished = server.stream_outcome[0]
    assert not finished
    assert sent < total


def test_a_body_of_exactly_the_limit_is_accepted(server: Server, tmp_path: Path) -> None:
    with fetcher_for(tmp_path) as fetcher:
        assert fetcher.fetch(server.url("/a.png"), max_bytes=len(PAYLOAD)) == PAYLOAD
        with pytest.raises(TooLargeError):
            fetcher.fetch(server.url("/a.png"), max_bytes=len(PAYLOAD) - 1)


# --- redirects -------------------------------------------------------------------------------------


def add_redirect_chain(server: Server, hops: int) -> None:
    for n in range(1, hops + 1):
        target = f"/hop/{n - 1}" if n > 1 else "/a.png"
        server.routes[f"/hop/{n}"] = functools.partial(reply, status=302, Location=target)


def test_redirects_are_followed_up_to_the_limit(server: Server, tmp_path: Path) -> None:
    add_redirect_chain(server, 4)
    with fetcher_for(tmp_path, remote_max_redirects=3) as fetcher:
        assert fetcher.fetch(server.url("/hop/3"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert server.paths() == ["/hop/3", "/hop/2", "/hop/1", "/a.png"]


def test_one_redirect_over_the_limit_is_refused(server: Server, tmp_path: Path) -> None:
    add_redirect_chain(server, 4)
    with (
        fetcher_for(tmp_path, remote_max_redirects=3) as fetcher,
        pytest.raises(InvalidInputError, match="too many redirects"),
    ):
        fetcher.fetch(server.url("/hop/4"), max_bytes=len(PAYLOAD))
    assert server.paths() == ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]


def test_a_redirect_to_an_internal_address_is_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/meta"] = lambda h: reply(h, 302, Location="http://169.254.169.254/latest/meta-data/")
    server.routes["/inside"] = lambda h: reply(h, 301, Location="http://db.internal:5432/")
    resolver = Resolver(db_internal=["10.1.2.3"])
    with fetcher_for(tmp_path, resolver) as fetcher:
        for path in ("/meta", "/inside"):
            with pytest.raises(InvalidInputError, match="refused"):
                fetcher.fetch(server.url(path), max_bytes=len(PAYLOAD))
    assert server.paths() == ["/meta", "/inside"]


def test_a_relative_location_is_resolved_against_the_current_url(server: Server, tmp_path: Path) -> None:
    server.routes["/old/dir/image"] = lambda h: reply(h, 307, Location="../../a.png")
    with fetcher_for(tmp_path) as fetcher:
        assert fetcher.fetch(server.url("/old/dir/image"), max_bytes=len(PAYLOAD)) == PAYLOAD
    assert server.paths() == ["/old/dir/image", "/a.png"]


def test_follow_redirect_refuses_a_downgrade_and_other_schemes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert (
        follow_redirect("http://a.example/x", "https://B.example:443/y#f", settings) == "https://b.example/y"
    )
    assert follow_redirect("https://a.example/x/y", "z.png", settings) == "https://a.example/x/z.png"
    with pytest.raises(InvalidInputError, match="from https to plain http"):
        follow_redirect("https://a.example/x", "http://a.example/x", settings)
    for location in ("file:///etc/passwd", "memory://x/y", "gopher://a.example/"):
        with pytest.raises(InvalidInputError, match="refused a redirect"):
            follow_redirect("http://a.example/x", location, settings)


# --- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  HTTPS://Images.EXAMPLE.com:443/A.png#frag \n", "https://images.example.com/A.png"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/a?b=1&c=2", "http://example.com:8080/a?b=1&c=2"),
        ("https://[2001:DB8::1]:8443/x", "https://[2001:db8::1]:8443/x"),
        ("MEMORY://Bucket/Key.PNG#x", "memory://Bucket/Key.PNG"),
    ],
)
def test_canonical_url(tmp_path: Path, text: str, expected: str) -> None:
    assert canonical_url(text, settings_for(tmp_path)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("https://user:secret@example.com/a.png", "user name or password"),
        ("https://token@example.com/a.png", "user name or password"),
        ("https://example.com/a\nb.png", "control characters"),
        ("https://example.com/\x00", "control characters"),
        ("https://example.com/" + "a" * 2100, "2048"),
        ("ftp://example.com/a.png", "ftp:// protocol is not allowed"),
        ("s3://bucket/a.png", "s3:// protocol is not allowed"),
        ("http:///a.png", "names no host"),
        ("https://example.com:99999/a", "invalid port"),
        ("   ", "empty"),
        ("example.com/a.png", "not a URL"),
        ("http://exa mple.com/a.png", "not a valid URL"),
        ("http://[::1/a.png", "not a valid URL"),
    ],
)
def test_canonical_url_refusals(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason) as caught:
        canonical_url(text, settings_for(tmp_path))
    assert "secret" not in str(caught.value)


# --- fsspec ----------------------------------------------------------------------------------------


@pytest.fixture
def memory_store() -> Iterator[fsspec.AbstractFileSystem]:
    fs = fsspec.filesystem("memory")
    root = "/remote-fetch-tests"
    fs.mkdir(root)
    yield fs
    fs.rm(root, recursive=True)


def test_memory_url_fetch(memory_store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    memory_store.pipe_file("/remote-fetch-tests/a.png", PAYLOAD)
    with fetcher_for(tmp_path) as fetcher:
        assert fetcher.fetch("memory://remote-fetch-tests/a.png", max_bytes=len(PAYLOAD)) == PAYLOAD


def test_memory_url_not_found(memory_store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    fake = FakeTime()
    with (
        fetcher_for(tmp_path, fake=fake) as fetcher,
        pytest.raises(InvalidInputError, match="could not be fetched: not found"),
    ):
        fetcher.fetch("memory://remote-fetch-tests/none.png", max_bytes=100)
    assert fake.waits == []


def test_memory_url_over_the_limit(memory_store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    memory_store.pipe_file("/remote-fetch-tests/big.png", b"x" * 3 * 1024 * 1024)
    with fetcher_for(tmp_path) as fetcher, pytest.raises(TooLargeError, match="is over the 2 MB limit"):
        fetcher.fetch("memory://remote-fetch-tests/big.png", max_bytes=2 * 1024 * 1024)


def test_memory_is_refused_unless_allowed(memory_store: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    memory_store.pipe_file("/remote-fetch-tests/a.png", PAYLOAD)
    with (
        fetcher_for(tmp_path, remote_protocols=["http", "https"]) as fetcher,
        pytest.raises(InvalidInputError, match="memory:// protocol is not allowed"),
    ):
        fetcher.fetch("memory://remote-fetch-tests/a.png", max_bytes=len(PAYLOAD))


# --- settings --------------------------------------------------------------------------------------


def test_settings_validate_networks_and_protocols(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, remote_allow_networks=["10.0.0.0/8", "::1"], remote_protocols=[" HTTPS "]
    )
    assert settings.remote_allow_networks == ["10.0.0.0/8", "::1/128"]
    assert settings.remote_protocols == ["https"]
    with pytest.raises(ConfigError, match="not a network in CIDR form"):
        load_settings(data_dir=tmp_path, remote_allow_networks=["10.0.0.1/8"])
    with pytest.raises(ConfigError, match="not URL schemes"):
        load_settings(data_dir=tmp_path, remote_protocols=["s3:"])
