"""The UI's JavaScript modules: every one that index.html reaches is served, and they form no cycle.

The UI is split into small ES modules loaded by the browser with no bundler, so a module that the
server does not serve (or serves under a type browsers refuse for modules) breaks the whole page.
The browser tests (tests/test_web*.py) drive the UI itself; this checks the set of files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest

from test_api_docs import docs_settings

WEB = Path(__file__).resolve().parent.parent / "web"
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']""", re.MULTILINE | re.DOTALL)
SCRIPT = re.compile(r"""<script\b[^>]*\bsrc=["']([^"']+)["']""")


@pytest.fixture
def client(tmp_path: Path, tiny_checkpoints, api_server: Callable[..., str]) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    base = api_server(docs_settings(tmp_path / "data", tiny_checkpoints))
    with httpx.Client(base_url=base, timeout=120) as session:
        yield session


def _imports(source: str) -> list[str]:
    return IMPORT.findall(source)


def _resolve(url: str, specifier: str) -> str:
    assert specifier.startswith("./"), f"{url} imports {specifier}: only relative imports, no dependencies"
    return str(PurePosixPath(url).parent / specifier[2:])


def test_every_module_the_page_reaches_is_served_as_javascript(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    pending = SCRIPT.findall(page.text)
    assert pending == ["/static/app.js"]
    served: dict[str, str] = {}
    while pending:
        url = pending.pop()
        if url in served:
            continue
        response = client.get(url)
        assert response.status_code == 200, url
        kind = response.headers["content-type"]
        assert kind.startswith("text/javascript"), (url, kind)
        assert "default-src 'self'" in response.headers["content-security-policy"], url
        served[url] = response.text
        pending.extend(_resolve(url, specifier) for specifier in _imports(response.text))
    on_disk = {f"/static/{path.name}" for path in WEB.glob("*.js")}
    assert set(served) == on_disk, "a module in web/ the page never loads, or one it loads that is not there"


def test_the_modules_import_no_cycle() -> None:
    graph = {
        path.name: [_resolve(f"/{path.name}", spec).lstrip("/") for spec in _imports(path.read_text())]
        for path in WEB.glob("*.js")
    }
    assert graph["app.js"], "app.js starts the app from the other modules"
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join((*trail, name))
        assert name in graph, f"{trail[-1]} imports {name}, which is not in web/"
        if name in done:
            return
        for child in graph[name]:
            visit(child, (*trail, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_import_pattern_sees_multiline_imports() -> None:
    """The checks above are only as good as the pattern that reads the imports."""
    source = 'import { a } from "./one.js";\nimport {\n  b,\n  c,\n} from "./two.js";\nconst x = "from";\n'
    assert _imports(source) == ["./one.js", "./two.js"]
