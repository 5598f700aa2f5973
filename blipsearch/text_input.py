"""The one rule every piece of text from outside obeys before it reaches a model or the catalog.

PostgreSQL cannot store a NUL character in text or JSON and refuses the whole statement, while
SQLite stores it silently; refusing NUL where input comes in gives both catalogs one answer and
keeps a stray control byte from surfacing as a database error.
"""

from __future__ import annotations

from typing import Any

from blipsearch.errors import InvalidInputError

NUL = "\x00"


def refuse_nul(value: Any, what: str) -> None:
    """Refuse `value` (text, or a JSON-like structure of texts) if any text in it holds NUL."""
    if _holds_nul(value):
        raise InvalidInputError(f"{what} contains a NUL character, which no text may hold.")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False
