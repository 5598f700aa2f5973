"""BLIP's training objectives as pure functions on tensors (Li et al. 2022, arXiv:2201.12086).

Each function states the formula it implements, so that a reader can check it against the paper
and against BLIP's reference code (`models/blip_retrieval.py`, `models/blip.py`). Nothing here
touches a model except `momentum_update` and `make_momentum_model`, which only read and write
parameters.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

TEMP_MIN = 0.001
TEMP_MAX = 0.5
"""BLIP clamps the learned temperature to this range after every step (`self.temp.clamp_`)."""

IGNORE_INDEX = -100
"""Label value that `cross_entropy` skips: padding and prompt tokens."""


def clamp_temperature(temp: torch.Tensor) -> torch.Tensor:
    """tau <- clip(tau, 0.001, 0.5), in place, as BLIP does: a tiny tau blows up the logits."""
    with torch.no_grad():
        temp.clamp_(TEMP_MIN, TEMP_MAX)
    return temp


def itc_targets(sim_m: torch.Tensor, alpha: float, positives: torch.Tensor) -> torch.Tensor:
    """Soft targets q = alpha * softmax(s_m) + (1 - alpha) * y (the paper's momentum distillation).

    `positives` is y: the one-hot ground truth, or, when one image has several captions in the
    batch, every pair of the same image spread evenly (BLIP's `idx` variant for retrieval).
    """
    return alpha * F.softmax(sim_m, dim=1) + (1.0 - alpha) * positives


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-mean_i sum_j q[i,j] log softmax(s)[i,j]: cross-entropy against a distribution per row."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def same_image_mask(image_ids: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """Boolean [B, B]: True where row and column show the same image (the diagonal at least)."""
    if image_ids is None:
        return torch.eye(size, dtype=torch.bool, device=device)
    ids = image_ids.to(device).view(-1, 1)
    return ids == ids.t()


def itc_loss(
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    image_feat_m: torch.Tensor,
    text_feat_m: torch.Tensor,
    temp: torch.Tensor | float,
    alpha: float,
    image_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image-text contrastive loss with momentum distillation.

    s_i2t = v . t^T / tau and s_t2i = t . v^T / tau on L2-normalised features, tau clamped to
    [0.001, 0.5]; the momentum encoder's similarities s_m give the soft targets
    q = alpha * softmax(s_m) + (1 - alpha) * y, and

        L_itc = 1/2 * ( -mean_i sum_j q_i2t[i,j] log softmax(s_i2t)[i,j]
                        -mean_i sum_j q_t2i[i,j] log softmax(s_t2i)[i,j] ).

    Features are expected normalised already (BLIP normalises right after the projection).
    `image_ids` marks pairs of the same image as positives too, so that two captions of one
    picture in a batch are not pushed apart.
    """
    tau = torch.as_tensor(temp, dtype=image_feat.dtype, device=image_feat.device).clamp(TEMP_MIN, TEMP_MAX)
    sim_i2t = image_feat @ text_feat.t() / tau
    sim_t2i = text_feat @ image_feat.t() / tau
    positives = same_image_mask(image_ids, image_feat.shape[0], image_feat.device).to(sim_i2t.dtype)
    positives = positives / positives.sum(dim=1, keepdim=True)
    with torch.no_grad():
        sim_i2t_m = image_feat_m @ text_feat_m.t() / tau
        sim_t2i_m = text_feat_m @ image_feat_m.t() / tau
        targets_i2t = itc_targets(sim_i2t_m, alpha, positives)
        targets_t2i = itc_targets(sim_t2i_m, alpha, positives)
    loss_i2t = soft_cross_entropy(sim_i2t, targets_i2t)
    loss_t2i = soft_cross_entropy(sim_t2i, targets_t2i)
    return (loss_i2t + loss_t2i) / 2


def _sample_rows(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    totals = weights.sum(dim=1)
    if bool((totals <= 0).any()):
        raise ValueError(
            "A row has no negative to sample: every pair in the batch shows the same image. "
            "Hard negatives need at least two different images per batch."
        )
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_hard_negatives(
    sim_i2t: torch.Tensor,
    sim_t2i: torch.Tensor,
    generator: torch.Generator | None = None,
    image_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM hard negative mining: P(neg = j | i) = softmax(s_i)[j], positives set to 0.

    Returns (text index for each image, image index for each text). A negative that is similar
    to the query by ITC is the most informative one for the matching head, so it is sampled
    more often, but never the positive itself: the diagonal, and with `image_ids` every pair of
    the same picture, gets weight zero. Sampling uses `generator` so a run is reproducible and
    its state can be checkpointed.
    """
    positives = same_image_mask(image_ids, sim_i2t.shape[0], sim_i2t.device)
    weights_i2t = F.softmax(sim_i2t.float(), dim=1).masked_fill(positives, 0.0)
    weights_t2i = F.softmax(sim_t2i.float(), dim=1).masked_fill(positives.t(), 0.0)
    # Rows whose softmax underflowed to zero everywhere but the positive: uniform over negatives.
    for weights in (weights_i2t, weights_t2i):
        empty = weights.sum(dim=1) <= 0
        if bool(empty.any()):
            weights[empty] = (~positives[empty]).to(weights.dtype)
    device = generator.device if generator is not None else weights_i2t.device
    text_for_image = _sample_rows(weights_i2t.to(device), generator).to(sim_i2t.device)
    image_for_text = _sample_rows(weights_t2i.to(device), generator).to(sim_i2t.device)
    return text_for_image, image_for_text


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_itm = CE(itm_head(h_cls), y), y = 1 for matched pairs and 0 for the mined negatives."""
    return F.cross_entropy(logits.float(), labels)


def served_rank_loss(
    itm_logits: torch.Tensor, itc_similarity: torch.Tensor, itc_weight: float, negatives: int
) -> torch.Tensor:
    """Pairwise logistic loss on the score the service re-ranks by (`search.fusion.rerank_scores`:
    ITM log-odds + `itc_weight` x ITC cosine), each positive against its `negatives` wrong partners.

    Rows are `[positives; negatives x ...]` in blocks of the positives' count. BLIP's binary ITM loss
    asks for confident log-odds on every pair, including pairs ITC already orders right; this one asks
    the re-ranked order to be right, so ITM learns what ITC misses and stays quiet where it is sure."""
    served = (itm_logits[:, 1] - itm_logits[:, 0]) + itc_weight * itc_similarity
    blocks = served.view(negatives + 1, -1)
    return F.softplus(blocks[1:] - blocks[0]).mean()


def itc_drift(now: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """How far ITC vectors moved in phase 2: mean squared distance of the unit vectors (2 - 2 cos), the
    measure both phase-2 penalties hold, the captions' and the images'."""
    return (F.normalize(now, dim=-1) - F.normalize(then, dim=-1)).pow(2).sum(1).mean()


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int = 0) -> torch.Tensor:
    """Targets for the LM loss: the tokens themselves, padding and the prompt set to -100.

    BLIP's captioner is trained on "a picture of " + caption but only the caption is scored
    (`decoder_targets[:, :self.prompt_length] = -100`): the prompt is given, not predicted.
    """
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    if prompt_length > 0:
        labels[:, :prompt_length] = IGNORE_INDEX
    return labels


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Teacher-forced LM loss with label smoothing, as BLIP's decoder is trained.

    L_lm = -mean over scored positions t of sum_k q_t[k] log p(k | w_<t, image), where
    q_t = (1 - eps) * onehot(w_t) + eps / V (eps = 0.1). `logits[:, t]` predicts token t + 1, so
    logits drop their last position and labels their first (the BOS token, never predicted).
    """
    shifted = logits[:, :-1, :].contiguous().float()
    targets = labels[:, 1:].contiguous()
    return F.cross_entropy(
        shifted.view(-1, shifted.shape[-1]),
        targets.view(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
    )


def make_momentum_model(model: nn.Module) -> nn.Module:
    """The momentum (EMA) encoder: a deep copy that never receives gradients.

    It starts equal to the online model (BLIP's `copy_params`) and only moves through
    `momentum_update`, giving the slowly changing targets that momentum distillation needs.
    """
    model_m = copy.deepcopy(model)
    for parameter in model_m.parameters():
        parameter.requires_grad_(False)
    return model_m


@torch.no_grad()
def momentum_update(model: nn.Module, model_m: nn.Module, m: float = 0.995) -> None:
    """theta_m <- m * theta_m + (1 - m) * theta, parameter by parameter (BLIP's `_momentum_update`)."""
    for parameter, parameter_m in zip(model.parameters(), model_m.parameters(), strict=True):
        parameter_m.data.mul_(m).add_(parameter.data, alpha=1.0 - m)
