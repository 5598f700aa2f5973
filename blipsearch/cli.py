"""The `blipsearch` command tree. Each command parses options, builds settings, calls one function."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from blipsearch import __version__
from blipsearch.cli_capfilt import capfilt
from blipsearch.cli_data import data_app
from blipsearch.cli_eval import bind_settings as bind_eval_settings
from blipsearch.cli_eval import eval_command
from blipsearch.cli_index import bind_settings, index_app
from blipsearch.cli_search import bind_settings as bind_search_settings
from blipsearch.cli_search import describe, search
from blipsearch.cli_serve import bind_settings as bind_serve_settings
from blipsearch.cli_serve import demo, serve
from blipsearch.cli_train import train_app
from blipsearch.errors import BlipsearchError
from blipsearch.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="blipsearch",
    help="Cross-modal image search on BLIP: index a collection, then find images by text or image, "
    "and text for an image.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
model_app = typer.Typer(help="Inspect, create and try BLIP checkpoints.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the catalog database (migrations).", no_args_is_help=True)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(index_app, name="index")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")

_state: dict[str, Any] = {}
_log_level: list[str] = ["WARNING"]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (else $BLIPSEARCH_CONFIG_FILE).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (catalog, indexes).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint: hub id or local directory.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or mps.")]
DTypeOpt = Annotated[str | None, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
OfflineOpt = Annotated[
    bool | None, typer.Option("--offline/--online", help="Never contact the model hub (HF_HUB_OFFLINE).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(**overrides: Any) -> Settings:
    from blipsearch import faults
    from blipsearch.logs import configure_logging

    merged = {**_state, **overrides}
    settings = load_settings(**merged)
    # The settings decide how the command logs; --log-level/--log-json reached them through _state.
    configure_logging(settings.log_level, settings.log_format)
    _log_level[0] = settings.log_level
    logging.getLogger("blipsearch").debug(
        "settings loaded",
        extra={"config_file": settings.config_file, "data_dir": str(settings.data_dir)},
    )
    faults.arm(settings.fault_injection)
    return settings


bind_settings(_settings)
bind_search_settings(_settings)
bind_serve_settings(_settings)
app.command(name="serve")(serve)
app.command(name="demo")(demo)
app.command(name="search")(search)
app.command(name="describe")(describe)
app.command(name="capfilt")(capfilt)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.callback()
def _root(
    config: ConfigOpt = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: setting log_level)."),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-text", help="JSON or key=value logs on stderr (default: setting log_format)."
        ),
    ] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Cross-modal image search on BLIP."""
    from blipsearch.logs import configure_logging

    if version:
        console.print(f"blipsearch {__version__}")
        raise typer.Exit(0)
    _state.clear()
    if config is not None:
        _state["config_file"] = config
    if log_level is not None:
        _state["log_level"] = log_level.upper()
    if log_json is not None:
        _state["log_format"] = "json" if log_json else "text"
    # Until a command loads its settings (which then decide), the flags or the settings' defaults.
    defaults = Settings.model_fields
    level = _state.get("log_level", defaults["log_level"].default)
    configure_logging(
        level if level in logging.getLevelNamesMapping() else "WARNING",
        _state.get("log_format", defaults["log_format"].default),
    )
    _quiet_library_progress_bars()
    _log_level[0] = level


def _quiet_library_progress_bars() -> None:
    # transformers draws a bar for every shard it reads or writes; noise around our own output.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


bind_eval_settings(_settings)
app.command(name="eval")(eval_command)


DatabaseUrlOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in the data directory).")
]


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply catalog migrations up to the newest revision (runs by itself on a fresh data directory)."""
    from blipsearch.storage.database import create_catalog_engine, current_revision, upgrade_database

    settings = _settings(data_dir=data_dir, database_url=database_url)
    engine = create_catalog_engine(settings.effective_database_url)
    try:
        before = current_revision(engine)
        after = upgrade_database(engine, revision)
    finally:
        engine.dispose()
    where = settings.masked()["database_url"]
    if before == after:
        console.print(f"catalog at {where} is already at revision {after}")
    else:
        console.print(f"catalog at {where} migrated from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current(data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Print the catalog's migration revision and the newest one this version knows."""
    from blipsearch.storage.database import create_catalog_engine, current_revision, head_revision

    settings = _settings(data_dir=data_dir, database_url=database_url)
    engine = create_catalog_engine(settings.effective_database_url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"current {current or 'empty'}  head {head_revision()}")


@config_app.command("show")
def config_show(data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings (environment, config file, defaults), secrets masked."""
    settings = _settings(data_dir=data_dir)
    data = settings.masked()
    if as_json:
        _print_json(data)
        return
    table = Table(title="blipsearch settings", show_header=True)
    table.add_column("setting")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@model_app.command("make-tiny")
def model_make_tiny(
    directory: Annotated[Path, typer.Argument(help="Where to write retrieval/, caption/ and vqa/.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing tiny checkpoints.")] = False,
) -> None:
    """Write tiny random BLIP checkpoints (retrieval, caption, VQA) for tests and offline smoke runs."""
    from blipsearch.models.tiny import make_tiny

    written = make_tiny(directory, seed=seed, overwrite=force)
    for role in ("retrieval", "caption", "vqa"):
        console.print(f"{role:9s} {getattr(written, role)}")


@model_app.command("info")
def model_info(
    source: Annotated[
        str | None, typer.Argument(help="Hub id or directory (default: retrieval model).")
    ] = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a checkpoint's architecture, parameter counts, embedding size, image size and fingerprint."""
    from blipsearch.models.info import checkpoint_info

    settings = _settings(offline=offline)
    info = checkpoint_info(source or settings.retrieval_model, settings)
    if as_json:
        _print_json(info)
        return
    table = Table(title=f"{info['architecture']}  ({info['source']})", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    params = info["parameters"]
    rows: list[tuple[str, object]] = [
        ("role", info["role"]),
        ("fingerprint", info["fingerprint"]),
        ("embedding size", info["embedding_dim"] if info["embedding_dim"] is not None else "n/a"),
        (
            "image size",
            f"{info['image_size']} px, patch {info['patch_size']}, {info['vision_tokens']} tokens",
        ),
        ("vision encoder", "{layers} layers x {hidden} wide, {heads} heads".format(**info["vision"])),
        (
            "text side",
            "{layers} layers x {hidden} wide, {heads} heads, vocab {vocab_size}".format(**info["text"]),
        ),
        (
            "tokenizer",
            "{class}, {vocab_size} tokens, max {max_text_tokens} per text".format(**info["tokenizer"]),
        ),
        ("parameters", ", ".join(f"{k} {v:,}" for k, v in params.items())),
        ("stored dtype", info["stored_dtype"]),
    ]
    for key, value in rows:
        table.add_row(str(key), str(value))
    console.print(table)


def _open_images(paths: list[Path], settings: Settings) -> list[Any]:
    from blipsearch.images import open_image

    return [
        open_image(p, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels) for p in paths
    ]


@model_app.command("embed")
def model_embed(
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="Text to embed (repeatable).")
    ] = None,
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="Image to embed (repeatable).")
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """ITC-embed texts and/or images and show their cosine similarities."""
    from blipsearch.models.retrieval import RetrievalModel

    if not text and not image:
        raise BlipsearchError("Give at least one --text or --image to embed.")
    settings = _settings(retrieval_model=model, device=device, dtype=dtype, offline=offline)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    labels: list[str] = []
    vectors = []
    if text:
        vectors.append(retrieval.embed_texts(text))
        labels += [f"text: {t}" for t in text]
    if image:
        vectors.append(retrieval.embed_images(_open_images(image, settings)).vectors)
        labels += [f"image: {p}" for p in image]
    import numpy as np

    matrix = np.concatenate(vectors)
    similarity = matrix @ matrix.T
    if as_json:
        _print_json(
            {
                "fingerprint": retrieval.fingerprint,
                "labels": labels,
                "vectors": matrix.round(6).tolist(),
                "cosine": similarity.round(6).tolist(),
            }
        )
        return
    table = Table(title=f"ITC cosine similarity ({retrieval.embedding_dim}-d, {retrieval.fingerprint})")
    table.add_column("")
    for index_ in range(len(labels)):
        table.add_column(str(index_), justify="right")
    for row, label in enumerate(labels):
        table.add_row(f"{row} {label}", *[f"{v:.3f}" for v in similarity[row]])
    console.print(table)


@model_app.command("match")
def model_match(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    texts: Annotated[list[str], typer.Argument(help="Candidate texts.")],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score texts against an image: ITC cosine (fast, indexable) and ITM match probability (precise)."""
    from blipsearch.models.retrieval import RetrievalModel

    settings = _settings(retrieval_model=model, device=device, dtype=dtype, offline=offline)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    pictures = _open_images([image], settings)
    embedded = retrieval.embed_images(pictures, return_vision_tokens=True)
    assert embedded.vision_tokens is not None
    itc = retrieval.embed_texts(texts) @ embedded.vectors[0]
    itm = retrieval.itm_scores(texts, vision_tokens=embedded.vision_tokens.expand(len(texts), -1, -1))
    order = sorted(range(len(texts)), key=lambda i: -float(itm[i]))
    results = [{"text": texts[i], "itm": float(itm[i]), "itc": float(itc[i])} for i in order]
    if as_json:
        _print_json({"image": str(image), "fingerprint": retrieval.fingerprint, "results": results})
        return
    table = Table(title=f"{image} ({retrieval.fingerprint})")
    table.add_column("text")
    table.add_column("ITM p(match)", justify="right")
    table.add_column("ITC cosine", justify="right")
    for row in results:
        table.add_row(str(row["text"]), f"{row['itm']:.4f}", f"{row['itc']:.4f}")
    console.print(table)


@model_app.command("caption")
def model_caption(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[str | None, typer.Option(help='Text to continue, e.g. "a picture of".')] = None,
    strategy: Annotated[str, typer.Option(help="greedy, beam or nucleus.")] = "beam",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=100)] = 20,
    seed: Annotated[int, typer.Option(help="Seed for nucleus sampling.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Caption images with the caption model."""
    from blipsearch.models.captioner import Captioner, CaptionOptions

    if strategy not in ("greedy", "beam", "nucleus"):
        raise BlipsearchError(f"Unknown caption strategy '{strategy}'; use greedy, beam or nucleus.")
    settings = _settings(caption_model=model, device=device, dtype=dtype, offline=offline)
    captioner = Captioner.load(settings.caption_model, settings)
    options = CaptionOptions(
        strategy=strategy,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        min_new_tokens=min(settings.caption_min_tokens, max_new_tokens),
        seed=seed,
    )
    captions = captioner.caption(_open_images(images, settings), prompt=prompt, options=options)
    if as_json:
        _print_json([{"image": str(p), "caption": c} for p, c in zip(images, captions, strict=True)])
        return
    for path, caption in zip(images, captions, strict=True):
        console.print(f"{path}: {caption}")


@model_app.command("ask")
def model_ask(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    question: Annotated[str, typer.Argument(help='Question, e.g. "what colour is the strap?"')],
    model: ModelOpt = None,
    device: DeviceOpt = None,
    dtype: DTypeOpt = None,
    offline: OfflineOpt = None,
) -> None:
    """Answer a question about an image (needs a VQA model: --model or BLIPSEARCH_VQA_MODEL)."""
    from blipsearch.models.registry import ModelSet

    settings = _settings(vqa_model=model, device=device, dtype=dtype, offline=offline)
    answer = ModelSet(settings).vqa.answer(_open_images([image], settings)[0], question)
    console.print(answer)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: known errors become one line on stderr, never a traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int | None) else 1
    except BlipsearchError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        if _log_level[0] == "DEBUG":
            logging.getLogger("blipsearch").exception("unexpected error")
        err_console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} (rerun with --log-level DEBUG for details; "
            "this is a bug, please report it)",
            highlight=False,
            soft_wrap=True,
        )
        return 70
    return 0


def run() -> NoReturn:
    sys.exit(main())
