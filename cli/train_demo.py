"""`blipsearch train demo` and `train demo-capfilt`: the shipped demo model's recipe and its CapFilt
experiment, as commands whose defaults reproduce the shipped model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from blipsearch.cli.data import default_npm_cache
from blipsearch.cli.options import TrainSeedOpt
from blipsearch.cli.progress import training_bar

console = Console()
err_console = Console(stderr=True)

DEMO_TRAIN_STYLES = ("google", "emojione", "fluent-3d", "fluent-flat")
DEMO_STYLE_WEIGHTS = (2.0, 1.0, 1.0, 1.0)
"""The shipped model's styles and how often each is drawn (`DemoRecipe`'s defaults; a test holds the
two equal, since importing the recipe here would load torch for every `--help`)."""


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
    seed: TrainSeedOpt = 0,
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
        cache=cache if cache is not None else default_npm_cache(),
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

    with training_bar(err_console, enabled=True, total=None) as bar:

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
    seed: TrainSeedOpt = 0,
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

    from blipsearch.train.demo_capfilt import run_capfilt_experiment
    from blipsearch.train.demo_recipe import DemoRecipe

    log = logging.getLogger("blipsearch.train.demo")

    def report(phase: str, step: int, total: int, numbers: dict[str, float]) -> None:
        if step % 100 == 0 or step == total:
            text = " ".join(f"{key}={value:.4f}" for key, value in numbers.items())
            log.info("phase=%s step=%d/%d %s", phase, step, total, text)

    recipe = DemoRecipe.plain(
        out=out,
        cache=cache if cache is not None else default_npm_cache(),
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
