"""The one place configuration is read: environment (`BLIPSEARCH_*`), an optional TOML file, defaults.

Precedence, highest first: values passed in code (CLI flags), environment variables, the config
file, built-in defaults. The config file is `$BLIPSEARCH_CONFIG_FILE` if set, else
`<data_dir>/blipsearch.toml` is *not* consulted implicitly: an explicit file keeps runs reproducible.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

from blipsearch.errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
IndexKindSetting = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]

CONFIG_FILE_ENV = "BLIPSEARCH_CONFIG_FILE"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
BLIP_MAX_TEXT_TOKENS = 35
"""BLIP was trained with texts of at most 35 tokens ([CLS] and [SEP] included)."""


def _default_demo_dir() -> Path:
    """`demo/` of the repository checkout this package runs from (the shipped model and catalog)."""
    return Path(__file__).resolve().parent.parent / "demo"


def _default_user_agent() -> str:
    """Servers' logs name the software that fetched; the installed distribution knows its version."""
    try:
        version = importlib.metadata.version("blipsearch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"blipsearch-indexer/{version}"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "blipsearch"


class Settings(BaseSettings):
    """Effective configuration of one blipsearch process."""

    model_config = SettingsConfigDict(
        env_prefix="BLIPSEARCH_",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    config_file: Path | None = Field(
        default=None,
        description="TOML file with settings (also read from $BLIPSEARCH_CONFIG_FILE).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the catalog, vector indexes and caches live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the catalog; default: SQLite file inside data_dir.",
    )

    retrieval_model: str = Field(
        default="Salesforce/blip-itm-base-coco",
        description="BlipForImageTextRetrieval checkpoint (ITC + ITM): hub id or local directory.",
    )
    caption_model: str = Field(
        default="Salesforce/blip-image-captioning-base",
        description="BlipForConditionalGeneration checkpoint: hub id or local directory.",
    )
    demo_dir: Path = Field(
        default_factory=_default_demo_dir,
        description="The shipped demo model (model/) and emoji catalog (catalog/) for `blipsearch demo`.",
    )
    vqa_model: str | None = Field(
        default=None,
        description="BlipForQuestionAnswering checkpoint; unset means question answering is off.",
    )
    offline: bool = Field(
        default=False,
        validation_alias=AliasChoices("BLIPSEARCH_OFFLINE", "HF_HUB_OFFLINE", "offline"),
        description="Never contact the model hub; only local directories and the HF cache.",
    )

    device: Device = Field(default="auto", description="auto picks cuda, then mps, then cpu.")
    dtype: DType = Field(
        default="auto",
        description=(
            "auto: bfloat16 (or float16) on CUDA; on a CPU with native bf16 (AVX512-BF16, AMX) bfloat16 "
            "for the retrieval model; float32 otherwise."
        ),
    )

    image_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=(
            "Images per vision-encoder call; unset: on CPU 1 for BLIP-base-sized ViTs and 32 for "
            "small ones (measured fastest per image, bench/results/), 32 on CUDA and MPS."
        ),
    )
    attention: Literal["sdpa", "eager"] = Field(
        default="sdpa",
        description="Retrieval-model attention: fused scaled_dot_product_attention, or transformers' eager.",
    )
    quantize: Literal["auto", "none", "vision", "all"] = Field(
        default="auto",
        description=(
            "Int8 dynamic quantisation of the retrieval model's linear layers (CPU, float32 only): "
            "vision = the ViT, all = ViT and text side; auto: vision where the model runs in float32 "
            "on a CPU, where it was measured faster at close agreement with float32; all also speeds up "
            "queries but agrees less (figures: bench/results/)."
        ),
    )
    inference_runtime: Literal["torch", "onnxruntime", "openvino"] = Field(
        default="torch",
        description=(
            "What runs the retrieval model's graphs on the CPU: torch, or ONNX Runtime or OpenVINO (the "
            "runtimes extra) for the graphs where it was measured faster at top-10 agreement with "
            "float32 (bench/results/runtimes-*); exports are kept under data_dir/onnx. CPU and "
            "float32 only."
        ),
    )
    inference_runtime_graphs: list[Literal["text", "vision", "itm"]] | None = Field(
        default=None,
        description=(
            "The graphs inference_runtime runs instead of torch. Unset: those it was measured faster "
            "on for both the demo model and BLIP-base (the text encoder). A small model may gain on "
            "more (the demo model's ITM and ViT under ONNX Runtime: bench/results/runtimes-*)."
        ),
    )
    text_batch_size: int = Field(default=64, ge=1, le=4096)
    itm_batch_size: int = Field(default=32, ge=1, le=4096)
    caption_batch_size: int = Field(default=8, ge=1, le=1024)
    caption_prompt: str | None = Field(
        default=None,
        description='Prompt every caption continues (stripped from the result), e.g. "a picture of".',
    )
    caption_min_tokens: int = Field(
        default=5,
        ge=0,
        le=64,
        description="Fewest new tokens in a caption: 5 as in BLIP's paper; 1 for captioners of short names.",
    )
    max_text_tokens: int = Field(
        default=BLIP_MAX_TEXT_TOKENS,
        ge=4,
        le=512,
        description="Texts are truncated to this many tokens, as BLIP was trained.",
    )

    max_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="Decoding refuses larger images (decompression-bomb guard).",
    )
    max_image_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="Largest image file accepted.")
    max_query_pixels: int = Field(
        default=16_000_000,
        ge=1,
        description=(
            "Query images (API uploads) are refused above this many decoded pixels, read from the header; "
            "JPEGs count after reduced decoding, so large photos still pass."
        ),
    )
    max_concurrent_decodes: int = Field(
        default=2, ge=1, le=64, description="Query images the server decodes at once; more wait their turn."
    )

    vector_store: Literal["auto", "faiss", "pgvector"] = Field(
        default="auto",
        description=(
            "Where vectors are kept and searched: faiss (files in data_dir), pgvector (the catalog's "
            "PostgreSQL tables, shared by every server on the database); auto: pgvector when the catalog "
            "is PostgreSQL with the extension installed, faiss otherwise."
        ),
    )
    pgvector_ef_search: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="HNSW candidate list per pgvector query (hnsw.ef_search); a deeper query uses its k.",
    )
    pgvector_max_scan_tuples: int = Field(
        default=20_000,
        ge=100,
        description=(
            "Rows a filtered pgvector HNSW scan visits before the query falls back to an exact scan "
            "(hnsw.max_scan_tuples)."
        ),
    )
    pgvector_exact_limit: int = Field(
        default=20_000,
        ge=0,
        description="A filter admitting at most this many items is answered by an exact pgvector scan.",
    )
    database_read_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of a PostgreSQL hot standby that searches read from; writes, and reads that "
            "must see a write just acknowledged, go to database_url."
        ),
    )
    read_replica_wait_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description=(
            "How long a read waits for the standby to replay a write it must see before it reads from "
            "the primary instead."
        ),
    )
    image_store: str | None = Field(
        default=None,
        description=(
            "Where uploaded images are kept: a directory, or an fsspec URL (s3://bucket/prefix with the "
            "s3fs extra) that every server shares; default: data_dir/uploads."
        ),
    )
    index_kind: IndexKindSetting = Field(
        default="auto",
        description="FAISS index kind; auto picks by collection size and index_memory_budget.",
    )
    vector_search_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description=(
            "Where exact (flat) vector search runs: cuda scans a float16 copy on the GPU (FAISS GPU if "
            "installed), cpu keeps FAISS on the CPU; auto is cuda when torch sees a GPU."
        ),
    )
    index_memory_budget: int = Field(
        default=4 * 1024**3, ge=1024**2, description="Bytes one vector index may use in memory (auto rule)."
    )
    embedding_storage: Literal["float32", "float16"] = Field(
        default="float32",
        description="Precision of the ITC vectors kept in SQL; float16 halves the catalog size.",
    )
    decode_workers: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="Threads that read, hash and decode images while the model embeds.",
    )
    index_chunk_items: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Files the indexer inspects, embeds and writes (one SQL transaction) at a time.",
    )
    index_checkpoint_items: int = Field(
        default=2000,
        ge=1,
        description="The indexer commits a new index generation after this many changed items.",
    )
    ray_address: str | None = Field(
        default=None,
        description=(
            "`index --engine ray`: the Ray cluster to join (`ray://host:10001`, `host:6379`); unset starts "
            "a local one on this machine's cores."
        ),
    )
    ray_workers: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description=(
            "`--engine ray`: embedding actors, one model each; 0: one per GPU share with GPUs per worker "
            "set, else half the cluster's CPUs (at least one)."
        ),
    )
    ray_cpus_per_worker: float = Field(
        default=0.5,
        gt=0,
        le=512,
        description=(
            "CPUs each embedding actor reserves. Fractional, so that read tasks always find a CPU: with a "
            "whole CPU per actor on a small machine the readers starve."
        ),
    )
    ray_gpus_per_worker: float = Field(
        default=0.0, ge=0, le=64, description="GPUs each embedding actor reserves (0.5: two actors per GPU)."
    )
    ray_shard_items: int = Field(
        default=20_000,
        ge=1,
        le=10_000_000,
        description=(
            "Records the driver hands Ray at a time; each shard is one Ray Data run (actors load the model "
            "once per shard), its results committed in `index_chunk_items` transactions as they arrive."
        ),
    )
    ray_block_items: int = Field(
        default=64, ge=1, le=100_000, description="Records per Ray read task (one block)."
    )
    ray_worker_restarts: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="How often a dead embedding actor is restarted (its batch retried) before the run fails.",
    )
    remote_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Connect and read timeout of one attempt to fetch a remote (http, s3, ...) image.",
    )
    remote_deadline_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Longest one remote image may take in all: every attempt, redirect and wait together.",
    )
    remote_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description=(
            "Retries of a remote image after a connection error, a timeout, or HTTP 429, 500, 502, 503, "
            "504; other errors fail at once."
        ),
    )
    remote_backoff_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="First wait before a retry; it doubles per retry (with jitter) unless Retry-After says.",
    )
    remote_max_redirects: int = Field(
        default=3, ge=0, le=20, description="HTTP redirects followed for one remote image."
    )
    remote_allow_networks: list[str] = Field(
        default_factory=list,
        description=(
            "CIDRs (e.g. 10.1.2.0/24) remote images may come from although private, loopback or "
            "link-local; every other such address is refused (SSRF guard)."
        ),
    )
    remote_protocols: list[str] = Field(
        default_factory=lambda: ["http", "https", "s3", "gs", "gcs", "az", "abfs"],
        description="URL schemes a manifest may name images by (fsspec ones need their package, e.g. s3fs).",
    )
    remote_user_agent: str = Field(
        default_factory=_default_user_agent,
        min_length=1,
        description="User-Agent sent with every HTTP request for a remote image.",
    )
    api_checkpoint_changes: int = Field(
        default=200,
        ge=1,
        description=(
            "The server commits a new index generation after this many items changed through the API "
            "(uploads, edits, deletes), so a restart replays at most that many."
        ),
    )
    api_checkpoint_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="...or this long after the first uncommitted API change, whichever comes first.",
    )
    search_mode: Literal["vector", "keyword", "hybrid"] = Field(
        default="hybrid",
        description="Text queries: ITC vectors, keywords (full-text), or both fused by reciprocal rank.",
    )
    rerank: bool = Field(default=True, description="Re-rank the ITC shortlist of text queries with ITM.")
    rerank_k: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Shortlist re-ranked by ITM, the same for every query; unset: calibrated once at start-up, "
            "as many candidates as fit rerank_budget_ms, at most 8 on CPU, 32 on CUDA/MPS "
            "(cost per candidate: bench/reports/search_latency.md)."
        ),
    )
    rerank_budget_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        description=(
            "Calibration target: the ITM time one query should take. When rerank_k is unset, a start-up "
            "warm-up times ITM on dummy candidates and fixes the depth to what fits; queries are never "
            "cut to it. Unset: 400 ms on CPU, 100 ms on CUDA/MPS (bench/results/)."
        ),
    )
    rerank_deadline_ms: float | None = Field(
        default=None,
        gt=0,
        le=3_600_000,
        description=(
            "Safety deadline of one query's re-ranking: past it no further candidates are scored, the "
            "rest keep their first-stage order and the page says rerank_deadline_hit. Unset: ten times "
            "the re-rank budget."
        ),
    )
    rerank_itc_weight: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description=(
            "0: the re-ranked shortlist is ordered by ITM probability alone. Above 0: by ITM log-odds plus "
            "this weight x the ITC cosine, so a weak ITM head refines the contrastive order instead of "
            "overriding it; 1 / the ITC temperature weighs both heads by their own confidence."
        ),
    )
    query_cache_entries: int = Field(
        default=4096,
        ge=0,
        le=10_000_000,
        description="Recent query embeddings and ITM scores kept in memory (LRU); 0 turns the cache off.",
    )
    max_k: int = Field(default=100, ge=1, le=10_000, description="Most results one page may ask for.")
    max_offset: int = Field(default=10_000, ge=0, description="Deepest result a page may start at.")
    hybrid_candidates: int = Field(
        default=100, ge=1, le=10_000, description="Results taken from each side before hybrid fusion."
    )
    sort_candidates: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="A text query sorted by price or date re-orders at most this many of its most relevant "
        "results.",
    )
    keyword_stopwords: bool = Field(
        default=True,
        description=(
            "Leave English stopwords (a, the, with...) out of keyword search unless the query has nothing "
            "else; the list is in search/stopwords.py."
        ),
    )
    keyword_floor: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "Keyword and hybrid modes: keyword hits scoring below this fraction of the query's best keyword "
            "score are dropped (a match on one common word among several). 0 keeps every match."
        ),
    )
    vector_floor: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Hybrid mode: vector candidates whose ITC cosine is below this fraction of the query's best "
            "cosine are dropped, so the results end instead of listing the whole catalog. 0 keeps all "
            "hybrid_candidates. Vector mode is never cut."
        ),
    )
    vision_tokens: Literal["files", "cache"] = Field(
        default="cache",
        description=(
            "Where ITM's vision tokens come from: a bounded disk cache that the indexer fills while it "
            "embeds (misses re-encode the file), or always re-encoded from the image files."
        ),
    )
    vision_cache_bytes: int = Field(
        default=2 * 1024**3, ge=0, description="Size bound of the float16 vision-token cache (LRU)."
    )
    fault_injection: str | None = Field(
        default=None,
        description="Testing only: `POINT[:N]` makes the process SIGKILL itself at a named crash point.",
    )

    api_key: SecretStr | None = Field(default=None, description="Key required by write endpoints.")
    api_keyed_reads: bool = Field(default=False, description="Require the API key on read endpoints too.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; none by default."
    )
    ingest_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "Folders server-side ingest jobs may read (symlinks resolved); empty turns `POST /v1/jobs` "
            "off. The CLI's `blipsearch index` is not restricted."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address `blipsearch serve` listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `blipsearch serve` listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Processes `blipsearch serve` runs on one port, each with its own model; the first also "
            "commits index checkpoints, cleans the image store and runs ingest jobs."
        ),
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "CPU threads each serving process's model uses. Unset: torch's default (every core) with "
            "one worker, the cores divided among the workers with several."
        ),
    )
    max_query_chars: int = Field(default=1000, ge=1, le=100_000, description="Longest text query accepted.")
    inference_workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "Requests in progress at once (each in its own thread). Unset: 48 with batching (their "
            "model work shares forwards), 1 without (each forward would take the whole CPU)."
        ),
    )
    inference_queue: int = Field(
        default=16, ge=0, le=10_000, description="Requests waiting for a model slot before 503 Overloaded."
    )
    batching: bool = Field(
        default=True,
        description=(
            "Dynamic batching: concurrent requests' text encodes, ITM candidates, query images and "
            "captions run in shared forwards. Off: each request runs its own (the baseline)."
        ),
    )
    batch_window_ms: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description=(
            "How long a forward waits for more requests to join it once one is waiting. Unset: 2 ms "
            "on CPU, 5 ms on CUDA/MPS."
        ),
    )
    batch_max_texts: int = Field(
        default=32, ge=1, le=4096, description="Most query texts per batched encode."
    )
    batch_max_itm_pairs: int = Field(
        default=64, ge=1, le=4096, description="Most (query, candidate) pairs per batched ITM forward."
    )
    batch_max_images: int = Field(
        default=8, ge=1, le=1024, description="Most query images (or images to caption) per batched forward."
    )
    rerank_shed_from: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description=(
            "Admission load (requests admitted / workers + queue) above which re-ranking depth is shed, "
            "linearly to none at a full queue, before any request is refused with 503; the page says "
            "rerank_shed. 1 never sheds depth."
        ),
    )
    request_deadline_ms: float = Field(
        default=30_000,
        gt=0,
        le=3_600_000,
        description=(
            "A request still waiting for model work this long after it arrived is answered 503 "
            "(deadline_exceeded) and its work is dropped."
        ),
    )
    job_lease_seconds: float = Field(
        default=60.0,
        ge=1,
        le=86_400,
        description=(
            "A running ingest job's lease: its runner renews it every third of this; once it has "
            "passed (the process died or hung), any server sharing the catalog takes the job over."
        ),
    )
    max_queued_jobs: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description=(
            "Ingest jobs queued or running at once; beyond this POST /v1/jobs answers 503 with Retry-After."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING",
        description="Lowest level logged on stderr by every command and by `serve` (uvicorn's logs too).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`text`: one key=value line per event; `json`: one JSON object per line."
    )

    @field_validator("offline", mode="before")
    @classmethod
    def _parse_offline(cls, value: Any) -> Any:
        # HF_HUB_OFFLINE is documented as "1"; accept the spellings people use.
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"", "0", "false", "no", "off"}:
                return False
        return value

    @field_validator("data_dir", "demo_dir", mode="after")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("ingest_roots", mode="after")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        roots = [root.expanduser() for root in value]
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"ingest roots must be absolute paths, not {', '.join(relative)}")
        return roots

    @field_validator("remote_allow_networks", mode="after")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for text in value:
            try:
                networks.append(str(ipaddress.ip_network(text.strip(), strict=True)))
            except ValueError:
                raise ValueError(f"{text!r} is not a network in CIDR form (such as 10.0.0.0/8)") from None
        return networks

    @field_validator("remote_protocols", mode="after")
    @classmethod
    def _check_protocols(cls, value: list[str]) -> list[str]:
        protocols = [text.strip().lower() for text in value]
        bad = [text for text in protocols if not _SCHEME.fullmatch(text)]
        if bad:
            raise ValueError(f"not URL schemes: {', '.join(repr(text) for text in bad)}")
        return protocols

    @field_validator(
        "vqa_model",
        "database_url",
        "database_read_url",
        "image_store",
        "ray_address",
        "fault_injection",
        "caption_prompt",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_database_url(self) -> Settings:
        for name in ("database_url", "database_read_url"):
            value = getattr(self, name)
            if value is not None:
                try:
                    make_url(value)
                except Exception as exc:
                    raise ValueError(f"{name} is not a valid SQLAlchemy URL: {exc}") from None
        primary = make_url(self.effective_database_url).get_backend_name()
        if self.database_read_url is not None and primary != "postgresql":
            raise ValueError("database_read_url needs a PostgreSQL database_url (a standby of it)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file_from(init_settings)
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'catalog.sqlite3'}"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data with secrets and URL passwords hidden."""
        data = self.model_dump(mode="json", by_alias=False)
        data["api_key"] = "********" if self.api_key is not None else None
        url = make_url(self.effective_database_url)
        data["database_url"] = url.render_as_string(hide_password=True)
        if self.database_read_url is not None:
            data["database_read_url"] = make_url(self.database_read_url).render_as_string(hide_password=True)
        return data


def _config_file_from(init_settings: PydanticBaseSettingsSource) -> Path | None:
    explicit = init_settings().get("config_file")
    raw = explicit if explicit is not None else os.environ.get(CONFIG_FILE_ENV)
    if raw in (None, ""):
        return None
    path = Path(str(raw)).expanduser()
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist; fix {CONFIG_FILE_ENV} or --config.")
    return path


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into one readable `ConfigError`."""
    from pydantic import ValidationError

    clean = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**clean)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file is not valid TOML: {exc}.") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"Invalid configuration: {problems}.") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings for long-lived services; commands build their own with overrides."""
    return load_settings()
