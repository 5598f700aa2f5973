"""Seconds per step of the demo recipe's three phases, float32 against bfloat16 autocast.

The 90-minute bound of `blipsearch train demo` is set on 2-core CPUs whose vector units differ
(AVX2, AVX-512, AVX512-BF16, AMX), so what `--bf16` buys has to be measured per machine. Each
phase runs its real code (`DemoTrainer.train_itc`, `train_itm`, `train_caption`) for a few steps
on the demo architecture and the Noto images, float32 first (the baseline) then bfloat16, in the
same process. A step's work does not depend on how many styles the images come from, and the
teacher adds only one small matrix product to it, so the run trains on Noto alone without the
teacher (`DemoRecipe.plain`), with the shipped ITM options.

    python bench/demo_training.py --cache /tmp/bcache      # ~6 minutes on an AVX-512 CPU
    python bench/demo_training.py --cache /tmp/bcache --itc-steps 6 --itm-steps 4 --caption-steps 4
        # on an AVX2-only CPU, where torch emulates bfloat16 and a step is many times slower
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_report
from timing import gemm_gflops

from blipsearch.machine import cpu_has_native_bf16

PHASES = (("itc", "train_itc"), ("itm", "train_itm"), ("lm", "train_caption"))


def seconds_per_step(
    work: Path, cache: Path, device: str, bf16: bool, steps: dict[str, int]
) -> dict[str, float]:
    from blipsearch.train.demo_recipe import DemoRecipe, DemoTrainer

    recipe = DemoRecipe.plain(
        out=work / ("bf16" if bf16 else "fp32"),
        cache=cache,
        itc_steps=steps["itc"],
        itm_steps=steps["itm"],
        caption_steps=steps["lm"],
        validate_every=0,
        itm_vision_layers=DemoRecipe.itm_vision_layers,
        itm_rank_weight=DemoRecipe.itm_rank_weight,
        device=device,
        bf16=bf16,
    )
    trainer = DemoTrainer(recipe)
    for _, method in PHASES:
        getattr(trainer, method)()
    return {phase: round(trainer.seconds[phase] / steps[phase], 4) for phase, _ in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="npm tarball cache (fetched if empty)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--itc-steps", type=int, default=30)
    parser.add_argument("--itm-steps", type=int, default=20)
    parser.add_argument("--caption-steps", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    steps = {"itc": args.itc_steps, "itm": args.itm_steps, "lm": args.caption_steps}
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="demo-training-bench-") as work:
        fp32 = seconds_per_step(Path(work), args.cache, args.device, False, steps)
        bf16 = seconds_per_step(Path(work), args.cache, args.device, True, steps)
    speedup = {phase: round(fp32[phase] / bf16[phase], 2) for phase in fp32}
    data: dict[str, Any] = {
        "device": args.device,
        "native_bf16": cpu_has_native_bf16() if device.type == "cpu" else None,
        "gemm_fp32_gflops": round(gemm_gflops(device), 1),
        "gemm_bf16_gflops": round(gemm_gflops(device, torch.bfloat16), 1),
        "steps": steps,
        "seconds_per_step": {"fp32": fp32, "bf16": bf16},
        "bf16_speedup": speedup,
    }
    rows = "\n".join(
        f"| {phase} | {steps[phase]} | {fp32[phase]:.3f} | {bf16[phase]:.3f} | {speedup[phase]:.2f}x |"
        for phase in fp32
    )
    markdown = (
        f"Device {args.device}; CPU with native bfloat16 (AVX512-BF16 or AMX): {data['native_bf16']}; "
        f"GEMM 2048^3 {data['gemm_fp32_gflops']} GFLOP/s fp32, {data['gemm_bf16_gflops']} bf16.\n\n"
        "| phase | steps | s/step fp32 | s/step bf16 | bf16 speed-up |\n|---|---|---|---|---|\n" + rows
    )
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    json_path, md_path = write_report(f"demo_training{suffix}", data, markdown)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
