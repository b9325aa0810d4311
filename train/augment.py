"""Batch augmentation in plain torch. Geometric transforms (flip, rotation, scale, shift) move the image
and its AU map together; photometric ones (brightness, contrast, erasing) touch the image only. A
flipped AU map is still right because the map is rendered before the flip, from unflipped landmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    max_rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.08  # fraction of the image size
    brightness: float = 0.2
    contrast: float = 0.25
    erase: float = 0.25  # probability of erasing one random rectangle


def _affine(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) sampling matrices for F.affine_grid (output -> input coordinates)."""
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    angle = (rand(n) * 2 - 1) * math.radians(cfg.max_rotation_deg)
    scale = cfg.scale[0] + rand(n) * (cfg.scale[1] - cfg.scale[0])
    flip = torch.where(rand(n) < cfg.flip, -1.0, 1.0)
    shift = (rand(n, 2) * 2 - 1) * cfg.max_shift * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = shift
    return theta


def augment_batch(images: torch.Tensor, maps: torch.Tensor, cfg: AugmentConfig,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images: (N, 1, H, W) float in [0, 1]; maps: (N, 1, H, W) float in [0, 1]."""
    generator = generator or torch.default_generator
    n = images.shape[0]
    theta = _affine(n, cfg, generator).to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    maps = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(images.device)  # noqa: E731
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
    brightness = (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness
    mean = images.mean(dim=(2, 3), keepdim=True)
    images = ((images - mean) * contrast + mean + brightness).clamp_(0, 1)
    if cfg.erase > 0:
        h, w = images.shape[-2:]
        erase = rand(n) < cfg.erase
        eh = (rand(n) * 0.3 * h + 0.1 * h).long()
        ew = (rand(n) * 0.3 * w + 0.1 * w).long()
        y0 = (rand(n) * (h - eh)).long()
        x0 = (rand(n) * (w - ew)).long()
        ys = torch.arange(h, device=images.device)[None, :, None]
        xs = torch.arange(w, device=images.device)[None, None, :]
        box = ((ys >= y0[:, None, None]) & (ys < (y0 + eh)[:, None, None])
               & (xs >= x0[:, None, None]) & (xs < (x0 + ew)[:, None, None]) & erase[:, None, None])
        images = torch.where(box[:, None], rand(n, 1, 1, 1), images)
    return images, maps
