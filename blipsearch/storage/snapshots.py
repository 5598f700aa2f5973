"""Index generations on disk, committed by a manifest written last.

A commit writes `<name>.<generation>.faiss` to a temporary file, fsyncs it, renames it into place,
fsyncs the directory, and only then replaces `<name>.manifest.json` the same way. The manifest
names the file, its size and sha256, the number of vectors, the last catalog change it reflects
and the model that made the vectors. A crash at any point leaves either the previous manifest
(pointing at the previous, untouched file) or the new one: never a manifest pointing at a partial
file. Older generations and stray temporary files are deleted only after the new manifest is
durable. Readers load whatever the manifest names and verify the checksum first; a reader that
finds the named file already removed (a writer committed and cleaned up in between) reads the
manifest once more and loads the newer generation instead of treating the race as corruption.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blipsearch.errors import IndexCorruptError, ModelMismatchError
from blipsearch.faults import crash_point
from blipsearch.storage.index_spec import IndexSpec
from blipsearch.storage.vectors import VectorIndex

FORMAT_VERSION = 1


@dataclass(frozen=True)
class IndexManifest:
    """The committed state of one index: which file, what it holds, what it was made from."""

    name: str
    generation: int
    file: str
    size_bytes: int
    sha256: str
    count: int
    tombstones: int
    last_change_id: int
    model_fingerprint: str
    spec: dict[str, Any]
    created_at: str
    format_version: int = FORMAT_VERSION

    @classmethod
    def parse(cls, data: Any) -> IndexManifest:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown manifest format {data.get('format_version')!r}")
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        manifest = cls(**fields)
        IndexSpec.from_dict(manifest.spec)
        if Path(manifest.file).name != manifest.file:
            raise ValueError(f"file name {manifest.file!r} is not a plain name")
        return manifest


class IndexStore:
    """The generations of one named index inside a directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.manifest_path = directory / f"{name}.manifest.json"

    def read_manifest(self) -> IndexManifest | None:
        """The committed manifest, None before the first commit; IndexCorruptError if unreadable."""
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexCorruptError(f"{self.manifest_path} cannot be read: {exc}") from exc
        try:
            return IndexManifest.parse(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{self.manifest_path} is not a valid index manifest: {exc}") from exc

    def load(self, expected_fingerprint: str | None = None) -> tuple[VectorIndex, IndexManifest] | None:
        """The committed generation, checksum-verified; None if nothing was ever committed.

        Raises ModelMismatchError when the vectors come from another model than the caller's,
        IndexCorruptError when the file is missing, truncated or differs from its checksum.
        """
        manifest = self.read_manifest()
        if manifest is None:
            return None
        try:
            data = self._read_generation(manifest, expected_fingerprint)
        except FileNotFoundError:
            # A writer may have committed a newer generation between our reading the manifest and
            # the file, and removed the file we were about to read: a race, not damage. Once.
            newer = self.read_manifest()
            if newer is None or newer.file == manifest.file:
                raise self._missing(manifest) from None
            manifest = newer
            try:
                data = self._read_generation(manifest, expected_fingerprint)
            except FileNotFoundError:
                raise self._missing(manifest) from None
        path = self.directory / manifest.file
        if len(data) != manifest.size_bytes:
            raise IndexCorruptError(
                f"{path} is {len(data)} bytes, its manifest says {manifest.size_bytes} (truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise IndexCorruptError(f"{path} fails its sha256 checksum")
        try:
            index = VectorIndex.from_bytes(IndexSpec.from_dict(manifest.spec), data)
        except (RuntimeError, ValueError) as exc:
            raise IndexCorruptError(f"{path} cannot be read by FAISS: {exc}") from exc
        return index, manifest

    def _missing(self, manifest: IndexManifest) -> IndexCorruptError:
        path = self.directory / manifest.file
        return IndexCorruptError(f"{path} is missing (generation {manifest.generation})")

    def _read_generation(self, manifest: IndexManifest, expected_fingerprint: str | None) -> bytes:
        """The bytes of the file `manifest` names; FileNotFoundError is left to the caller."""
        if expected_fingerprint is not None and manifest.model_fingerprint != expected_fingerprint:
            raise ModelMismatchError(
                f"the {self.name} index in {self.directory} was built with model "
                f"{manifest.model_fingerprint}, but this process uses {expected_fingerprint}. "
                "Use the model it was built with, or re-index with the new one "
                "(`blipsearch index PATH --model ...`)."
            )
        path = self.directory / manifest.file
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise IndexCorruptError(f"{path} cannot be read: {exc}") from exc

    def commit(self, index: VectorIndex, *, last_change_id: int, model_fingerprint: str) -> IndexManifest:
        """Make `index` the committed generation, durably, then drop the older ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            previous = self.read_manifest()
        except IndexCorruptError:
            previous = None
        generation = max(previous.generation if previous else 0, self._highest_generation()) + 1
        data = index.to_bytes()
        file_name = f"{self.name}.{generation:08d}.faiss"
        self._write_durably(self.directory / file_name, data, "index_write.temp_written")
        crash_point("index_write.renamed")
        manifest = IndexManifest(
            name=self.name,
            generation=generation,
            file=file_name,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            count=len(index),
            tombstones=index.tombstone_count,
            last_change_id=last_change_id,
            model_fingerprint=model_fingerprint,
            spec=index.spec.to_dict(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        encoded = json.dumps(asdict(manifest), indent=2, sort_keys=True).encode()
        self._write_durably(self.manifest_path, encoded, None)
        crash_point("index_write.manifest_committed")
        self._remove_all_but(file_name)
        return manifest

    def _write_durably(self, path: Path, data: bytes, crash_name: str | None) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if crash_name:
            crash_point(crash_name)
        os.replace(temporary, path)
        _fsync_directory(self.directory)

    def _highest_generation(self) -> int:
        highest = 0
        for path in self.directory.glob(f"{self.name}.*.faiss"):
            with contextlib.suppress(ValueError):
                highest = max(highest, int(path.name.split(".")[-2]))
        return highest

    def _remove_all_but(self, keep: str) -> None:
        for path in self.directory.glob(f"{self.name}.*.faiss"):
            if path.name != keep:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f".{self.name}.*.tmp"):
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget every generation: the next open rebuilds from SQL."""
        self.manifest_path.unlink(missing_ok=True)
        _fsync_directory(self.directory)
        self._remove_all_but("")


def _fsync_directory(directory: Path) -> None:
    if not directory.exists():
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
