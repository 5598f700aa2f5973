"""Per-model sections of the suite: image embedding, text-query encoding, ITM re-ranking.

Every section times the stock transformers way first (eager attention, fp32; a text query padded
to BLIP's 35 tokens as the original code pads it) and then blipsearch's fast variants on the
same inputs, so each figure has its baseline from the same run.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.subjects import Subject
from bench.timing import latency, samples, text_flops, vision_flops

log = logging.getLogger("bench")

QUERY = (
    "a red dress with white dots hanging on a wooden rack next to two pairs of blue running shoes "
    "and a small green handbag in a bright shop window on a sunny summer afternoon in the old city "
    "centre near the river"
)


def text_of_length(subject: Subject, tokens: int) -> str:
    """A natural-looking query that tokenizes to exactly `tokens` ids ([CLS] and [SEP] included)."""
    tokenizer = subject.processor.tokenizer
    words: list[str] = []
    for word in QUERY.split() * 8:
        length = len(tokenizer(" ".join([*words, word]))["input_ids"])
        if length <= tokens:
            words.append(word)
        if length == tokens:
            break
    text = " ".join(words)
    if len(tokenizer(text)["input_ids"]) != tokens:
        raise RuntimeError(f"could not build a {tokens}-token query")
    return text


def _stock_image_vectors(subject: Subject, pixels: torch.Tensor) -> torch.Tensor:
    hidden = subject.stock.vision_model(pixel_values=pixels).last_hidden_state
    return F.normalize(subject.stock.vision_proj(hidden[:, 0, :]), dim=-1)


def _stock_text_vectors(subject: Subject, texts: list[str]) -> torch.Tensor:
    encoded = subject.processor.tokenizer(
        texts, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    ).to(subject.device)
    hidden = subject.stock.text_encoder(
        input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
    ).last_hidden_state
    return F.normalize(subject.stock.text_proj(hidden[:, 0, :]), dim=-1)


def _stock_itm(subject: Subject, query: str, tokens: torch.Tensor) -> torch.Tensor:
    encoded = subject.processor.tokenizer(
        [query], padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    ).to(subject.device)
    count = tokens.shape[0]
    hidden = subject.stock.text_encoder(
        input_ids=encoded["input_ids"].expand(count, -1),
        attention_mask=encoded["attention_mask"].expand(count, -1),
        encoder_hidden_states=tokens,
        encoder_attention_mask=torch.ones(tokens.shape[:-1], dtype=torch.long, device=subject.device),
    ).last_hidden_state
    return subject.stock.itm_head(hidden[:, 0, :]).softmax(dim=-1)[:, 1]


def image_embedding(subject: Subject, count: int, gemm: float) -> dict[str, Any]:
    """Images per second from preprocessed tensors (the model's own cost, no decoding)."""
    device = subject.device
    pixels = torch.randn(count, 3, subject.image_size, subject.image_size, device=device)
    batch = 8 if device.type == "cpu" else 64
    flops = vision_flops(subject.config)
    rows: dict[str, dict[str, float]] = {}

    def record(name: str, fn: Any, repeats: int = 1) -> None:
        with torch.inference_mode():
            seconds = min(samples(fn, repeats=repeats, warmup=1, device=device))
        per_second = count / seconds
        rows[name] = {
            "images_per_s": round(per_second, 3),
            "pct_of_fp32_gemm_bound": round(100 * flops * per_second / (gemm * 1e9), 1),
        }
        log.info("image embedding, %s, %s: %.2f images/s", subject.name, name, per_second)

    record(
        "stock per image", lambda: [_stock_image_vectors(subject, pixels[i : i + 1]) for i in range(count)]
    )
    record(
        f"stock batched ({batch})",
        lambda: [_stock_image_vectors(subject, pixels[i : i + batch]) for i in range(0, count, batch)],
    )
    for name, model in subject.fast.items():
        record(name, lambda model=model: model.embed_images(pixels), repeats=2)
    return {"count": count, "gflop_per_image": round(flops / 1e9, 2), "variants": rows}


def text_encoding(subject: Subject, repeats: int, gemm: float) -> dict[str, Any]:
    """Batch-1 query latency at a typical (8) and BLIP's maximum (35) length; batch-64 throughput."""
    device = subject.device
    result: dict[str, Any] = {"latency": {}, "throughput_batch64": {}}
    timing: dict[str, Any] = {"repeats": repeats, "warmup": 3, "device": device}
    for length in (8, 35):
        text = text_of_length(subject, length)
        bound_ms = text_flops(subject.config, length) / (gemm * 1e9) * 1000
        rows: dict[str, Any] = {}
        with torch.inference_mode():
            rows["stock (padded to 35)"] = latency(
                samples(lambda text=text: _stock_text_vectors(subject, [text]), **timing)
            )
            for name, model in subject.fast.items():
                rows[name] = latency(
                    samples(
                        lambda model=model, text=text: model.embed_texts([text]),
                        repeats=repeats,
                        warmup=3,
                        device=device,
                    )
                )
        for row in rows.values():
            row["pct_of_fp32_gemm_bound"] = round(100 * bound_ms / row["p50_ms"], 1)
        log.info("text, %s, %d tokens: %s", subject.name, length, {n: r["p50_ms"] for n, r in rows.items()})
        result["latency"][f"{length} tokens"] = {
            "text": text,
            "fp32_gemm_bound_ms": round(bound_ms, 3),
            **rows,
        }
    texts = [f"{text_of_length(subject, 8)} {index}" for index in range(64)]
    with torch.inference_mode():
        stock = min(samples(lambda: _stock_text_vectors(subject, texts), repeats=2, warmup=1, device=device))
        result["throughput_batch64"]["stock (padded to 35)"] = round(64 / stock, 1)
        for name, model in subject.fast.items():
            seconds = min(
                samples(lambda model=model: model.embed_texts(texts), repeats=2, warmup=1, device=device)
            )
            result["throughput_batch64"][name] = round(64 / seconds, 1)
    return result


def itm_reranking(subject: Subject, ks: list[int], repeats: int, gemm: float) -> dict[str, Any]:
    """Re-ranking k candidates whose vision tokens are already computed (from the cache)."""
    device = subject.device
    query = text_of_length(subject, 8)
    reference = next(iter(subject.fast.values()))
    with torch.inference_mode():
        pixels = torch.randn(4, 3, subject.image_size, subject.image_size, device=device)
        base = reference.vision_tokens(pixels).float()
    result: dict[str, Any] = {"query_tokens": 8, "by_k": {}}
    for k in ks:
        tokens = base.repeat((k + 3) // 4, 1, 1)[:k].contiguous()
        bound_ms = k * text_flops(subject.config, 35, subject.vision_tokens) / (gemm * 1e9) * 1000
        rows: dict[str, Any] = {}
        with torch.inference_mode():
            expected = _stock_itm(subject, query, tokens).float().cpu().numpy()
            stock_call = partial(_stock_itm, subject, query, tokens)
            rows["stock (padded to 35)"] = latency(
                samples(stock_call, repeats=repeats, warmup=1, device=device)
            )
            for name, model in subject.fast.items():
                cast = tokens.to(model.dtype)
                rows[name] = latency(
                    samples(
                        lambda model=model, cast=cast: model.itm_scores(query, vision_tokens=cast),
                        repeats=repeats,
                        warmup=1,
                        device=device,
                    )
                )
                ours = model.itm_scores(query, vision_tokens=cast)
                rows[name]["max_abs_diff_vs_stock"] = float(np.abs(ours - expected).max())
        for row in rows.values():
            row["pct_of_fp32_gemm_bound"] = round(100 * bound_ms / row["p50_ms"], 1)
        result["by_k"][str(k)] = {"stock_fp32_gemm_bound_ms": round(bound_ms, 2), **rows}
        log.info("ITM, %s, k=%d: %s", subject.name, k, {n: r["p50_ms"] for n, r in rows.items()})
    return result
