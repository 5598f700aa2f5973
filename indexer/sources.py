"""Where items come from: a folder of images, or a catalog manifest (CSV or JSON Lines).

Both yield `SourceRecord`s keyed by the file's canonical path (symlinks resolved), so the same
file reached through a folder walk, a manifest, a symlink or `/proc/self/root` is the same catalog
item. A manifest row that cannot be used (no image path, a bad price) is reported with its line
number and skipped; the run goes on.

Given ingest roots (a server-side job), a source reads only files whose canonical path lies inside
one: a symlink whose target leaves the roots, a manifest row that climbs out with `..` or names
an absolute path elsewhere, is refused with a reason and the run goes on. Without roots (the
operator's own `blipsearch index`) any readable file may be indexed.

A manifest row may also name its image by URL (`https://...`, or an fsspec URL such as `s3://...`)
when the indexer allows it (`url_identity`): the record's identity is then the canonical URL, and
the bytes are fetched through `blipsearch.remote_fetch`, whose guard decides which hosts may be asked.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError
from blipsearch.images import IMAGE_SUFFIXES
from blipsearch.paths import IngestRoots, canonical_path, check_path_text
from blipsearch.storage.item_writes import ItemMetadata
from blipsearch.text_input import refuse_nul

MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# Accepted spellings of each manifest column, first match wins; anything else goes to attributes.
_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "path", "file", "filename"),
    "external_id": ("external_id", "sku", "id", "product_id"),
    "title": ("title", "name"),
    "description": ("description",),
    "category": ("category",),
    "brand": ("brand",),
    "price": ("price",),
    "currency": ("currency",),
    "tags": ("tags",),
    "attributes": ("attributes",),
}
_TAG_SEPARATORS = ("|", ";", ",")
MAX_FIELD_CHARS = 10_000


@dataclass(frozen=True)
class SourceRecord:
    source: str
    """Canonical path (absolute, symlinks resolved) or canonical URL: the item's identity in the catalog."""
    path: Path | None
    """The same canonical path: the file the indexer reads; None for an image at a URL (`source`)."""
    metadata: ItemMetadata | None = None
    line: int | None = None

    @property
    def name(self) -> str:
        """What messages call the image: the file name, or the URL's last path segment."""
        if self.path is not None:
            return self.path.name
        return self.source.rstrip("/").rsplit("/", 1)[-1] or self.source


@dataclass
class SourceIssues:
    """What a source skipped and why, for the run summary."""

    rejected_rows: list[str] = field(default_factory=list)
    ignored_files: int = 0
    skipped_hidden: int = 0
    skipped_symlinks: int = 0


class FolderSource:
    """Every image file under a folder, recursively, in a stable (sorted) order.

    Hidden files and folders (a leading dot: `.git`, `.thumbnails`, macOS `._x.jpg`) are skipped
    unless `include_hidden`. A symlinked file is indexed under its target's canonical path, once
    however many links reach it; symlinked folders are followed only with `follow_symlinks`, and
    then each real folder is visited once, so a link cycle cannot loop. With `roots`, a link whose
    target lies outside them is refused.

    The walk descends through canonical folders, so only a symlink's own path needs resolving.
    """

    kind = "folder"

    def __init__(
        self,
        root: Path,
        *,
        follow_symlinks: bool = False,
        include_hidden: bool = False,
        roots: IngestRoots | None = None,
    ) -> None:
        self.roots = roots
        self.root = _admitted(root, roots)
        if not self.root.is_dir():
            raise InvalidInputError(f"{root} is not a folder.")
        self.follow_symlinks = follow_symlinks
        self.include_hidden = include_hidden
        self.issues = SourceIssues()

    @property
    def origin(self) -> str:
        return str(self.root)

    def records(self) -> Iterator[SourceRecord]:
        visited: set[tuple[int, int]] = set()
        listed: set[Path] = set()
        yield from self._walk(self.root, visited, listed)

    def _walk(self, folder: Path, visited: set[tuple[int, int]], listed: set[Path]) -> Iterator[SourceRecord]:
        try:
            stat = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            self.issues.rejected_rows.append(f"{folder}: folder cannot be read")
            return
        key = (stat.st_dev, stat.st_ino)
        if key in visited:
            return
        visited.add(key)
        for entry in entries:
            if entry.name.startswith(".") and not self.include_hidden:
                self.issues.skipped_hidden += 1
                continue
            path = folder / entry.name
            try:
                is_link = entry.is_symlink()
                if entry.is_dir(follow_symlinks=True):
                    if is_link and not self.follow_symlinks:
                        self.issues.skipped_symlinks += 1
                        continue
                    target = self._link_target(path) if is_link else path
                    if target is not None:
                        yield from self._walk(target, visited, listed)
                    continue
                is_file = entry.is_file(follow_symlinks=True)
            except OSError:
                is_file = False
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                self.issues.ignored_files += 1
                continue
            if is_link and not is_file:
                self.issues.skipped_symlinks += 1  # dangling link
                continue
            canonical = self._link_target(path) if is_link else path
            if canonical is None:
                continue
            if canonical in listed:
                self.issues.skipped_symlinks += 1  # another name of a file already listed
                continue
            listed.add(canonical)
            yield SourceRecord(source=str(canonical), path=canonical)

    def _link_target(self, link: Path) -> Path | None:
        """The canonical target of a symlink, or None (a rejected row) if it leaves the roots."""
        try:
            return _admitted(link, self.roots, f"{link}: the link's target")
        except InvalidInputError as exc:
            self.issues.rejected_rows.append(str(exc))
            return None


class ManifestSource:
    """A catalog manifest: one row per product image, with the fields search filters on.

    Image paths are relative to the manifest's folder unless absolute. Columns: image (or path,
    file), sku (or id, external_id), title (or name), description, category, brand, price,
    currency, tags (a list in JSON Lines; `|`, `;` or `,`-separated in CSV), attributes (an
    object); every other column is kept as a free-form attribute.
    """

    kind = "manifest"

    def __init__(
        self,
        path: Path,
        *,
        roots: IngestRoots | None = None,
        url_identity: Callable[[str], str] | None = None,
    ) -> None:
        self.roots = roots
        self.url_identity = url_identity
        """A row's image URL -> its canonical form (refusing what is not allowed); None: URLs refused."""
        self.path = _admitted(path, roots)
        if not self.path.is_file():
            raise InvalidInputError(f"{path} is not a file.")
        self.format = MANIFEST_SUFFIXES.get(self.path.suffix.lower())
        if self.format is None:
            raise InvalidInputError(
                f"{path.name}: a manifest must be .csv, .jsonl or .ndjson (got {path.suffix or 'no suffix'})."
            )
        self.issues = SourceIssues()

    @property
    def origin(self) -> str:
        return str(self.path)

    def records(self) -> Iterator[SourceRecord]:
        seen_sources: dict[str, int] = {}
        seen_ids: dict[str, int] = {}
        for line, row in self._rows():
            try:
                record = self._record(line, row)
            except InvalidInputError as exc:
                self.issues.rejected_rows.append(f"{self.path.name} line {line}: {exc}")
                continue
            if record.source in seen_sources:
                self.issues.rejected_rows.append(
                    f"{self.path.name} line {line}: image {record.source} is already on line "
                    f"{seen_sources[record.source]}."
                )
                continue
            external_id = record.metadata.external_id if record.metadata else None
            if external_id is not None:
                if external_id in seen_ids:
                    self.issues.rejected_rows.append(
                        f"{self.path.name} line {line}: id {external_id!r} is already on line "
                        f"{seen_ids[external_id]}."
                    )
                    continue
                seen_ids[external_id] = line
            seen_sources[record.source] = line
            yield record

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            with self.path.open(encoding="utf-8-sig", newline="") as handle:
                if self.format == "csv":
                    reader = csv.DictReader(handle)
                    if not reader.fieldnames:
                        raise InvalidInputError(f"{self.path.name} has no header row.")
                    for row in reader:
                        if None in row:
                            self.issues.rejected_rows.append(
                                f"{self.path.name} line {reader.line_num}: more values than header columns."
                            )
                            continue
                        yield reader.line_num, {k.strip(): v for k, v in row.items() if k}
                    return
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    try:
                        value = json.loads(text)
                    except json.JSONDecodeError as exc:
                        self.issues.rejected_rows.append(
                            f"{self.path.name} line {number}: not JSON ({exc.msg})."
                        )
                        continue
                    if not isinstance(value, dict):
                        self.issues.rejected_rows.append(
                            f"{self.path.name} line {number}: not a JSON object."
                        )
                        continue
                    yield number, value
        except UnicodeDecodeError:
            raise InvalidInputError(f"{self.path.name} is not UTF-8 text.") from None
        except csv.Error as exc:
            raise InvalidInputError(f"{self.path.name} is not valid CSV ({exc}).") from None
        except OSError as exc:
            raise InvalidInputError(f"Cannot read {self.path}: {exc.strerror or exc}.") from None

    def _record(self, line: int, row: dict[str, Any]) -> SourceRecord:
        fields = _pick_columns(row)
        image = fields.pop("image", None)
        if not isinstance(image, str) or not image.strip():
            raise InvalidInputError("no image path (column image, path or file).")
        if "://" in image:
            if self.url_identity is None:
                raise InvalidInputError(f"{image} is a URL; only local image files can be indexed here.")
            url = self.url_identity(image)
            return SourceRecord(source=url, path=None, metadata=metadata_from_fields(fields), line=line)
        path = Path(image.strip())
        if self.roots is None:
            path = path.expanduser()  # the operator's own manifest; a job's never means a home folder
        if not path.is_absolute():
            path = self.path.parent / path
        canonical = _admitted(path, self.roots, "the image path")
        return SourceRecord(
            source=str(canonical), path=canonical, metadata=metadata_from_fields(fields), line=line
        )


def _pick_columns(row: dict[str, Any]) -> dict[str, Any]:
    lowered = {str(key).strip().lower(): value for key, value in row.items()}
    picked: dict[str, Any] = {}
    used: set[str] = set()
    for name, aliases in _COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered and _present(lowered[alias]):
                picked[name] = lowered[alias]
                used.add(alias)
                break
        used.update(alias for alias in aliases if alias in lowered)
    extras = {key: value for key, value in lowered.items() if key not in used and _present(value)}
    if extras:
        attributes = picked.get("attributes")
        if isinstance(attributes, str):
            attributes = _json_object(attributes, "attributes")
        picked["attributes"] = {**extras, **(attributes or {})}
    return picked


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(value: Any, name: str, limit: int = MAX_FIELD_CHARS) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise InvalidInputError(f"{name} must be text, not a {type(value).__name__}.")
    refuse_nul(str(value), name)
    text = " ".join(str(value).split())
    if len(text) > limit:
        raise InvalidInputError(f"{name} is {len(text)} characters, over the {limit}-character limit.")
    return text or None


def _json_object(value: str, name: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise InvalidInputError(f"{name} must be a JSON object.") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError(f"{name} must be a JSON object.")
    return parsed


def _price(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"price {value!r} is not a number.")
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInputError(f"price {value!r} is not a number.") from None
    if not price.is_finite() or price < 0:
        raise InvalidInputError(f"price {value!r} must be a non-negative number.")
    if price >= Decimal("1e12"):
        raise InvalidInputError(f"price {value!r} is too large.")
    return price.quantize(Decimal("0.01"))


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        separator = next((sep for sep in _TAG_SEPARATORS if sep in value), None)
        parts = value.split(separator) if separator else [value]
    elif isinstance(value, list):
        parts = [str(part) for part in value]
    else:
        raise InvalidInputError("tags must be a list or a separated string.")
    tags = {(_text(part, "tag", 200) or "").lower() for part in parts}
    return tuple(sorted(tag for tag in tags if tag))


def metadata_from_fields(fields: dict[str, Any]) -> ItemMetadata:
    """Validated, normalised catalog metadata from raw fields (a manifest row, an API form).

    Keys are ItemMetadata's names; absent or blank fields are None. One parser for every way
    metadata comes in, so a manifest row and an upload obey the same limits and spellings.
    """
    currency = _text(fields.get("currency"), "currency", 3)
    attributes = fields.get("attributes") or {}
    if isinstance(attributes, str):
        attributes = _json_object(attributes, "attributes")
    if not isinstance(attributes, dict):
        raise InvalidInputError("attributes must be an object.")
    refuse_nul(attributes, "attributes")
    if len(json.dumps(attributes, default=str)) > 4 * MAX_FIELD_CHARS:
        raise InvalidInputError("attributes are too large.")
    return ItemMetadata(
        external_id=_text(fields.get("external_id"), "sku", 200),
        title=_text(fields.get("title"), "title"),
        description=_text(fields.get("description"), "description"),
        category=_text(fields.get("category"), "category", 200),
        brand=_text(fields.get("brand"), "brand", 200),
        price=_price(fields.get("price")),
        currency=currency.upper() if currency else None,
        tags=_tags(fields.get("tags")),
        attributes=json.loads(json.dumps(attributes, default=str)),
    )


def _admitted(path: Path, roots: IngestRoots | None, shown: str | None = None) -> Path:
    """`path` canonical, and inside `roots` when there are any.

    Refusals call the path `shown` (by default the path as given), never its resolved form: that
    would tell a caller where a link leads.
    """
    label = shown or str(path)
    check_path_text(str(path), label if shown else "The path")
    canonical = canonical_path(path)
    if roots is not None and not roots.contains(canonical):
        raise InvalidInputError(f"{label} is outside the server's ingest roots (symlinks resolved).")
    return canonical


def open_source(
    path: Path,
    *,
    follow_symlinks: bool = False,
    include_hidden: bool = False,
    roots: IngestRoots | None = None,
    url_identity: Callable[[str], str] | None = None,
) -> FolderSource | ManifestSource:
    """A folder is walked; a .csv/.jsonl file is read as a manifest.

    `roots` confines the source and every file it names to those folders (a server-side job);
    None leaves them free (the CLI).
    """
    if roots is not None:
        path = _admitted(path, roots)  # before any look at the file: no probing outside the roots
    if path.is_dir():
        return FolderSource(path, follow_symlinks=follow_symlinks, include_hidden=include_hidden, roots=roots)
    if path.is_file():
        return ManifestSource(path, roots=roots, url_identity=url_identity)
    raise InvalidInputError(f"{path} does not exist; give a folder of images or a .csv/.jsonl manifest.")
