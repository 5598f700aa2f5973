"""Server-side paths: what a caller may name, what an item's identity is, and where ingest may read.

A path that comes from outside the operator's own shell (an API job, a manifest row a job reads)
is untrusted. It is checked as text first, before any filesystem call, so a NUL byte or an
absurd length is a clear refusal rather than an OS error. Its identity is then its canonical
form, every symlink resolved: the same file reached as `/srv/photos/a.jpg` and as
`/proc/self/root/srv/photos/a.jpg` is one file, and a link cannot smuggle a file from outside the
ingest roots in under a name inside them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from blipsearch.errors import InvalidInputError

MAX_PATH_BYTES = 4095
"""Linux's PATH_MAX (4096) less the terminating NUL; a longer path cannot be opened anyway."""
MAX_NAME_BYTES = 255
"""NAME_MAX of every common filesystem: the longest single path component."""


def check_path_text(text: str, what: str = "The path") -> None:
    """Refuse a path the OS would reject with a confusing error (or Python with a ValueError).

    Messages never repeat the path: it may be 100,000 characters long, or hold bytes a log or
    terminal should not see.
    """
    if "\x00" in text:
        raise InvalidInputError(f"{what} contains a NUL byte.")
    try:
        encoded = os.fsencode(text)
    except UnicodeError:
        raise InvalidInputError(f"{what} is not valid text for a file name.") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidInputError(f"{what} is longer than {MAX_PATH_BYTES} bytes.")
    if any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        raise InvalidInputError(f"{what} has a component longer than {MAX_NAME_BYTES} bytes.")


def canonical_path(path: str | os.PathLike[str]) -> Path:
    """Absolute, `..` collapsed, every symlink resolved as far as the path exists.

    Not strict: a file that does not exist (yet) still gets a canonical name, so a manifest row
    naming a missing file becomes a failed item rather than a crash, and is still placed inside or
    outside the roots by the folders that do exist.
    """
    return Path(os.path.realpath(path))


class IngestRoots:
    """The folders server-side ingest may read from; empty means it may read nothing.

    The roots themselves are canonicalised once, so `/srv/photos` configured through a symlinked
    `/srv` still contains the canonical paths of its files.
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        self.roots = tuple(dict.fromkeys(canonical_path(root) for root in roots))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def contains(self, canonical: Path) -> bool:
        """Whether an already canonical path is one of the roots or lies below one."""
        return any(canonical.is_relative_to(root) for root in self.roots)
