"""Uploaded images: read with a size limit, checked by the same decoder the indexer uses."""

from __future__ import annotations

from fastapi import UploadFile

from blipsearch.api.errors import ApiError
from blipsearch.settings import Settings

_CHUNK = 1024 * 1024


async def read_upload(file: UploadFile, settings: Settings) -> bytes:
    """The upload's bytes, refusing (413) as soon as it passes `max_image_bytes`."""
    limit = settings.max_image_bytes
    parts: list[bytes] = []
    size = 0
    while chunk := await file.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"The upload is over the {limit}-byte limit.")
        parts.append(chunk)
    if not size:
        raise ApiError(400, "invalid_input", "The uploaded file is empty.")
    return b"".join(parts)
