"""The AU-guided loss: cross-entropy + lambda * (1 - cosine(attention, AU map)), the second term averaged
over the samples that have a map (lambda = 0 is the vanilla baseline)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def alignment_cosine(attention: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine between attention (N, h, w) and AU maps (N, H, W) pooled to (h, w)."""
    target = F.adaptive_avg_pool2d(maps.unsqueeze(1), attention.shape[-2:]).squeeze(1)
    return F.cosine_similarity(attention.flatten(1), target.flatten(1), dim=1, eps=1e-8)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None):
    """Cross-entropy against target distributions (N, K); per-sample weights optional."""
    per_sample = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights).sum() / weights.sum()


def au_guided_loss(logits, attention, targets, maps, valid, lam: float, weights=None):
    """Returns (total, ce, alignment term, mean cosine over valid samples)."""
    ce = soft_cross_entropy(logits, targets, weights)
    if valid.any():
        cos = alignment_cosine(attention[valid], maps[valid])
        align = (1 - cos).mean()
        mean_cos = cos.detach().mean()
    else:
        align = logits.new_zeros(())
        mean_cos = logits.new_full((), float("nan"))
    return ce + lam * align, ce.detach(), align.detach(), mean_cos
