"""OccupancyPredictor: one image -> a 3D occupancy volume (logits) in the box of DESIGN.md.

The network end of the data path: image -> **OccupancyPredictor** -> volume -> perspective
transformer -> silhouettes. It never imports the transformer; ``persp3d.train`` joins them.

Convention: the output ``(B, 1, R, R, R)`` follows the volume convention of
:mod:`persp3d.volume` (axes D, H, W along world z, y, x); apply ``sigmoid`` for occupancy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from persp3d._checks import check_shape, check_tensor

__all__ = ["OccupancyPredictor", "PredictorConfig"]

NORMS = ("batch", "group", "instance", "none")


@dataclass
class PredictorConfig:
    """Architecture of :class:`OccupancyPredictor` (saved with every checkpoint)."""

    in_channels: int = 3
    """Input channels: 3 for RGB images, 1 for silhouettes."""
    image_size: int = 64
    """Side of the square input image (a power of two times 4, e.g. 32, 64, 128)."""
    resolution: int = 32
    """Side of the output volume (a power of two times 4: 16, 32, 64, ...)."""
    width: int = 16
    """Channels of the first encoder stage; each later stage doubles them (capped at 8x)."""
    latent_dim: int = 256
    """Size of the latent code between encoder and decoder."""
    norm: str = "group"
    """Normalisation after each convolution: group (default: the same in training and
    evaluation, whatever the batch), batch, instance or none."""
    decoder_width: int = 64
    """Channels of the decoder's coarsest (4^3) grid; each upsampling halves them."""
    init_bias: float = -2.0
    """Initial bias of the output logits (a mostly-empty prior: sigmoid(-2) = 0.12)."""


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return (
            nn.InstanceNorm2d(channels, affine=True)
            if dims == 2
            else nn.InstanceNorm3d(channels, affine=True)
        )
    return nn.Identity()


def _levels(size: int, name: str) -> int:
    n = 0
    while size > 4 and size % 2 == 0:
        size //= 2
        n += 1
    if size != 4 or n == 0:
        raise ValueError(f"{name} must be 4 * 2^k with k >= 1 (8, 16, 32, 64, ...); got {size}")
    return n


class OccupancyPredictor(nn.Module):
    """A 2D convolutional encoder to a latent code and a 3D transposed-convolution decoder
    to occupancy logits, after Perspective Transformer Nets (Yan et al. 2016).

    Args:
        config: a :class:`PredictorConfig`; keyword arguments override its fields.

    Shape:
        ``forward(image (B, in_channels, S, S)) -> logits (B, 1, R, R, R)``.
    """

    def __init__(self, config: PredictorConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = PredictorConfig(**{**asdict(config or PredictorConfig()), **overrides})
        if cfg.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {cfg.norm!r}")
        self.config = cfg
        enc_levels = _levels(cfg.image_size, "image_size")
        dec_levels = _levels(cfg.resolution, "resolution")
        layers: list[nn.Module] = []
        channels = cfg.in_channels
        for level in range(enc_levels):
            out = cfg.width * min(2**level, 8)
            layers += [
                nn.Conv2d(channels, out, 3, stride=1, padding=1, bias=cfg.norm == "none"),
                _norm(cfg.norm, out, 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 4, stride=2, padding=1, bias=cfg.norm == "none"),
                _norm(cfg.norm, out, 2),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.encoder = nn.Sequential(*layers)
        self.to_latent = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 16, cfg.latent_dim), nn.ReLU(inplace=True)
        )
        self.from_latent = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.decoder_width * 64), nn.ReLU(inplace=True)
        )
        layers = []
        channels = cfg.decoder_width
        for _ in range(dec_levels - 1):
            out = max(channels // 2, 8)
            layers += [
                nn.ConvTranspose3d(channels, out, 4, stride=2, padding=1, bias=cfg.norm == "none"),
                _norm(cfg.norm, out, 3),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.decoder = nn.Sequential(*layers)
        # The last upsampling produces the logits directly (as in PTN's decoder); a 3^3
        # convolution to one channel at full resolution would cost more than the rest.
        self.head = nn.ConvTranspose3d(channels, 1, 4, stride=2, padding=1)
        nn.init.constant_(self.head.bias, cfg.init_bias)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, S, S)`` -> ``(B, latent_dim)``."""
        check_tensor(image, "image")
        sizes = check_shape(image, "B C H W", "image")
        cfg = self.config
        if (
            sizes["C"] != cfg.in_channels
            or sizes["H"] != cfg.image_size
            or sizes["W"] != cfg.image_size
        ):
            raise ValueError(
                f"image must be (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}); "
                f"got shape {tuple(image.shape)}"
            )
        return self.to_latent(self.encoder(image))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim)`` -> logits ``(B, 1, R, R, R)``."""
        x = self.from_latent(latent).reshape(-1, self.config.decoder_width, 4, 4, 4)
        return self.head(self.decoder(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image))

    def summary(self) -> str:
        """A short description: input, output and parameter counts."""
        cfg = self.config
        enc = sum(p.numel() for p in self.encoder.parameters()) + sum(
            p.numel() for p in self.to_latent.parameters()
        )
        total = sum(p.numel() for p in self.parameters())
        return (
            f"OccupancyPredictor: image ({cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) -> "
            f"latent {cfg.latent_dim} -> logits (1, {cfg.resolution}, {cfg.resolution}, "
            f"{cfg.resolution}); {total / 1e6:.2f} M parameters ({enc / 1e6:.2f} M encoder, "
            f"{(total - enc) / 1e6:.2f} M decoder), norm={cfg.norm}"
        )
