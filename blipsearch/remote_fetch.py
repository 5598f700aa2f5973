"""Fetching the bytes of an image a manifest names by URL, without letting the URL reach inside.

A manifest is input from whoever wrote it, and the indexer runs next to the catalog database and
often inside a cloud network, so an `http://` URL is a request made on that writer's behalf (SSRF):
`http://169.254.169.254/...` would read cloud credentials, `http://localhost:5432` would probe the
database. Every HTTP hop therefore resolves its host here, refuses it if any address is private,
loopback, link-local, CGNAT, multicast or reserved (unless `remote_allow_networks` admits it), and
then connects to the very address it checked, sending the original name as Host header and TLS
server name. A second DNS answer (rebinding) is never asked for. Any port is allowed: the guard is
about whose machine is reached, and public servers do use odd ports.

Proxy variables are ignored (a proxy would resolve the name again), cookies are never kept, and
HTTPS connections are pooled per host name, because the pool is keyed by address and a connection
verified for one name must not carry a request for another.

fsspec URLs (s3://, gs://, ...) go to the store's own client; they are not guarded, since their
endpoint is the store's configuration and not the URL's host, and the deadline bounds their retries
but not one call inside fsspec.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import random
import re
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from blipsearch.errors import InvalidInputError, TooLargeError
from blipsearch.settings import Settings

Resolver = Callable[[str, int], list[str]]
_T = TypeVar("_T")

MAX_URL_CHARS = 2048
BACKOFF_CAP_SECONDS = 30.0
"""The longest wait between two attempts, Retry-After included: past that, the image is given up."""

_HTTP = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"[A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK_BYTES = 64 * 1024
_HTTPS_CLIENTS = 8
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_REFUSED = "the host resolves to a private, loopback or link-local address"


def canonical_url(text: str, settings: Settings) -> str:
    """The one spelling of a remote image's URL that the catalog keys it by.

    Spellings of one HTTP resource (upper-case host, explicit default port, a fragment) must not
    become two items. Only the scheme is lower-cased for fsspec URLs: their "host" is a bucket or a
    path component, which some stores (memory://, Azure) treat case-sensitively.
    """
    url = text.strip()
    if not url:
        raise InvalidInputError("An empty URL names no image.")
    if len(url) > MAX_URL_CHARS:
        raise InvalidInputError(
            f"A URL of {len(url)} characters is over the {MAX_URL_CHARS}-character limit."
        )
    if _CONTROL.search(url):
        raise InvalidInputError("A URL may not contain control characters (tabs, line breaks, ...).")
    match = _SCHEME.match(url)
    if match is None:
        raise InvalidInputError(f"{url} is not a URL (scheme://...).")
    scheme = match.group(1).lower()
    if scheme not in settings.remote_protocols:
        allowed = ", ".join(settings.remote_protocols) or "none"
        raise InvalidInputError(
            f"{url}: the {scheme}:// protocol is not allowed (remote_protocols: {allowed})."
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidInputError(f"{url} is not a valid URL.") from None
    if "@" in parts.netloc:
        raise InvalidInputError(
            f"{scheme}://... : a URL with a user name or password is refused; give the store credentials "
            "in its configuration instead."
        )
    if scheme not in _HTTP:
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidInputError(f"{url} names no host.")
    try:
        port = parts.port
    except ValueError:
        raise InvalidInputError(f"{url} has an invalid port.") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    canonical = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    try:
        raw_host = httpx.URL(canonical).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError):
        raw_host = ""
    if not (_HOST.fullmatch(raw_host) or ":" in host):
        raise InvalidInputError(f"{url} is not a valid URL.")
    return canonical


def follow_redirect(current: str, location: str, settings: Settings) -> str:
    """The canonical URL a redirect leads to; refused if it leaves HTTP or goes from https to http."""
    try:
        target = urljoin(current, location.strip())
        scheme = urlsplit(target).scheme.lower()
    except ValueError:
        raise InvalidInputError(f"{current}: refused a redirect to an invalid URL.") from None
    if scheme not in _HTTP:
        raise InvalidInputError(f"{current}: refused a redirect to a {scheme or 'relative'}:// URL.")
    if urlsplit(current).scheme == "https" and scheme == "http":
        raise InvalidInputError(f"{current}: refused a redirect from https to plain http.")
    return canonical_url(target, settings)


def forbidden_address(address: str, allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether connecting to this address could reach a machine the manifest's writer should not.

    The allowlist is matched against the address exactly as resolved: `127.0.0.1/32` does not admit
    `::ffff:127.0.0.1`, so an IPv4-mapped spelling can never widen what an operator allowed. Public
    hosts do not publish mapped addresses, so every one not on the allowlist is refused.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if any(ip in network for network in allow):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return True
    return _internal(ip)


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    ):
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _CGNAT
    return ip.is_site_local


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class _Target:
    """One HTTP hop: the canonical URL, and the checked address it is sent to."""

    url: str
    pinned: httpx.URL
    host_header: str
    server_name: str | None


@dataclass(frozen=True)
class _Redirect:
    location: str


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class RemoteFetcher:
    """Fetches remote images one after another, reusing connections; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        resolve: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._verify: ssl.SSLContext | bool = verify if verify is not None else True
        self._sleep = sleep
        self._resolve = resolve or _system_resolve
        self._clock = clock
        self._allow = [ipaddress.ip_network(text) for text in settings.remote_allow_networks]
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._https: OrderedDict[str, httpx.Client] = OrderedDict()
        self._busy: dict[int, int] = {}
        self._closed = False

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """The bytes at `url`, at most `max_bytes` of them; InvalidInputError says why not."""
        canonical = canonical_url(url, self._settings)
        deadline = self._clock() + self._settings.remote_deadline_seconds
        if urlsplit(canonical).scheme in _HTTP:
            return self._fetch_http(canonical, max_bytes, deadline)
        return self._fetch_fsspec(canonical, max_bytes, deadline)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients = list(self._https.values())
            if self._http is not None:
                clients.append(self._http)
            self._https.clear()
            self._http = None
        for client in clients:
            client.close()

    def __enter__(self) -> RemoteFetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _fetch_http(self, url: str, max_bytes: int, deadline: float) -> bytes:
        current = url
        for _hop in range(self._settings.remote_max_redirects + 1):
            target = self._vet(current)
            attempt = functools.partial(self._attempt, target, max_bytes, deadline=deadline)
            outcome = self._with_retries(current, attempt, deadline)
            if isinstance(outcome, bytes):
                return outcome
            current = follow_redirect(current, outcome.location, self._settings)
        raise InvalidInputError(
            f"{url} could not be fetched: too many redirects (over {self._settings.remote_max_redirects})."
        )

    def _vet(self, url: str) -> _Target:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = self._resolve(host, port)
            except (OSError, UnicodeError):
                addresses = []
            if not addresses:
                raise InvalidInputError(f"{url} could not be fetched: the host name does not resolve.")
        try:
            refused = any(forbidden_address(address, self._allow) for address in addresses)
        except ValueError:
            refused = True
        if refused:
            what = "the address is private, loopback or link-local" if literal is not None else _REFUSED
            raise InvalidInputError(f"{url} was refused: {what}.")
        return _Target(
            url=url,
            pinned=parsed.copy_with(host=addresses[0].split("%", 1)[0]),
            host_header=parsed.netloc.decode("ascii"),
            server_name=host if parsed.scheme == "https" and literal is None else None,
        )

    def _with_retries(self, url: str, attempt: Callable[[float], _T], deadline: float) -> _T:
        settings = self._settings
        attempts = 0
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise InvalidInputError(
                    f"{url} could not be fetched: the {settings.remote_deadline_seconds:g} s deadline passed."
                )
            attempts += 1
            try:
                return attempt(min(settings.remote_timeout_seconds, remaining))
            except _Retryable as exc:
                failure = exc
            tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
            gave_up = f"{url} could not be fetched: {failure.reason} after {tries}"
            if attempts > settings.remote_retries:
                raise InvalidInputError(f"{gave_up}.")
            wait = self._wait(attempts, failure.retry_after)
            if self._clock() + wait >= deadline:
                raise InvalidInputError(
                    f"{gave_up} (one more wait would pass the {settings.remote_deadline_seconds:g} s limit)."
                )
            self._sleep(wait)

    def _wait(self, attempts: int, retry_after: float | None) -> float:
        """Doubling waits with up to 50 % jitter, so that many indexers retrying one server spread out."""
        if retry_after is not None:
            return min(retry_after, BACKOFF_CAP_SECONDS)
        base = self._settings.remote_backoff_seconds * 2 ** (attempts - 1)
        return min(base * (1 + random.random() / 2), BACKOFF_CAP_SECONDS)

    def _attempt(
        self, target: _Target, max_bytes: int, timeout: float, *, deadline: float
    ) -> bytes | _Redirect:
        with self._lease(target) as client:
            return self._send(client, target, max_bytes, timeout, deadline)

    def _send(
        self, client: httpx.Client, target: _Target, max_bytes: int, timeout: float, deadline: float
    ) -> bytes | _Redirect:
        request = self._request(client, target, timeout)
        try:
            response = client.send(request, stream=True)
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except httpx.ConnectError as exc:
            if _caused_by_tls(exc):
                raise InvalidInputError(
                    f"{target.url} could not be fetched: the server's TLS certificate was not accepted."
                ) from None
            raise _Retryable("could not connect") from None
        except httpx.HTTPError:
            raise InvalidInputError(f"{target.url} could not be fetched: the connection failed.") from None
        try:
            return self._read(target.url, response, max_bytes, deadline)
        except httpx.TimeoutException:
            raise _Retryable("timed out") from None
        except httpx.HTTPError:
            raise InvalidInputError(
                f"{target.url} could not be fetched: the connection broke off during the download."
            ) from None
        finally:
            response.close()

    def _request(self, client: httpx.Client, target: _Target, timeout: float) -> httpx.Request:
        extensions: dict[str, Any] = {}
        if target.server_name is not None:
            extensions["sni_hostname"] = target.server_name
        return client.build_request(
            "GET",
            target.pinned,
            headers={"Host": target.host_header},
            timeout=httpx.Timeout(timeout),
            extensions=extensions,
        )

    def _read(self, url: str, response: httpx.Response, max_bytes: int, deadline: float) -> bytes | _Redirect:
        status = response.status_code
        if status in _REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise InvalidInputError(f"{url} could not be fetched: HTTP {status} without a Location.")
            return _Redirect(location)
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
        if not 200 <= status < 300:
            raise InvalidInputError(f"{url} could not be fetched: HTTP {status}.")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(url, max_bytes)
        body = bytearray()
        for chunk in response.iter_bytes(_CHUNK_BYTES):
            body += chunk[: max_bytes + 1 - len(body)]
            if len(body) > max_bytes:
                raise _too_large(url, max_bytes)
            if self._clock() > deadline:
                raise InvalidInputError(
                    f"{url} could not be fetched: the download passed the "
                    f"{self._settings.remote_deadline_seconds:g} s deadline."
                )
        return bytes(body)

    @contextlib.contextmanager
    def _lease(self, target: _Target) -> Iterator[httpx.Client]:
        """The client for a hop: one per HTTPS host name, and never closed while a thread still uses it."""
        evicted: list[httpx.Client] = []
        with self._lock:
            client = self._pick(target, evicted)
            self._busy[id(client)] = self._busy.get(id(client), 0) + 1
        for old in evicted:
            old.close()
        try:
            yield client
        finally:
            with self._lock:
                self._busy[id(client)] -= 1
                if not self._busy[id(client)]:
                    del self._busy[id(client)]

    def _pick(self, target: _Target, evicted: list[httpx.Client]) -> httpx.Client:
        if self._closed:
            raise RuntimeError("RemoteFetcher used after close()")
        if target.server_name is None:
            if self._http is None:
                self._http = self._new_client()
            return self._http
        client = self._https.get(target.server_name)
        if client is not None:
            self._https.move_to_end(target.server_name)
            return client
        client = self._https[target.server_name] = self._new_client()
        idle = [name for name, old in self._https.items() if id(old) not in self._busy and old is not client]
        evicted.extend(self._https.pop(name) for name in idle[: max(0, len(self._https) - _HTTPS_CLIENTS)])
        return client

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": self._settings.remote_user_agent, "Accept-Encoding": "identity"},
            timeout=self._settings.remote_timeout_seconds,
            verify=self._verify,
        )

    def _fetch_fsspec(self, url: str, max_bytes: int, deadline: float) -> bytes:
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(url)
        except ImportError:
            raise InvalidInputError(
                f"{url} could not be fetched: the package for {urlsplit(url).scheme}:// is not installed."
            ) from None
        except ValueError:
            raise InvalidInputError(f"{url} could not be fetched: unknown protocol.") from None

        def attempt(_timeout: float) -> bytes:
            try:
                size = fs.info(path).get("size")
                if isinstance(size, int) and size > max_bytes:
                    raise _too_large(url, max_bytes)
                with fs.open(path, "rb") as handle:
                    data: bytes = handle.read(max_bytes + 1)
            except FileNotFoundError:
                raise InvalidInputError(f"{url} could not be fetched: not found.") from None
            except PermissionError:
                raise InvalidInputError(f"{url} could not be fetched: access denied.") from None
            except (OSError, TimeoutError):
                raise _Retryable("the store did not answer") from None
            if len(data) > max_bytes:
                raise _too_large(url, max_bytes)
            return data

        return self._with_retries(url, attempt, deadline)


def _caused_by_tls(exc: BaseException) -> bool:
    """A failed handshake or certificate: the same answer on every retry."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; its HTTP-date form is ignored (the normal backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0) if seconds == seconds else None


def _too_large(url: str, max_bytes: int) -> TooLargeError:
    mib = 1024 * 1024
    limit = f"{max_bytes // mib} MB" if max_bytes % mib == 0 else f"{max_bytes}-byte"
    return TooLargeError(f"{url} is over the {limit} limit.")


class FetchOnDemand:
    """`(url, max_bytes) -> bytes` that opens its `RemoteFetcher` on first use, in whichever process
    it is in: it pickles as its settings alone, so a Ray read task builds its own connection pool
    instead of receiving a live one, and a run that names no URL never opens any."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._fetcher: RemoteFetcher | None = None
        self._lock = threading.Lock()

    def __call__(self, url: str, max_bytes: int) -> bytes:
        if self._fetcher is None:
            with self._lock:
                if self._fetcher is None:
                    self._fetcher = RemoteFetcher(self.settings)
        return self._fetcher.fetch(url, max_bytes=max_bytes)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._fetcher = None
        self._lock = threading.Lock()
