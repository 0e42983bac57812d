"""Pure-NumPy helpers of prediction: input checks, normalisation, tile grids, blending.

Nothing here imports torch, so these helpers can be used and tested without it.

Tiling scheme along one axis of a plane of ``length`` canonical pixels, for a
network with halo ``halo`` and downsampling factor ``factor``:

- the plane is reflection-padded by ``halo`` on each side (and a little more at
  the end so that the tiles fit exactly);
- tiles of ``tile`` pixels start every ``step = tile - 2 * margin - ramp``
  pixels, where ``margin = halo`` pixels are thrown away at every inner tile
  edge (they saw the tile's zero padding) and the next ``ramp`` (about
  ``halo / 2``) pixels are cross-faded between neighbours with a squared-sine
  ramp, so the weights of overlapping tiles add up to exactly one and no seam
  shows;
- when the padded plane is at most 1.5 tiles long, a single tile covers it
  (cheaper than two overlapping tiles; the caller shrinks its batch so that
  a batch holds no more pixels than ``batch_size`` regular tiles).

All offsets are multiples of ``factor``, so pooling grids of every tile line up
with those of the whole plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PLANE_AXIS",
    "AxisTiles",
    "check_volume",
    "check_voxel_size",
    "choose_planes",
    "axis_tiles",
    "axis_window",
    "normalize_plane",
    "smallest_tile",
    "tile_window",
]


#: Axis along which the planes of each orientation are indexed (z, y, x).
PLANE_AXIS = {"xy": 0, "xz": 1, "yz": 2}


def choose_planes(voxel_size: Sequence[float], planes: str | Sequence[str] = "auto") -> tuple:
    """Pick the plane orientations predicted for a 3D volume.

    Parameters
    ----------
    voxel_size : sequence of 3 float
        Voxel size (z, y, x) in nm.
    planes : str or sequence of str
        ``"auto"`` (xy only when z is at least twice as coarse as y and x, else
        xy, xz and yz), ``"xy"``, ``"all"`` / ``"xyz"``, or a sequence of ``"xy"``,
        ``"xz"``, ``"yz"``.

    Returns
    -------
    tuple of str
        The orientations.
    """
    if isinstance(planes, str):
        if planes == "auto":
            anisotropic = voxel_size[0] >= 2 * min(voxel_size[1], voxel_size[2])
            return ("xy",) if anisotropic else ("xy", "xz", "yz")
        if planes in ("all", "xyz"):
            return ("xy", "xz", "yz")
        planes = (planes,)
    chosen = tuple(dict.fromkeys(planes))
    bad = [p for p in chosen if p not in PLANE_AXIS]
    if bad or not chosen:
        raise ValueError(
            f"planes must be 'auto', 'all' or a subset of ('xy', 'xz', 'yz'), not {planes!r}"
        )
    return chosen


def check_volume(volume: Any) -> Any:
    """Check that a volume can be predicted; return it (a list becomes an array).

    Parameters
    ----------
    volume : array-like
        2D or 3D numeric array (numpy, zarr, dask...).

    Returns
    -------
    array-like
        The volume.

    Raises
    ------
    ValueError
        On a shape that is not 2D/3D, an RGB-like last axis, an empty or
        non-numeric volume, and (NumPy arrays only; lazy arrays are checked plane
        by plane while predicting) NaN / infinite values or a constant volume.
    """
    if not (
        hasattr(volume, "shape") and hasattr(volume, "dtype") and hasattr(volume, "__getitem__")
    ):
        volume = np.asarray(volume)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"expected a 2D image (y, x) or a 3D volume (z, y, x), got shape {shape}")
    if len(shape) == 3 and shape[-1] in (3, 4):
        raise ValueError(
            f"the volume of shape {shape} looks like an RGB(A) image (last axis of length "
            f"{shape[-1]}); convert it to a single grey-value channel first"
        )
    if min(shape) == 0:
        raise ValueError(f"the volume is empty (shape {shape})")
    kind = np.dtype(volume.dtype).kind
    if kind not in "biuf":
        raise ValueError(f"expected a numeric volume, got dtype {volume.dtype}")
    if isinstance(volume, np.ndarray) and not isinstance(volume, np.memmap):
        if kind == "f" and not np.isfinite(volume).all():
            raise ValueError(
                "the volume contains NaN or infinite values: fill them (e.g. with the "
                "mean grey value) or crop them away first"
            )
        low, high = volume.min(), volume.max()
        if low == high:
            raise ValueError(
                f"the volume is constant (all voxels = {low}): it holds no EM to read; "
                "check the layer or file"
            )
    return volume


def check_voxel_size(voxel_size: Any, ndim: int) -> tuple[float, ...]:
    """Check a voxel size against the dimensionality of the volume.

    Parameters
    ----------
    voxel_size : sequence of float
        Sizes in nm, ``(z, y, x)`` or ``(y, x)``.
    ndim : int
        2 or 3.

    Returns
    -------
    tuple of float
        The sizes.

    Raises
    ------
    ValueError
        On a wrong number of values or a size that is not a positive number.
    """
    axes = "(z, y, x)" if ndim == 3 else "(y, x)"
    try:
        values = tuple(float(v) for v in voxel_size)
    except TypeError:
        raise ValueError(
            f"voxel_size must be a sequence of {ndim} sizes in nm {axes}, not {voxel_size!r}"
        ) from None
    if len(values) != ndim:
        raise ValueError(
            f"voxel_size has {len(values)} values but the volume is {ndim}D; give {ndim} sizes "
            f"in nm {axes}"
        )
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"voxel sizes must be positive numbers (nm), got {values}")
    return values


def normalize_plane(plane: np.ndarray, method: dict | None = None) -> np.ndarray:
    """Normalise one EM section to ``float32`` values in about ``[0, 1]``.

    Parameters
    ----------
    plane : numpy.ndarray
        A 2D section of any real dtype.
    method : dict, optional
        ``{"method": "percentile", "low": 1, "high": 99}`` (default): the low and
        high percentiles map to 0 and 1 and values are clipped to ``[0, 1]``;
        ``{"method": "meanstd"}``: ``0.5 + (x - mean) / (6 * std)``, clipped to ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        ``float32`` plane; zeros when the plane is constant. Dark stays dark
        (nothing is inverted).
    """
    method = method or {"method": "percentile", "low": 1.0, "high": 99.0}
    data = np.asarray(plane, dtype=np.float32)
    # statistics on at most ~1 M pixels, so huge planes normalise quickly
    stride = max(1, int(math.sqrt(data.size / 1_000_000)))
    sample = data[::stride, ::stride] if data.ndim == 2 else data
    if method.get("method") == "meanstd":
        mean, std = float(sample.mean()), float(sample.std())
        if std <= 0:
            return np.zeros(data.shape, np.float32)
        out = 0.5 + (data - mean) / (6.0 * std)
    else:
        low, high = np.percentile(sample, [method.get("low", 1.0), method.get("high", 99.0)])
        if high <= low:
            low, high = float(sample.min()), float(sample.max())
            if high <= low:
                return np.zeros(data.shape, np.float32)
        out = (data - low) / (high - low)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis of a padded plane.

    Attributes
    ----------
    starts : tuple of int
        Start of each tile in the padded plane.
    size : int
        Length of every tile.
    pad_before, pad_after : int
        Reflection padding added before and after the plane.
    margin, ramp : int
        Pixels discarded at an inner tile edge, and cross-faded after them.
    """

    starts: tuple[int, ...]
    size: int
    pad_before: int
    pad_after: int
    margin: int
    ramp: int

    @property
    def padded_length(self) -> int:
        """Length of the padded plane."""
        return self.starts[-1] + self.size


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


def smallest_tile(halo: int, factor: int) -> int:
    """Smallest tile length that leaves room for a positive step between tiles.

    Parameters
    ----------
    halo : int
        Context kept around every predicted pixel.
    factor : int
        Downsampling factor of the network.

    Returns
    -------
    int
        ``2 * margin + ramp + factor`` (see :func:`axis_tiles`).
    """
    halo = _round_up(max(halo, 1), factor)
    return 2 * halo + _round_up(halo // 2, factor) + factor


def axis_tiles(length: int, tile: int, halo: int, factor: int) -> AxisTiles:
    """Place tiles along one axis of a plane.

    Parameters
    ----------
    length : int
        Length of the plane (canonical pixels), at least 1.
    tile : int
        Wanted tile length; rounded up to a multiple of ``factor``.
    halo : int
        Context kept around every predicted pixel; rounded up to a multiple of ``factor``.
    factor : int
        Downsampling factor of the network; every offset is a multiple of it.

    Returns
    -------
    AxisTiles
        The tile starts and the padding.

    Raises
    ------
    ValueError
        If the tile is too small for the halo.
    """
    if length < 1:
        raise ValueError(f"cannot tile an axis of length {length}")
    halo = _round_up(max(halo, 1), factor)
    tile = _round_up(tile, factor)
    margin = halo
    ramp = _round_up(halo // 2, factor)
    step = tile - 2 * margin - ramp
    if length + 2 * halo <= tile * 3 // 2 or step < factor:
        if step < factor and length + 2 * halo > tile * 3 // 2:
            raise ValueError(
                f"tile size {tile} is too small for a halo of {halo} px; "
                f"use at least {2 * margin + ramp + factor}"
            )
        size = _round_up(length + 2 * halo, factor)
        return AxisTiles((0,), size, halo, size - length - halo, margin, ramp)
    count = int(math.ceil((length + 2 * halo - tile) / step)) + 1
    total = (count - 1) * step + tile
    starts = tuple(i * step for i in range(count))
    return AxisTiles(starts, tile, halo, total - length - halo, margin, ramp)


def axis_window(tiles: AxisTiles, index: int) -> np.ndarray:
    """Blending weights of tile ``index`` along one axis.

    Parameters
    ----------
    tiles : AxisTiles
        The tiles of the axis.
    index : int
        Which tile.

    Returns
    -------
    numpy.ndarray
        ``float32`` weights of length ``tiles.size``: zero over the discarded
        margin of an inner edge, a squared-sine ramp over the next ``ramp``
        pixels, one elsewhere. The windows of all tiles sum to one at every
        pixel of the plane.
    """
    window = np.ones(tiles.size, np.float32)
    ramp = np.sin(0.5 * np.pi * (np.arange(tiles.ramp) + 0.5) / tiles.ramp) ** 2
    lo, hi = tiles.margin, tiles.margin + tiles.ramp
    if index > 0:
        window[:lo] = 0
        window[lo:hi] = ramp
    if index < len(tiles.starts) - 1:
        window[tiles.size - lo :] = 0
        window[tiles.size - hi : tiles.size - lo] = ramp[::-1]
    return window


def tile_window(rows: AxisTiles, cols: AxisTiles, row: int, col: int) -> np.ndarray:
    """2D blending weights of one tile: the outer product of the axis windows.

    Parameters
    ----------
    rows, cols : AxisTiles
        Tiles along the two axes.
    row, col : int
        Index of the tile along each axis.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(rows.size, cols.size)``.
    """
    return np.outer(axis_window(rows, row), axis_window(cols, col)).astype(np.float32)
