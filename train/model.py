"""The AU-guided classifier: a small plain-torch ResNet for 48x48 grayscale aligned faces whose last
block keeps a 12x12 spatial map. One forward pass gives logits, the attention map (channel mean of the
last block, Eq. 1 of Belharbi et al. 2024) and the class activation maps (classifier weights applied to
the same features)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from stream_fer.face.classes import NUM_CLASSES


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    arch: str = "aunet"
    input_size: int = 48
    in_channels: int = 1
    stem_channels: int = 32
    widths: tuple[int, ...] = (64, 128, 128)  # one residual block each
    strides: tuple[int, ...] = (1, 2, 1)  # after a stride-2 stem conv: 24 -> 12 -> 12
    num_classes: int = NUM_CLASSES
    dropout: float = 0.3
    mean: float = 0.5  # input normalisation, on [0, 1] pixel values
    std: float = 0.25
    # Inference only (eval mode): also run the mirrored face and average, the maps mirrored back. Twice
    # the cost; set on a trained checkpoint with `python -m train package --test-time-flip`.
    test_time_flip: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class AUNet(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(_conv_bn(config.in_channels, config.stem_channels),
                                  _conv_bn(config.stem_channels, config.widths[0], stride=2))
        blocks, cin = [], config.widths[0]
        for width, stride in zip(config.widths, config.strides):
            blocks.append(BasicBlock(cin, width, stride))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(cin, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.blocks:  # start each residual branch near identity
            nn.init.zeros_(block.bn2.weight)

    @property
    def map_size(self) -> int:
        size = self.config.input_size // 2
        for stride in self.config.strides:
            size //= stride
        return size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def flips(self) -> bool:
        """True when this forward pass averages each face with its mirror image (eval mode only)."""
        return self.config.test_time_flip and not self.training

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, C, H, W) normalised. Returns logits (N, K), attention (N, h, w), cams (N, K, h, w)."""
        flip = self.flips()
        logits, attention, cams, _ = self.heads(self.features(with_mirror(x) if flip else x))
        return merge_mirrored(logits, attention, cams) if flip else (logits, attention, cams)

    def heads(self, feats: torch.Tensor):
        """Last-block features -> (logits, attention, cams, pooled features); training levers that compare
        faces (NNLDL) use the pooled features."""
        pooled = feats.mean(dim=(2, 3))
        logits = self.fc(self.dropout(pooled))
        cams = torch.einsum("kc,nchw->nkhw", self.fc.weight, feats) + self.fc.bias[None, :, None, None]
        return logits, feats.mean(dim=1), cams, pooled


def with_mirror(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (2N, ...): the batch, then the batch mirrored left-right."""
    return torch.cat([x, x.flip(-1)])


def merge_mirrored(logits, attention, cams):
    """Outputs of a with_mirror batch -> per-face averages of the face and its mirror, with the mirror's maps
    flipped back (reshapes rather than slices, so an exported graph keeps a dynamic batch)."""
    logits = logits.reshape(2, -1, logits.shape[-1]).mean(dim=0)
    att = attention.reshape(2, -1, *attention.shape[-2:])
    cam = cams.reshape(2, -1, *cams.shape[-3:])
    return logits, (att[0] + att[1].flip(-1)) / 2, (cam[0] + cam[1].flip(-1)) / 2


def build_model(config: ModelConfig | dict | None = None) -> AUNet:
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    config = config or ModelConfig()
    if config.arch != "aunet":
        raise ValueError(f"unknown architecture {config.arch!r}")
    return AUNet(config)


def normalise(images_uint8: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) -> float (N, 1, H, W), normalised as the model expects."""
    x = images_uint8.float().div(255.0)  # never in place: a float input may share the caller's memory
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x - config.mean) / config.std


def count_macs(model: AUNet) -> int:
    """Multiply-accumulates per face for the conv and linear layers (what FLOP counters report as MACs)."""
    total = 0
    hooks = []

    def conv_hook(m, inp, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        c = model.config
        model(torch.zeros(1, c.in_channels, c.input_size, c.input_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    # CAMs: K x C x h x w multiply-adds on top
    total += c.num_classes * model.fc.in_features * model.map_size**2
    return total * (2 if c.test_time_flip else 1)  # the hooks count one image of the mirrored pair
