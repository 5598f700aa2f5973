"""Security headers on every response, the web UI's and the API's alike.

The UI is one static page with no inline script or style, so its policy allows only its own
origin (plus `blob:` images, the preview of a picked query file). The interactive API docs load
everything from the server too (api/docs_pages.py) but need more: Swagger UI's page starts it
with an inline script, both libraries set inline styles and use `data:` images, and ReDoc runs
its search in a `blob:` worker. Nothing is allowed from any other origin, so the docs work offline.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_DOCS_COMMON = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SWAGGER_POLICY = f"{_DOCS_COMMON}; script-src 'self' 'unsafe-inline'"
REDOC_POLICY = f"{_DOCS_COMMON}; script-src 'self'; worker-src 'self' blob:"
_POLICIES = {
    "/docs": SWAGGER_POLICY,
    "/docs/oauth2-redirect": SWAGGER_POLICY,
    "/redoc": REDOC_POLICY,
}

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """Pure ASGI: adds the headers to the response start, keeping any a route set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = _POLICIES.get(scope["path"], APP_POLICY)
        extra = (*_COMMON, (b"content-security-policy", policy.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
