"""Inference fast paths for BLIP's retrieval model, applied to a loaded transformers model in place.

Transformers runs BLIP's attention eagerly (scores materialised, softmax, a second matmul) and
projects every candidate's 577 vision tokens to keys and values in each of the twelve ITM
cross-attention layers, which is most of the cost of re-ranking. Three replacements, each proven
equal to the stock modules in tests/test_models_fast.py (bench/ measures what they buy):

- `scaled_dot_product_attention` for the vision encoder and the text encoder's self-attention;
- cross-attention computed in a factorised order when the text is short: per head,
  softmax(q (x Wk^T)^T) (x Wv^T) = softmax((q Wk) x^T) then (p x) Wv^T, so the per-candidate
  key/value projections of the L vision tokens (L x E x E) become skinny products that scale
  with the query length n instead;
- int8 dynamic quantisation of the linear layers (per-channel weights, fbgemm/x86 kernels) on the
  CPU, where a batch-1 query is bound by reading fp32 weights and the ViT by fp32 GEMM throughput.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.models.blip.modeling_blip import BlipAttention
from transformers.models.blip.modeling_blip_text import BlipTextSelfAttention

from blipsearch.errors import ConfigError, UnsupportedTransformersError

CrossAttentionOrder = Literal["auto", "factorized", "projected"]
CROSS_ATTENTION_ORDER: CrossAttentionOrder = "auto"
"""Tests pin one order to prove each equal to the stock module; `auto` picks the cheaper one."""

_UNQUANTIZED_SUFFIXES = ("crossattention.self.key", "crossattention.self.value")
"""The factorised cross-attention multiplies by these weights directly, so they stay float."""


class SdpaVisionAttention(BlipAttention):
    """BLIP's ViT self-attention through `scaled_dot_product_attention` (no [N, H, T, T] tensor kept)."""

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        batch, length, width = hidden_states.size()
        qkv = (
            self.qkv(hidden_states)
            .reshape(batch, length, 3, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        context = F.scaled_dot_product_attention(
            qkv[0],
            qkv[1],
            qkv[2],
            dropout_p=self.dropout.p if self.training else 0.0,
            scale=self.scale,
        )
        return self.projection(context.transpose(1, 2).reshape(batch, length, width)), None


def factorized_is_cheaper(query_length: int, key_length: int, head_dim: int) -> bool:
    """Projecting L vision tokens costs L*E*E per head set; the factorised order costs n*E*(d+L)."""
    return query_length * (head_dim + key_length) < key_length * head_dim


class SdpaTextSelfAttention(BlipTextSelfAttention):
    """The BERT-style attention of BLIP's text side (self and cross) without eager score tensors.

    With a key/value cache (caption generation) or in training it defers to the stock module.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if cache is not None or self.training or kwargs.get("past_key_values") is not None:
            context, _ = super().forward(
                hidden_states,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                cache=cache,
                **kwargs,
            )
            return context, None
        input_shape = hidden_states.shape[:-1]
        head_dim = self.attention_head_size
        query = self.query(hidden_states).view(*input_shape, -1, head_dim).transpose(1, 2)
        cross = encoder_hidden_states is not None
        # As in the stock module: cross-attention reads only `encoder_attention_mask`.
        mask = encoder_attention_mask if cross else attention_mask
        if mask is not None:
            mask = mask.to(query.dtype)
        if cross and _use_factorized(query.shape[-2], encoder_hidden_states.shape[-2], head_dim):  # type: ignore[union-attr]
            context = self._factorized(query, encoder_hidden_states, mask)  # type: ignore[arg-type]
        else:
            states = encoder_hidden_states if cross else hidden_states
            kv_shape = (*states.shape[:-1], -1, head_dim)  # type: ignore[union-attr]
            key = self.key(states).view(kv_shape).transpose(1, 2)
            value = self.value(states).view(kv_shape).transpose(1, 2)
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, scale=1.0 / math.sqrt(head_dim)
            )
        return context.transpose(1, 2).reshape(*input_shape, self.all_head_size), None

    def _factorized(
        self, query: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, heads, length, head_dim = query.shape
        width = states.shape[-1]
        key_weight = self.key.weight.view(heads, head_dim, width)
        value_weight = self.value.weight.view(heads, head_dim, width)
        # The key bias adds q.b_k to a whole row of scores, which softmax ignores.
        query_keys = torch.einsum("bhnd,hde->bhne", query, key_weight).reshape(batch, heads * length, width)
        scores = torch.bmm(query_keys, states.transpose(1, 2)).view(batch, heads, length, -1)
        scores = scores / math.sqrt(head_dim)
        if mask is not None:
            scores = scores + mask
        probs = scores.softmax(dim=-1).view(batch, heads * length, -1)
        mixed = torch.bmm(probs, states).view(batch, heads, length, width)
        context = torch.einsum("bhne,hde->bhnd", mixed, value_weight)
        if self.value.bias is not None:
            # Each row of probs sums to one, so the value bias passes through unchanged.
            context = context + self.value.bias.view(1, heads, 1, head_dim)
        return context


@contextmanager
def cross_attention_order(order: CrossAttentionOrder) -> Iterator[None]:
    """Fix the order for a while: an exported graph cannot choose one per call."""
    global CROSS_ATTENTION_ORDER
    before, CROSS_ATTENTION_ORDER = CROSS_ATTENTION_ORDER, order
    try:
        yield
    finally:
        CROSS_ATTENTION_ORDER = before


def _use_factorized(query_length: int, key_length: int, head_dim: int) -> bool:
    if CROSS_ATTENTION_ORDER != "auto":
        return CROSS_ATTENTION_ORDER == "factorized"
    return factorized_is_cheaper(query_length, key_length, head_dim)


TESTED_TRANSFORMERS = ("5.25", "5.26")
"""The transformers releases (from, up to but excluding) on which the swapped modules were proven
equal to the stock ones; pyproject.toml pins the same range. The swap reads private internals, so
a release outside it is refused rather than trusted to be merely slower or subtly different."""

_SWAPS: dict[type[nn.Module], tuple[type[nn.Module], tuple[str, ...]]] = {
    BlipAttention: (SdpaVisionAttention, ("qkv", "projection", "dropout", "num_heads", "head_dim", "scale")),
    BlipTextSelfAttention: (
        SdpaTextSelfAttention,
        ("query", "key", "value", "attention_head_size", "all_head_size"),
    ),
}
"""Each stock module, its replacement, and the instance attributes the replacement reads."""

_STOCK_TEXT_PARAMETERS = (
    "hidden_states",
    "attention_mask",
    "encoder_hidden_states",
    "encoder_attention_mask",
    "cache",
)
"""What `SdpaTextSelfAttention` passes on when it defers to the stock forward."""

_ESCAPE = "set attention=eager (BLIPSEARCH_ATTENTION=eager) to run transformers' own attention instead"


def check_transformers_version() -> None:
    """Refuse a transformers release outside `TESTED_TRANSFORMERS`."""
    installed = transformers.__version__
    low, high = TESTED_TRANSFORMERS
    release = re.match(r"(\d+)\.(\d+)", installed)
    if release is None or not _minor(low) <= _minor(release.group(0)) < _minor(high):
        raise UnsupportedTransformersError(
            f"The fused attention (blipsearch/models/fast.py) is tested on transformers >={low},<{high}, "
            f"but transformers {installed} is installed. Install a tested release "
            f"(pip install 'transformers>={low},<{high}') or {_ESCAPE}."
        )


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _check_structure(module: nn.Module, expected: tuple[str, ...]) -> None:
    missing = [name for name in expected if not hasattr(module, name)]
    if type(module) is BlipTextSelfAttention:
        parameters = inspect.signature(BlipTextSelfAttention.forward).parameters
        missing += [f"forward({name}=...)" for name in _STOCK_TEXT_PARAMETERS if name not in parameters]
    if missing:
        raise UnsupportedTransformersError(
            f"transformers {transformers.__version__}'s {type(module).__name__} lacks "
            f"{', '.join(missing)}, which the fused attention (blipsearch/models/fast.py, tested on "
            f"transformers >={TESTED_TRANSFORMERS[0]},<{TESTED_TRANSFORMERS[1]}) reads; {_ESCAPE}."
        )


def use_sdpa(model: nn.Module) -> int:
    """Swap BLIP's eager attention modules for the SDPA ones (same weights); returns how many.

    Every module is checked before the first is swapped, so a refusal leaves the model stock.
    """
    check_transformers_version()
    targets = [module for module in model.modules() if type(module) in _SWAPS]
    for module in targets:
        _check_structure(module, _SWAPS[type(module)][1])
    for module in targets:
        module.__class__ = _SWAPS[type(module)][0]
    return len(targets)


QuantizedPart = Literal["vision", "all"]


def quantize_int8(model: nn.Module, part: QuantizedPart = "all") -> int:
    """Int8 dynamic quantisation of the linear layers, in place; returns how many were quantised.

    `vision` takes the ViT only (image embedding and ITM's vision tokens); `all` adds the text
    side. As measured on the demo model (bench/results/), int8 vision keeps text-to-image top-10
    close to fp32's while int8 text loses much more agreement, because near-tied candidates swap
    places; so text stays fp32 unless asked for.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not name.endswith(_UNQUANTIZED_SUFFIXES)
        and (part == "all" or name.startswith("vision_model."))
    }
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao, but still the fastest
        # dependency-free int8 GEMM for x86 CPUs in torch 2.13.
        warnings.simplefilter("ignore")
        quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)
    return len(names)


def is_quantized(model: nn.Module) -> bool:
    return any(type(module).__module__.startswith("torch.ao.nn.quantized") for module in model.modules())


INT8_MIN_HIDDEN = 256
"""Int8 pays off at BLIP-base's width (768) and at the demo model's (256), as measured in
bench/results/; toy widths are overhead-bound."""


def resolve_quantize(
    setting: str, model: nn.Module, device: torch.device, dtype: torch.dtype
) -> QuantizedPart | None:
    """What to run in int8: `auto` means the ViT, on the CPU, in fp32 (a CPU with native bf16
    runs bf16 instead), for ViTs at least `INT8_MIN_HIDDEN` wide; `vision` and `all` are explicit
    (CPU only); `none` is no quantisation."""
    if setting == "none":
        return None
    if setting in ("vision", "all"):
        if device.type != "cpu":
            raise ConfigError(
                f"quantize={setting} runs on the CPU only; this model runs on {device.type} "
                "(use dtype=bfloat16 or float16 there, or quantize=none)."
            )
        if dtype != torch.float32:
            raise ConfigError(
                f"quantize={setting} quantises a float32 model; this one runs in "
                f"{str(dtype).removeprefix('torch.')} (set dtype=float32, or quantize=none)."
            )
        return "vision" if setting == "vision" else "all"
    config: Any = model.config
    wide = int(config.vision_config.hidden_size) >= INT8_MIN_HIDDEN
    return "vision" if device.type == "cpu" and dtype == torch.float32 and wide else None


def accelerate(
    model: nn.Module, device: torch.device, dtype: torch.dtype, *, attention: str, quantize: str
) -> str:
    """Apply the configured fast paths in place; returns the precision the model now runs in."""
    if attention == "sdpa":
        use_sdpa(model)
    part = resolve_quantize(quantize, model, device, dtype)
    if part is not None:
        quantize_int8(model, part)
        return "int8" if part == "all" else "int8-vision"
    return str(dtype).removeprefix("torch.")
