"""Per-result lists: a rich table in a terminal, one tab-separated line per result in a pipe.

Scripts read the line form (header line, then one line per result, no wrapping), people read the
table; which one a command prints is decided here only, by whether stdout is a terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def write_lines(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Tab-separated, a header line first; tabs and line breaks inside a field become spaces so every
    result stays one line."""
    for fields in (header, *rows):
        sys.stdout.write("\t".join(_one_line_field(field) for field in fields) + "\n")


def _one_line_field(value: object) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.replace("\t", " ").splitlines()) if text else text


def shorten_paths(sources: Sequence[str], cwd: Path | None = None) -> tuple[list[str], str | None]:
    """Absolute file paths made short enough to read: relative to the working directory when they lie
    under it, else relative to their deepest common folder, which is returned so it can be shown.

    Anything else (URLs, relative paths) is left as it is. The common folder is None when nothing was
    shortened against it.
    """
    here = (cwd or Path.cwd()).resolve()
    absolute = [PurePath(source) for source in sources if _is_local_absolute(source)]
    if not absolute:
        return list(sources), None
    if all(path.is_relative_to(here) for path in absolute):
        return [_relative(source, here) for source in sources], None
    root = PurePath(os.path.commonpath([str(path.parent) for path in absolute]))
    if root == PurePath(root.anchor):
        return list(sources), None
    return [_relative(source, root) for source in sources], str(root)


def _is_local_absolute(source: str) -> bool:
    return "://" not in source and PurePath(source).is_absolute()


def _relative(source: str, root: PurePath) -> str:
    if not _is_local_absolute(source) or not PurePath(source).is_relative_to(root):
        return source
    return PurePath(source).relative_to(root).as_posix()
