"""The interactive API docs (/docs, /redoc) built on the server's own copies of Swagger UI and ReDoc.

FastAPI's default pages load their code, Google Fonts and a favicon from CDNs, so on a machine
without internet they stay blank. These pages load everything from `/static/third-party/` (see
web/third-party/README.md), which also lets their content security policy allow only the server itself.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

SWAGGER_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"
FAVICON_PATH = "/favicon.ico"


def install_docs_pages(app: FastAPI, *, static_path: str) -> None:
    """Registers the pages; the app must be created with `docs_url=None, redoc_url=None`."""
    openapi_path = app.openapi_url or "/openapi.json"
    # The hosted validator badge would be one more request off the machine.
    swagger_parameters = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}

    @app.get(SWAGGER_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_js_url=f"{root}{static_path}/third-party/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{static_path}/third-party/swagger-ui/swagger-ui.css",
            swagger_favicon_url=root + FAVICON_PATH,
            swagger_ui_parameters=swagger_parameters,
        )

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_redoc_html(
            openapi_url=root + openapi_path,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{static_path}/third-party/redoc/redoc.standalone.js",
            redoc_favicon_url=root + FAVICON_PATH,
            with_google_fonts=False,
        )


def _root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
