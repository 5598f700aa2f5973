"""`blipsearch train`: fine-tune BLIP checkpoints with BLIP's own objectives (ITC+ITM, LM)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEMO_TRAIN_STYLES = ("google", "emojione", "fluent-3d", "fluent-flat")
DEMO_STYLE_WEIGHTS = (2.0, 1.0, 1.0, 1.0)
"""The shipped model's styles and how often each is drawn (`DemoRecipe`'s defaults; a test holds the
two equal, since importing the recipe here would load torch for every `--help`)."""

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
SeedOpt = Annotated[int, typer.Option("--seed", help="Seeds data order, dropout and negative sampling.")]
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
        return catalog_pairs(catalog)
    finally:
        catalog.close()


def _run(
    kind: str,
    pairs_file: Path | None,
    base: str | None,
    out: Path,
    as_json: bool,
    from_catalog: bool = False,
    **options: Any,
) -> None:
    from blipsearch.cli import _settings
    from blipsearch.train.loop import TrainConfig

    settings = _settings()
    pairs = _pairs(pairs_file, from_catalog, settings)
    default_base = settings.retrieval_model if kind == "retrieval" else settings.caption_model
    config = TrainConfig(
        base=base or default_base, out=out, device=settings.device, offline=settings.offline, **options
    )
    recipe = out / "recipe.json"
    if config.resume and recipe.is_file():  # continue with the run's own settings, not today's defaults
        recorded = json.loads(recipe.read_text())["config"]
        config = TrainConfig(**{**recorded, "out": out, "resume": True})
    with _progress_bar(enabled=not as_json, total=config.steps) as progress:
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
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    last = summary["last"] or {}
    losses = ", ".join(
        f"{key} {value:.4f}" for key, value in last.items() if key not in ("step", "epoch", "lr")
    )
    console.print(f"trained {trainer.step}/{trainer.total_steps} steps: {losses}", highlight=False)
    if trainer.best_metric is not None:
        console.print(f"best validation metric: {trainer.best_metric:.4f}", highlight=False)
    console.print(f"best model: {out / 'best'}", highlight=False)


@contextmanager
def _progress_bar(
    *, enabled: bool, total: int | None
) -> Iterator[Callable[[int, int, dict[str, float]], None] | None]:
    """A live bar with the current losses on a terminal; nothing elsewhere (history.jsonl has it all)."""
    from blipsearch.cli_progress import live_bar

    with live_bar(err_console, enabled=enabled) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task("training", total=total)

        def update(step: int, steps: int, losses: dict[str, float]) -> None:
            text = " ".join(f"{key} {value:.3f}" for key, value in losses.items())
            bar.update(task, completed=step, total=steps, description=f"training {text}")

        yield update


@train_app.command("retrieval")
def train_retrieval(
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
    seed: SeedOpt = 0,
    from_catalog: FromCatalogOpt = False,
    alpha: Annotated[float, typer.Option("--alpha", help="Momentum distillation weight.")] = 0.4,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a retrieval checkpoint with ITC (momentum distillation) and ITM (hard negatives)."""
    _run(
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
    seed: SeedOpt = 0,
    from_catalog: FromCatalogOpt = False,
    prompt: Annotated[str, typer.Option("--prompt", help="Prompt before each caption (not scored).")] = (
        "a picture of "
    ),
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a caption checkpoint with the LM loss (label smoothing 0.1, prompt masked)."""
    _run(
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


@train_app.command("demo")
def train_demo(
    out: Annotated[Path, typer.Argument(help="Where the models, recipe, history and metrics go.")],
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="npm tarball cache (default ~/.cache/blipsearch/npm; fetched if empty)."
        ),
    ] = None,
    train_style: Annotated[
        list[str] | None,
        typer.Option(
            "--train-style",
            help="Emoji style(s) to train on, repeatable; the first names the classes (an emoji-datasource "
            "set: google or twitter); emojione, emojione-bw, fluent-3d, fluent-flat, google-blob and "
            "openmoji add drawings only (default: google, emojione, fluent-3d, fluent-flat, drawn 2:1:1:1).",
        ),
    ] = None,
    holdout: Annotated[str, typer.Option("--holdout", help="Style never trained on, measured.")] = "twitter",
    style_weight: Annotated[
        list[float] | None,
        typer.Option(
            "--style-weight",
            min=0.0,
            help="How often each --train-style is drawn, in the same order, among the styles that "
            "have the emoji (default: equally when --train-style is given).",
        ),
    ] = None,
    caption_style: Annotated[
        list[str] | None,
        typer.Option(
            "--caption-style",
            help="Phase 3 trains the captioner on these of the --train-style styles only, repeatable; the "
            "first training style must be among them (default: the first, the demo catalog's).",
        ),
    ] = None,
    itc_steps: Annotated[int, typer.Option("--itc-steps", min=1, help="Phase 1: ViT + ITC steps.")] = 5000,
    itc_batch: Annotated[int, typer.Option("--itc-batch", min=2, help="Phase 1: images per step.")] = 256,
    itm_steps: Annotated[int, typer.Option("--itm-steps", min=0, help="Phase 2: ITM steps.")] = 600,
    caption_steps: Annotated[int, typer.Option("--caption-steps", min=0, help="Phase 3: LM steps.")] = 800,
    corrupt: Annotated[
        float,
        typer.Option("--corrupt", min=0.0, max=0.9, help="CapFilt experiment: share of captions made wrong."),
    ] = 0.0,
    drop_captions: Annotated[
        Path | None,
        typer.Option(
            "--drop-captions", help="CapFilt experiment: JSON [[unified, caption], ...] to leave out."
        ),
    ] = None,
    captioner: Annotated[
        bool, typer.Option("--captioner/--no-captioner", help="Train the captioner.")
    ] = True,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Measure the saved models.")] = True,
    itm_neighbours: Annotated[
        int, typer.Option("--itm-neighbours", min=0, help="ITM batches mix in ITC-confused classes (0: off).")
    ] = 4,
    itm_lr: Annotated[float, typer.Option("--itm-lr", help="Phase 2 peak learning rate.")] = 5e-4,
    itm_text_lr: Annotated[
        float,
        typer.Option("--itm-text-lr", min=0.0, help="Phase 2 rate of the text layers' weights (0: frozen)."),
    ] = 2e-5,
    itm_keep_text: Annotated[
        float,
        typer.Option("--itm-keep-text", min=0.0, help="Phase 2 penalty on moving captions' ITC vectors."),
    ] = 200.0,
    itm_vision_layers: Annotated[
        int,
        typer.Option(
            "--itm-vision-layers",
            min=0,
            help="Phase 2 also trains the ViT's last N layers for ITM, holding the images' ITC vectors "
            "in place (0: ViT frozen).",
        ),
    ] = 1,
    itm_vision_lr: Annotated[
        float, typer.Option("--itm-vision-lr", min=0.0, help="Phase 2 rate of those ViT layers.")
    ] = 1e-4,
    itm_keep_image: Annotated[
        float,
        typer.Option("--itm-keep-image", min=0.0, help="Phase 2 penalty on moving images' ITC vectors."),
    ] = 200.0,
    itm_rank_weight: Annotated[
        float,
        typer.Option(
            "--itm-rank-weight",
            min=0.0,
            help="Phase 2 also trains the served re-ranking score (ITM log-odds + ITC cosine / temperature) "
            "to put each positive above its mined negatives, with this weight (0: BLIP's ITM loss only).",
        ),
    ] = 5.0,
    itm_curriculum: Annotated[
        float,
        typer.Option(
            "--itm-curriculum",
            min=0.0,
            max=1.0,
            help="Share of ITM steps over which negatives go from random to ITC-mined (0: mined throughout).",
        ),
    ] = 0.3,
    itc_from: Annotated[
        Path | None,
        typer.Option("--itc-from", help="Reuse phase 1 (ViT, projections) from an earlier run's OUT."),
    ] = None,
    teacher: Annotated[
        str,
        typer.Option(
            "--teacher",
            help="Phase 1 distils this pretrained CNN's caption distribution into the ViT "
            "(efficientnet-lite0, from the demo-train extra), or none.",
        ),
    ] = "efficientnet-lite0",
    distill_alpha: Annotated[
        float,
        typer.Option(
            "--distill-alpha", min=0.0, max=1.0, help="Share of the teacher's distribution in the ITC target."
        ),
    ] = 1.0,
    distill_temp: Annotated[
        float, typer.Option("--distill-temp", min=0.001, help="Temperature of the teacher's distribution.")
    ] = 0.1,
    distill_t2i: Annotated[
        bool,
        typer.Option(
            "--distill-t2i/--no-distill-t2i",
            help="Mix the teacher into both ITC directions (default: image-to-text only).",
        ),
    ] = False,
    seed: SeedOpt = 0,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu or cuda[:N]; images are drawn on the CPU either way.")
    ] = "auto",
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="bfloat16 autocast of the model forwards (default: on a CUDA GPU that has it; off on a "
            "CPU, where only AMX or AVX512-BF16 make it faster).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train the small demo BLIP (ViT from scratch, MiniLM text side) on emoji, then measure it.

    Three fixed-length phases (ITC, ITM, LM), so a seed reproduces the run. The defaults are the
    shipped model's recipe (four drawing styles, a pretrained CNN teaching phase 1, the ViT's last
    layer and the served score in phase 2; demo/model/README.md): about 90 minutes on a 2-core CPU
    with AVX-512, 1.7 to 2.5 hours with AVX2 only.
    """
    import logging
    import time

    from blipsearch.cli_data import _default_cache
    from blipsearch.errors import BlipsearchError
    from blipsearch.models.runtime import resolve_device
    from blipsearch.train.demo_model import DemoArchitecture
    from blipsearch.train.demo_recipe import DemoRecipe, DemoTrainer
    from blipsearch.train.teacher import TEACHERS

    log = logging.getLogger("blipsearch.train.demo")
    styles = tuple(train_style or DEMO_TRAIN_STYLES)
    weights = tuple(style_weight) if style_weight else (None if train_style else DEMO_STYLE_WEIGHTS)
    taught = None if teacher.lower() == "none" else teacher
    if weights is not None and len(weights) != len(styles):
        err_console.print(f"error: {len(weights)} --style-weight for {len(styles)} training styles.")
        raise typer.Exit(2)
    if holdout in styles:
        err_console.print(f"error: the held-out style {holdout!r} is also a training style.")
        raise typer.Exit(2)
    try:
        resolve_device(device)
    except BlipsearchError as exc:
        err_console.print(f"error: --device {device}: {str(exc).split(';')[0]}; use auto, cpu or cuda[:N].")
        raise typer.Exit(2) from None
    if taught is not None and taught not in TEACHERS:
        err_console.print(f"error: Unknown teacher {teacher!r}; use one of {', '.join(TEACHERS)} or none.")
        raise typer.Exit(2)
    recipe = DemoRecipe(
        out=out,
        cache=cache if cache is not None else _default_cache(),
        train_styles=styles,
        style_weights=weights,
        caption_styles=tuple(caption_style) if caption_style else styles[:1],
        holdout_style=holdout,
        arch=DemoArchitecture(),
        seed=seed,
        itc_steps=itc_steps,
        itc_batch=itc_batch,
        itm_steps=itm_steps,
        caption_steps=caption_steps,
        corrupt_fraction=corrupt,
        drop_captions=drop_captions,
        train_captioner=captioner,
        threads=threads,
        itm_neighbours=itm_neighbours,
        itm_curriculum=itm_curriculum,
        itm_text_lr=itm_text_lr,
        itm_keep_text=itm_keep_text,
        itm_lr=itm_lr,
        itm_vision_layers=itm_vision_layers,
        itm_vision_lr=itm_vision_lr,
        itm_keep_image=itm_keep_image,
        itm_rank_weight=itm_rank_weight,
        itc_from=itc_from,
        teacher=taught,
        distill_alpha=distill_alpha,
        distill_temp=distill_temp,
        distill_text_to_image=distill_t2i,
        device=device,
        bf16=bf16,
    )
    started = time.perf_counter()
    last: dict[str, float] = {}

    def report(phase: str, step: int, total: int, numbers: dict[str, float]) -> None:
        if step % 100 == 0 or step == total:
            now = time.perf_counter()
            text = " ".join(f"{key}={value:.4f}" for key, value in numbers.items())
            log.info("phase=%s step=%d/%d %s elapsed_s=%.0f", phase, step, total, text, now - started)
            last[phase] = now

    with _progress_bar(enabled=True, total=None) as bar:

        def progress(phase: str, step: int, total: int, numbers: dict[str, float]) -> None:
            report(phase, step, total, numbers)
            if bar is not None:
                bar(step, total, {"phase": float(("itc", "itm", "lm").index(phase)), **numbers})

        trainer = DemoTrainer(recipe, progress)
        trainer.run()
    console.print(f"trained in {time.perf_counter() - started:.0f} s: {out}", highlight=False)
    if evaluate:
        from blipsearch.train.demo_card import write_model_card
        from blipsearch.train.demo_eval import evaluate_demo_model

        named = [*recipe.train_styles, recipe.holdout_style]
        measured = [s for s in dict.fromkeys(named) if s in trainer.classes.records]
        evaluate_demo_model(out, trainer.classes, measured, recipe.prompt, captions=recipe.train_captioner)
        card = write_model_card(out)
        console.print(f"measured; model card: {card}", highlight=False)


@train_app.command("demo-capfilt")
def train_demo_capfilt(
    out: Annotated[
        Path, typer.Argument(help="Experiment folder: noisy/, cleaned/, flagged.json, capfilt.json.")
    ],
    cache: Annotated[Path | None, typer.Option("--cache", help="npm tarball cache.")] = None,
    corrupt: Annotated[
        float, typer.Option("--corrupt", min=0.01, max=0.9, help="Share of training captions made wrong.")
    ] = 0.3,
    itc_steps: Annotated[int, typer.Option("--itc-steps", min=1, help="ITC steps of each run.")] = 500,
    itm_steps: Annotated[int, typer.Option("--itm-steps", min=1, help="ITM steps of each run.")] = 400,
    seed: SeedOpt = 0,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    rule: Annotated[
        str,
        typer.Option(
            "--filter", help="itm (BLIP's: ITM below 0.5) or itc-rank (own image outside ITC top 5)."
        ),
    ] = "itm",
    reuse_noisy: Annotated[
        bool, typer.Option("--reuse-noisy", help="Keep a finished noisy run in OUT/noisy.")
    ] = False,
) -> None:
    """BLIP's CapFilt experiment: train on corrupted captions, filter with ITM, train again, compare.

    Both runs use the plain recipe (Noto alone, no teacher, BLIP's ITM loss), as the experiment in the
    model card was measured."""
    import logging

    from blipsearch.cli_data import _default_cache
    from blipsearch.train.demo_capfilt import run_capfilt_experiment
    from blipsearch.train.demo_recipe import DemoRecipe

    log = logging.getLogger("blipsearch.train.demo")

    def report(phase: str, step: int, total: int, numbers: dict[str, float]) -> None:
        if step % 100 == 0 or step == total:
            text = " ".join(f"{key}={value:.4f}" for key, value in numbers.items())
            log.info("phase=%s step=%d/%d %s", phase, step, total, text)

    recipe = DemoRecipe.plain(
        out=out,
        cache=cache if cache is not None else _default_cache(),
        seed=seed,
        itc_steps=itc_steps,
        itm_steps=itm_steps,
        caption_steps=0,
        corrupt_fraction=corrupt,
        train_captioner=False,
        threads=threads,
    )
    result = run_capfilt_experiment(recipe, report, rule=rule, reuse_noisy=reuse_noisy)
    caught = result["filter"]
    console.print(
        f"filter: {caught['caught']} of {caught['corrupted']} corruptions caught "
        f"(precision {caught['precision']:.1%}, recall {caught['recall']:.1%}); {out / 'capfilt.json'}",
        highlight=False,
    )
