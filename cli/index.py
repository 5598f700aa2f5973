"""`blipsearch index ...`: build, inspect, verify and rebuild the catalog and vector indexes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from blipsearch.cli.context import session
from blipsearch.cli.options import DatabaseUrlOpt, DataDirOpt, JsonOpt, RetrievalModelOpt, print_json
from blipsearch.settings import Settings

console = Console()

KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")


class _PathIsRun(TyperGroup):
    """`blipsearch index PATH` means `blipsearch index run PATH`; the other words are subcommands.

    A folder literally named like a subcommand is reached as `./status`.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


index_app = typer.Typer(
    cls=_PathIsRun,
    help="Index an image folder or catalog manifest: `blipsearch index PATH`; also status, verify, rebuild.",
    no_args_is_help=True,
)


def _with_catalog(
    ctx: typer.Context, data_dir: Path | None, database_url: str | None, read: Callable[[Settings, Any], Any]
) -> Any:
    """Run a read-only maintenance function on the data directory's catalog, then close it."""
    from blipsearch.storage.catalog import Catalog

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url)
    catalog = Catalog.open(settings)
    try:
        return read(settings, catalog)
    finally:
        catalog.close()


@index_app.command("run")
def index_run(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A folder of images (recursive) or a .csv/.jsonl manifest.")],
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    model: RetrievalModelOpt = None,
    captions: Annotated[bool, typer.Option("--captions", help="Store a generated caption per item.")] = False,
    caption_model: Annotated[
        str | None, typer.Option("--caption-model", help="Captioning checkpoint.")
    ] = None,
    index_kind: Annotated[
        str | None, typer.Option("--index-kind", help="auto, flat, hnsw, ivf or ivfpq (default: setting).")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Delete items whose file left the folder or manifest (else: missing)."),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Decode failed files again even if they did not change.")
    ] = False,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Descend into symlinked folders.")
    ] = False,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Index dot-files and dot-folders.")
    ] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Decode threads.", min=1, max=64)] = None,
    refetch_remote: Annotated[
        bool,
        typer.Option(
            "--refetch-remote",
            help="Fetch images named by URL again even if embedded (changed bytes are re-embedded).",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local: threads and the model in this process; ray: read and embed on a Ray cluster "
            "(extra `distributed`), commit here.",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="--engine ray: the cluster to join (unset: start a local one)."),
    ] = None,
    gpus_per_worker: Annotated[
        float | None,
        typer.Option("--gpus-per-worker", help="--engine ray: GPUs per embedding actor (0: CPUs).", min=0),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option("--ray-workers", help="--engine ray: embedding actors (default: by cluster).", min=1),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index a folder or manifest: new and changed images are embedded, unchanged ones skipped.

    Safe to interrupt and re-run: committed work is kept and the next run resumes. One writer per
    data directory at a time.
    """
    from blipsearch.errors import InvalidInputError
    from blipsearch.indexer.pipeline import Indexer, IndexOptions
    from blipsearch.indexer.progress import Progress

    if index_kind is not None and index_kind not in KINDS:
        raise InvalidInputError(f"--index-kind must be one of {', '.join(KINDS)}, not {index_kind!r}.")
    if engine not in ("local", "ray"):
        raise InvalidInputError(f"--engine must be local or ray, not {engine!r}.")
    settings = session(ctx).settings(
        data_dir=data_dir,
        database_url=database_url,
        retrieval_model=model,
        caption_model=caption_model,
        decode_workers=workers,
        ray_address=ray_address,
        ray_gpus_per_worker=gpus_per_worker,
        ray_workers=ray_workers,
    )
    indexer = Indexer(settings, progress=Progress(enabled=not no_progress and not as_json))
    ray_engine = None
    if engine == "ray":
        from blipsearch.indexer.ray_engine import RayEngine

        ray_engine = indexer.engine = RayEngine(settings, indexer.model)
    # Ray's driver thread prints worker deaths ("(raylet) A worker died ...") on sys.stdout; stdout
    # carries the summary (or --json) alone, so during the run Ray's chatter goes to stderr.
    quiet: contextlib.AbstractContextManager[object] = (
        contextlib.redirect_stdout(sys.stderr) if ray_engine is not None else contextlib.nullcontext()
    )
    try:
        with quiet:
            try:
                report = indexer.run(
                    path,
                    IndexOptions(
                        captions=captions,
                        prune=prune,
                        retry_failed=retry_failed,
                        follow_symlinks=follow_symlinks,
                        include_hidden=include_hidden,
                        refetch_remote=refetch_remote,
                        index_kind=index_kind,
                    ),
                )
            finally:
                if ray_engine is not None:
                    ray_engine.close()
    finally:
        indexer.catalog.close()
    if as_json:
        print_json(report.as_dict())
        return
    _print_report(report.as_dict())


def _print_report(data: dict[str, Any]) -> None:
    table = Table(title=f"Indexed {data['source']}", show_header=False)
    rows = [
        ("files seen", data["seen"]),
        ("embedded", data["embedded"]),
        ("reused (identical bytes)", data["reused"]),
        ("unchanged", data["unchanged"]),
        ("metadata updated", data["metadata_updated"]),
        ("captioned", data["captioned"]),
        ("failed", data["failed"]),
        ("missing", data["missing"]),
        ("pruned", data["pruned"]),
        ("ignored (not an image suffix)", data["ignored_files"]),
        ("hidden skipped", data["skipped_hidden"]),
        ("symlinks skipped", data["skipped_symlinks"]),
        ("index generation", data["generation"]),
        ("items in index", data["indexed_total"]),
        ("time", f"{data['seconds']:.1f} s ({data['images_per_second']:.1f} images/s embedded)"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    for reason, count in sorted(data["failures"].items(), key=lambda kv: -kv[1]):
        console.print(f"  failed {count}x: {reason}", highlight=False)
    for row in data["rejected_rows"][:20]:
        console.print(f"  [yellow]skipped row[/] {row}", highlight=False)
    for name, why in data["rebuilt"].items():
        console.print(f"  rebuilt {name} index: {why}", highlight=False)


@index_app.command("status")
def index_status(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Items by status, the committed index generations, and how far behind the catalog they are."""
    from blipsearch.indexer.maintenance import index_status as status

    data = _with_catalog(ctx, data_dir, database_url, status)
    if as_json:
        print_json(data)
        return
    console.print(f"catalog {data['catalog']}  (last change {data['last_change_id']})", highlight=False)
    console.print("items: " + ", ".join(f"{k} {v}" for k, v in data["items"].items()))
    for name, info in data["indexes"].items():
        if info.get("kind") == "pgvector":
            built = ", ".join(f"{i['name']} ({'valid' if i['valid'] else 'INVALID'})" for i in info["hnsw"])
            console.print(
                f"{name}: pgvector, {info['vectors']} vectors, HNSW {built or 'none yet (exact scans)'}",
                highlight=False,
            )
            continue
        if info["state"] in ("absent", "corrupt"):
            console.print(f"{name} index: {info['state']} {info.get('reason', '')}", highlight=False)
            continue
        console.print(
            f"{name} index: generation {info['generation']}, {info['kind']}, {info['vectors']} vectors, "
            f"{info['state']} ({info['items_changed_since']} items changed since), "
            f"model {info['model_fingerprint']}",
            highlight=False,
        )
    if len(data["indexed_by_model"]) > 1:
        console.print(f"[yellow]items embedded by several models:[/] {data['indexed_by_model']}")
    for failure in data["failures"][:10]:
        console.print(f"  failed #{failure['id']}: {failure['error']}", highlight=False)


@index_app.command("verify")
def index_verify(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that the catalog and the committed indexes agree; exit 1 when they do not."""
    from blipsearch.indexer.maintenance import verify

    report = _with_catalog(ctx, data_dir, database_url, verify)
    if as_json:
        print_json(report.as_dict())
    else:
        for key, value in report.checked.items():
            console.print(f"{key}: {value}")
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
        for problem in report.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
        console.print("[green]OK[/]: catalog and indexes agree" if report.ok else "[red]NOT OK[/]")
    if not report.ok:
        raise typer.Exit(1)


@index_app.command("rebuild")
def index_rebuild(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
    model: RetrievalModelOpt = None,
    index_kind: Annotated[
        str | None, typer.Option("--index-kind", help="auto, flat, hnsw, ivf or ivfpq.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build both indexes from the embeddings stored in SQL (no images read, no model run)."""
    from blipsearch.errors import InvalidInputError
    from blipsearch.indexer.pipeline import Indexer
    from blipsearch.storage.store_choice import writer_lock

    if index_kind is not None and index_kind not in KINDS:
        raise InvalidInputError(f"--index-kind must be one of {', '.join(KINDS)}, not {index_kind!r}.")
    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url, retrieval_model=model)
    indexer = Indexer(settings)
    try:
        with writer_lock(settings, indexer.catalog, "index rebuild"):
            data = indexer.open_store(index_kind).rebuild()
    finally:
        indexer.catalog.close()
    if as_json:
        print_json(data)
        return
    if data["backend"] == "pgvector":
        console.print(
            f"rebuilt pgvector rows: {data['image_vectors']} image and {data['text_vectors']} text vectors, "
            f"HNSW {', '.join(data['indexes_built'])}",
            highlight=False,
        )
        return
    console.print(
        f"rebuilt generation {data['generation']}: images {data['images']['kind']} "
        f"({data['images']['vectors']} vectors), "
        f"texts {data['texts']['kind']} ({data['texts']['vectors']} vectors)",
        highlight=False,
    )
