"""A compact 2D U-Net that maps an EM section to a neuron-boundary logit map.

The network sees one normalised grey-value channel at a canonical in-plane pixel
size (``config["pixel_size_nm"]``) and returns one logit per pixel; its sigmoid
is the probability that the pixel lies on a membrane / boundary between neurons.

Batch normalisation is the default: in evaluation mode it uses running
statistics, so the prediction of a pixel does not depend on the rest of the
tile, which is what lets tiled prediction match whole-plane prediction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURE",
    "BoundaryUNet",
    "build_model",
    "default_config",
    "model_context",
    "validate_config",
]

#: Name of the architecture in weights files.
ARCHITECTURE = "boundary_unet2d"

_DEFAULTS: dict[str, Any] = {
    "architecture": ARCHITECTURE,
    "format_version": 1,
    "in_channels": 1,
    "out_channels": 1,
    "base_channels": 16,
    "depth": 4,
    "norm": "batch",
    "pixel_size_nm": 8.0,
    "normalization": {"method": "percentile", "low": 1.0, "high": 99.0},
    "output": "boundary_probability",
}
_NORMS = ("batch", "group", "none")


def default_config(**overrides: Any) -> dict[str, Any]:
    """Return the default model configuration, with ``overrides`` applied.

    Parameters
    ----------
    **overrides
        Keys of the configuration to change, e.g. ``base_channels=4, depth=2``.

    Returns
    -------
    dict
        A JSON-serialisable configuration (see :func:`validate_config`), including
        ``context_px``, the halo in canonical pixels that tiled inference keeps.
    """
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _DEFAULTS.items()}
    config.update(overrides)
    config = validate_config(config)
    config["context_px"] = model_context(config["depth"])
    return config


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check a model configuration and fill in missing optional keys.

    Parameters
    ----------
    config : dict
        Model configuration as stored in a weights file.

    Returns
    -------
    dict
        A copy with defaults filled in.

    Raises
    ------
    ValueError
        If the architecture is unknown or a value is out of range.
    """
    if not isinstance(config, dict):
        raise ValueError(f"a model configuration must be a dict, not {type(config).__name__}")
    full = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _DEFAULTS.items()}
    full.update(config)
    if full["architecture"] != ARCHITECTURE:
        raise ValueError(
            f"unknown model architecture {full['architecture']!r}; expected {ARCHITECTURE!r}"
        )
    for key in ("in_channels", "out_channels", "base_channels", "depth"):
        value = full[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"model configuration {key!r} must be a positive integer, not {value!r}"
            )
    if full["depth"] > 8:
        raise ValueError(f"model configuration 'depth' must be at most 8, not {full['depth']}")
    if full["norm"] not in _NORMS:
        raise ValueError(
            f"model configuration 'norm' must be one of {_NORMS}, not {full['norm']!r}"
        )
    pixel = full["pixel_size_nm"]
    if isinstance(pixel, bool) or not isinstance(pixel, (int, float)) or not pixel > 0:
        raise ValueError(f"model configuration 'pixel_size_nm' must be > 0, not {pixel!r}")
    full["pixel_size_nm"] = float(pixel)
    norm = full["normalization"]
    if not isinstance(norm, dict) or norm.get("method") not in ("percentile", "meanstd"):
        raise ValueError(
            "model configuration 'normalization' must be {'method': 'percentile' | 'meanstd', ...}"
        )
    return full


def model_context(depth: int) -> int:
    """Halo in canonical pixels that tiled prediction keeps around each tile.

    Half the theoretical receptive field of a U-Net of this depth, rounded up to
    a multiple of the network's downsampling factor and capped at 48 pixels: the
    effective receptive field of a trained network is much narrower than the
    theoretical one, and the blending window hides what remains.

    Parameters
    ----------
    depth : int
        Number of resolution levels.

    Returns
    -------
    int
        Halo in pixels (a multiple of ``2 ** (depth - 1)``).
    """
    factor = 2 ** (depth - 1)
    half = receptive_field(depth) // 2
    halo = min(half, 48)
    return max(factor, int(math.ceil(halo / factor)) * factor)


def receptive_field(depth: int) -> int:
    """Theoretical receptive field (pixels) of a :class:`BoundaryUNet` of ``depth`` levels.

    Parameters
    ----------
    depth : int
        Number of resolution levels.

    Returns
    -------
    int
        Width in pixels of the input region that can influence one output pixel.
    """
    field = 1
    for level in range(depth - 1):  # encoder: two 3x3 convs, then a 2x2 pooling
        field += 4 * 2**level + 2**level
    field += 4 * 2 ** (depth - 1)  # bottom block
    for level in range(depth - 1):  # decoder: bilinear upsampling then two 3x3 convs
        field += 2 ** (level + 1) + 4 * 2**level
    return field


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _Block(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, cin: int, cout: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    """Bilinear upsampling, 1x1 convolution, concatenation with the skip, block."""

    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.block = _Block(2 * cout, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([skip, self.reduce(x)], dim=1))


class BoundaryUNet(nn.Module):
    """2D U-Net returning one boundary logit per pixel.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for EM).
    out_channels : int
        Output channels (1: the boundary logit).
    base_channels : int
        Channels of the first level; each level doubles them.
    depth : int
        Number of resolution levels (``depth - 1`` poolings by 2).
    norm : {"batch", "group", "none"}
        Normalisation after each convolution.

    Notes
    -----
    Inputs of any height and width are accepted: they are reflection-padded to
    a multiple of ``2 ** (depth - 1)`` and the output is cropped back.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "batch",
    ):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, not {norm!r}")
        channels = [base_channels * 2**level for level in range(depth)]
        self.factor = 2 ** (depth - 1)
        self.context = model_context(depth)
        self.encoders = nn.ModuleList()
        cin = in_channels
        for cout in channels:
            self.encoders.append(_Block(cin, cout, norm))
            cin = cout
        self.decoders = nn.ModuleList(
            _Up(channels[level + 1], channels[level], norm) for level in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``(batch, out_channels, height, width)``.

        Parameters
        ----------
        x : torch.Tensor
            Input of shape ``(batch, in_channels, height, width)``.

        Returns
        -------
        torch.Tensor
            Logits with the spatial shape of ``x``.
        """
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (self.factor - height % self.factor) % self.factor
        pad_w = (self.factor - width % self.factor) % self.factor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            x = F.pad(x, [0, pad_w, 0, pad_h], mode=mode)
        skips: list[torch.Tensor] = []
        first = True
        for encoder in self.encoders:
            if not first:
                skips.append(x)
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            first = False
        for decoder in self.decoders:
            x = decoder(x, skips.pop())
        return self.head(x)[..., :height, :width]


def build_model(config: dict[str, Any] | None = None) -> BoundaryUNet:
    """Build an untrained :class:`BoundaryUNet` from a configuration.

    Parameters
    ----------
    config : dict, optional
        Model configuration; :func:`default_config` when omitted.

    Returns
    -------
    BoundaryUNet
        The network, in evaluation mode, with random weights.
    """
    config = validate_config(config if config is not None else default_config())
    model = BoundaryUNet(
        in_channels=config["in_channels"],
        out_channels=config["out_channels"],
        base_channels=config["base_channels"],
        depth=config["depth"],
        norm=config["norm"],
    )
    return model.eval()
