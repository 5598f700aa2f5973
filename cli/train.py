"""`blipsearch train`: fine-tune BLIP checkpoints with BLIP's own objectives (ITC+ITM, LM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from blipsearch.cli.context import session
from blipsearch.cli.options import TrainSeedOpt, print_json
from blipsearch.cli.progress import training_bar
from blipsearch.cli.train_demo import train_demo, train_demo_capfilt

console = Console()
err_console = Console(stderr=True)

train_app = typer.Typer(
    help="Fine-tune BLIP checkpoints on image-text pairs (CPU-sized; runs on GPU too).",
    no_args_is_help=True,
)

PairsArg = Annotated[
    Path | None,
    typer.Argument(
        help="TSV of image<TAB>caption lines (paths relative to the file); omit with --from-catalog.",
        metavar="[PAIRS_FILE]",
        show_default=False,
    ),
]
FromCatalogOpt = Annotated[
    bool,
    typer.Option(
        "--from-catalog",
        help="Train on the indexed images and their texts that CapFilt kept (noisy ones left out).",
    ),
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base", help="Checkpoint to start from (directory or hub id; default: the configured one)."
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Run directory: recipe, checkpoints, best model.")]
EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training pairs.")]
BatchOpt = Annotated[int, typer.Option("--batch", min=2, help="Pairs per forward pass.")]
AccumulateOpt = Annotated[
    int, typer.Option("--accumulate", min=1, help="Batches whose gradients add up to one optimizer step.")
]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (cosine schedule, warm-up).")]
StepsOpt = Annotated[int | None, typer.Option("--steps", min=1, help="Stop after this many optimizer steps.")]
CheckpointOpt = Annotated[
    int,
    typer.Option("--checkpoint-every", min=0, help="Write a resumable checkpoint every N steps (0: never)."),
]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the run directory's latest checkpoint.")
]
ValOpt = Annotated[
    float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of images held out for validation.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of text.")]


def _pairs(pairs_file: Path | None, from_catalog: bool, settings: Any) -> Any:
    from blipsearch.errors import InvalidInputError

    if (pairs_file is None) == (not from_catalog):
        raise InvalidInputError("Give a PAIRS_FILE or --from-catalog (one of them).")
    if pairs_file is not None:
        return pairs_file
    from blipsearch.storage.catalog import Catalog
    from blipsearch.train.catalog_pairs import catalog_pairs

    catalog = Catalog.open(settings)
    try:
        return catalog_pairs(catalog, settings)
    finally:
        catalog.close()


def _run(
    ctx: typer.Context,
    kind: str,
    pairs_file: Path | None,
    base: str | None,
    out: Path,
    as_json: bool,
    from_catalog: bool = False,
    **options: Any,
) -> None:
    from blipsearch.train.loop import TrainConfig

    settings = session(ctx).settings()
    pairs = _pairs(pairs_file, from_catalog, settings)
    default_base = settings.retrieval_model if kind == "retrieval" else settings.caption_model
    config = TrainConfig(
        base=base or default_base, out=out, device=settings.device, offline=settings.offline, **options
    )
    recipe = out / "recipe.json"
    if config.resume and recipe.is_file():  # continue with the run's own settings, not today's defaults
        recorded = json.loads(recipe.read_text())["config"]
        config = TrainConfig(**{**recorded, "out": out, "resume": True})
    with training_bar(err_console, enabled=not as_json, total=config.steps) as progress:
        if kind == "retrieval":
            from blipsearch.train.retrieval import RetrievalTrainer

            trainer: Any = RetrievalTrainer(config, pairs, progress=progress)
        else:
            from blipsearch.train.captioner import CaptionTrainer

            trainer = CaptionTrainer(config, pairs, progress=progress)
        history = trainer.fit()
    steps = [record for record in history if "loss" in record]
    summary = {
        "kind": kind,
        "run_dir": str(out),
        "best": str(out / "best"),
        "steps": trainer.step,
        "total_steps": trainer.total_steps,
        "best_metric": trainer.best_metric,
        "last": steps[-1] if steps else None,
        "validations": [record["validation"] for record in history if record.get("validation")],
    }
    if as_json:
        print_json(summary)
        return
    last = summary["last"] or {}
    losses = ", ".join(
        f"{key} {value:.4f}" for key, value in last.items() if key not in ("step", "epoch", "lr")
    )
    console.print(f"trained {trainer.step}/{trainer.total_steps} steps: {losses}", highlight=False)
    if trainer.best_metric is not None:
        console.print(f"best validation metric: {trainer.best_metric:.4f}", highlight=False)
    console.print(f"best model: {out / 'best'}", highlight=False)


@train_app.command("retrieval")
def train_retrieval(
    ctx: typer.Context,
    pairs_file: PairsArg = None,
    *,
    out: OutOpt,
    base: BaseOpt = None,
    epochs: EpochsOpt = 1,
    batch: BatchOpt = 8,
    accumulate: AccumulateOpt = 1,
    lr: LrOpt = 1e-5,
    steps: StepsOpt = None,
    checkpoint_every: CheckpointOpt = 0,
    resume: ResumeOpt = False,
    val_fraction: ValOpt = 0.0,
    seed: TrainSeedOpt = 0,
    from_catalog: FromCatalogOpt = False,
    alpha: Annotated[float, typer.Option("--alpha", help="Momentum distillation weight.")] = 0.4,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a retrieval checkpoint with ITC (momentum distillation) and ITM (hard negatives)."""
    _run(
        ctx,
        "retrieval",
        pairs_file,
        base,
        out,
        as_json,
        from_catalog=from_catalog,
        epochs=epochs,
        batch=batch,
        accumulate=accumulate,
        lr=lr,
        steps=steps,
        checkpoint_every=checkpoint_every,
        resume=resume,
        val_fraction=val_fraction,
        seed=seed,
        alpha=alpha,
    )


@train_app.command("captioner")
def train_captioner(
    ctx: typer.Context,
    pairs_file: PairsArg = None,
    *,
    out: OutOpt,
    base: BaseOpt = None,
    epochs: EpochsOpt = 1,
    batch: BatchOpt = 8,
    accumulate: AccumulateOpt = 1,
    lr: LrOpt = 1e-5,
    steps: StepsOpt = None,
    checkpoint_every: CheckpointOpt = 0,
    resume: ResumeOpt = False,
    val_fraction: ValOpt = 0.0,
    seed: TrainSeedOpt = 0,
    from_catalog: FromCatalogOpt = False,
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt before each caption (not scored).")] = (
        "a picture of "
    ),
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a caption checkpoint with the LM loss (label smoothing 0.1, prompt masked)."""
    _run(
        ctx,
        "captioner",
        pairs_file,
        base,
        out,
        as_json,
        from_catalog=from_catalog,
        epochs=epochs,
        batch=batch,
        accumulate=accumulate,
        lr=lr,
        steps=steps,
        checkpoint_every=checkpoint_every,
        resume=resume,
        val_fraction=val_fraction,
        seed=seed,
        prompt=prompt,
    )


train_app.command("demo")(train_demo)
train_app.command("demo-capfilt")(train_demo_capfilt)
