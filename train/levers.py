"""Optional training levers of the recipe, each off by default and switched on by a FitConfig field:

- EMA: an exponential moving average of the weights (and BatchNorm statistics), kept beside the raw
  weights; when on, it is what is validated, selected and exported (`ema_decay`).
- mixup of image *and* AU map: two faces blended with one Beta-drawn weight; targets, sample weights and
  AU maps are blended with the same weight, so the alignment term still asks the attention to cover the
  AU regions of both faces in proportion (`mixup`).
- NNLDL (nearest-neighbour label-distribution learning, RALD paper, seeds/003 Eq. 18-19): for each face,
  the model's own predictions of its k most similar faces in the batch (cosine of pooled features),
  weighted by that similarity, form a pseudo label distribution D; the loss adds KL(D || P) (`nnldl_k`).
- distillation from a teacher checkpoint (any size): KL between the teacher's and the student's
  temperature-softened predictions on the same augmented batch, times T^2 (`distill_from`). Several
  checkpoints, comma-separated, form one teacher: the average of their probabilities (`ensemble_logits`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def make_ema(model: torch.nn.Module, decay: float):
    """torch's AveragedModel with an EMA update over parameters and buffers (BatchNorm statistics too)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def mixup(images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
          weights: torch.Tensor, alpha: float, rng: np.random.Generator):
    """Blend each sample with a random partner, image and AU map alike (one weight for the batch).

    A map only counts where its face has one (neutral faces and faces without landmarks have none); the
    blend has a map when either face has. Returns (images, maps, targets, valid, weights)."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(images.shape[0]))
    vmask = valid.to(maps.dtype).view(-1, *([1] * (maps.dim() - 1)))
    mixed_maps = lam * maps * vmask + (1 - lam) * (maps * vmask)[perm]
    return (lam * images + (1 - lam) * images[perm], mixed_maps, lam * targets + (1 - lam) * targets[perm],
            valid | valid[perm], lam * weights + (1 - lam) * weights[perm])


def nnldl_targets(features: torch.Tensor, probs: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 18: D_i = sum_j r_ij P_j / sum_j r_ij over the k most similar other samples j of the batch, r the
    cosine similarity of the (detached) pooled features, clipped at 0. features (N, C), probs (N, K)."""
    f = F.normalize(features.detach().float(), dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))  # a face is not its own neighbour
    k = min(k, features.shape[0] - 1)
    r, idx = sim.topk(k, dim=1)
    r = r.clamp_min(0) + 1e-6  # dissimilar neighbours count (almost) nothing; never divide by zero
    return (r.unsqueeze(-1) * probs.detach()[idx]).sum(1) / r.sum(1, keepdim=True)


def kl_to(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target || softmax(logits))."""
    log_p = F.log_softmax(logits, dim=1)
    return (target * (torch.log(target.clamp_min(1e-8)) - log_p)).sum(1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """Hinton et al.'s soft-target term: T^2 KL(softmax(t/T) || softmax(s/T))."""
    t = temperature
    return kl_to(F.softmax(teacher_logits.detach() / t, dim=1), student_logits / t) * t * t


def ensemble_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """One teacher from several: the log of their averaged probabilities (what benchmarks/ensemble.py
    measures), as logits. One teacher's logits are returned as they are (the softmax is shift-invariant)."""
    if len(logits) == 1:
        return logits[0]
    log_p = torch.stack([F.log_softmax(x.float(), dim=1) for x in logits])
    return torch.logsumexp(log_p, dim=0) - float(np.log(len(logits)))
