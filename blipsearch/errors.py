"""Errors that carry a message meant for a person.

Everything the CLI or the API shows a user derives from `BlipsearchError`; anything else that
escapes is a bug and is reported as one rather than dressed up as bad input.
"""


class BlipsearchError(Exception):
    """Base class: `str(err)` is a complete sentence that says what went wrong and how to fix it."""


class ConfigError(BlipsearchError):
    """A setting or config file is invalid."""


class ModelLoadError(BlipsearchError):
    """A checkpoint could not be found, read, or is not the kind of BLIP model asked for."""


class FeatureUnavailableError(BlipsearchError):
    """An optional capability (for example VQA) was asked for but is not configured."""


class InvalidInputError(BlipsearchError, ValueError):
    """A caller passed input the engine refuses (empty text, undecodable image, bad size)."""


class TooLargeError(InvalidInputError):
    """The input is over a size or pixel limit: the same request with a smaller input would work."""


class ConflictError(InvalidInputError):
    """The input clashes with what the catalog already holds (a SKU owned by another item)."""


class CatalogError(BlipsearchError):
    """The catalog database is unreachable, or refused a migration or write."""


class IndexCorruptError(BlipsearchError):
    """A stored vector index is missing, truncated or fails its checksum; it is rebuilt from SQL."""


class ModelMismatchError(BlipsearchError):
    """An index built with one model was about to be queried or extended with another."""


class IndexLockedError(BlipsearchError):
    """Another process holds the writer lock of a data directory."""


class UnsupportedTransformersError(BlipsearchError):
    """The installed transformers is one the fast paths were not proven on (version or internals)."""


class RequestCancelledError(BlipsearchError):
    """The request's client went away before its model work ran; the work was dropped."""


class RequestExpiredError(BlipsearchError):
    """The request waited past its deadline (`request_deadline_ms`); its work was dropped."""
