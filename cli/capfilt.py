"""`blipsearch capfilt`: BLIP's caption-and-filter bootstrapping over the catalog's texts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.options import CatalogUrlOpt, DataDirOpt, IndexedModelOpt, print_json

console = Console()


def capfilt(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    database_url: CatalogUrlOpt = None,
    model: IndexedModelOpt = None,
    threshold: Annotated[
        float, typer.Option("--threshold", help="ITM match probability below which a text is noisy.")
    ] = 0.5,
    synthetic: Annotated[
        int,
        typer.Option("--synthetic", min=0, max=8, help="Synthetic captions per image (nucleus sampling)."),
    ] = 1,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="At most this many items.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed; equal seeds repeat a run.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write synthetic captions for indexed images and mark noisy texts with ITM (originals kept)."""
    from blipsearch.indexer.capfilt import CapFilt
    from blipsearch.models.captioner import Captioner
    from blipsearch.models.retrieval import RetrievalModel

    settings = session(ctx).settings(data_dir=data_dir, database_url=database_url, retrieval_model=model)
    retrieval = RetrievalModel.load(settings.retrieval_model, settings)
    captioner = Captioner.load(settings.caption_model, settings)
    runner = CapFilt(settings, retrieval, captioner)
    try:
        report = runner.run(synthetic_per_image=synthetic, threshold=threshold, limit=limit, seed=seed)
    finally:
        runner.catalog.close()
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"{report.items} items, {report.synthetic_written} synthetic captions written, "
        f"{report.texts_scored} texts scored: {report.noisy_original} noisy originals, "
        f"{report.noisy_synthetic} noisy synthetic (threshold {report.threshold}); "
        f"{report.skipped} skipped (image unreadable), {report.seconds:.1f}s",
        highlight=False,
    )
