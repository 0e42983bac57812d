"""Label pyramids: mode (most frequent label) downsampling and the plan of levels.

Pure numpy: no Qt, no napari, no torch. Used by :mod:`.export` (OME-Zarr
label pyramids) and :mod:`.multiscale` (lazy read-time levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np

__all__ = ["PYRAMID_MAX_SIZE", "mode_downsample", "pyramid_factors"]

#: Pyramid levels are added until the coarsest is at most this size along every axis.
PYRAMID_MAX_SIZE = 256


def mode_downsample(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Downsample labels by taking the most frequent label of each window.

    Parameters
    ----------
    block : numpy.ndarray
        Integer labels.
    factors : sequence of int
        Window size per axis (1 keeps the axis). A block whose size is not a
        multiple is padded by repeating its last voxels.

    Returns
    -------
    numpy.ndarray
        ``ceil(shape / factors)`` labels. Ties go to a non-zero label first,
        then to the label met first in the window (C order).
    """
    factors = tuple(int(f) for f in factors)
    if all(f == 1 for f in factors):
        return block.copy()
    pad = [(0, (-n) % f) for n, f in zip(block.shape, factors, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    # the k voxels of every window as k strided views (no copy), in C order
    # within the window; the pairwise equalities give each one's count
    views = [
        block[tuple(slice(o, None, f) for o, f in zip(offset, factors, strict=True))]
        for offset in product(*[range(f) for f in factors])
    ]
    k = len(views)
    counts = [np.ones(views[0].shape, dtype=np.uint8) for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            same = views[i] == views[j]
            same = same.view(np.uint8)
            counts[i] += same
            counts[j] += same
    out = views[0].copy()
    best = counts[0]
    best *= 2
    best -= (views[0] == 0).view(np.uint8)  # a tie prefers a label to the background
    for j in range(1, k):
        score = counts[j]
        score *= 2
        score -= (views[j] == 0).view(np.uint8)
        better = score > best  # strict: the first of equal scores wins (C order)
        np.copyto(out, views[j], where=better)
        np.maximum(best, score, out=best)
    return out


def pyramid_factors(shape, voxel_size=None, max_size: int = PYRAMID_MAX_SIZE) -> list:
    """Plan the downsampling factors of each pyramid level after the first.

    Y and x are halved at every level; z is halved too once the data are
    roughly isotropic (the z voxel at most 1.5 times the in-plane one), so an
    anisotropic stack is first downsampled in-plane only. An axis of size 1 is
    kept. Levels are added until every axis is at most ``max_size``.

    Parameters
    ----------
    shape : tuple of int
        Shape of level 0.
    voxel_size : sequence of float, optional
        Voxel size in nm; isotropic when not given.
    max_size : int, optional
        Largest size of the coarsest level.

    Returns
    -------
    list of tuple of int
        The factor per axis from each level to the next (empty: one level).
    """
    shape = [int(n) for n in shape]
    size = list(voxel_size) if voxel_size is not None else [1.0] * len(shape)
    out = []
    while max(shape) > max_size:
        factors = []
        for axis, n in enumerate(shape):
            if n <= 1:
                factors.append(1)
            elif len(shape) == 3 and axis == 0:
                factors.append(2 if size[0] <= 1.5 * min(size[1], size[2]) else 1)
            else:
                factors.append(2)
        if all(f == 1 for f in factors):
            break
        out.append(tuple(factors))
        shape = [-(-n // f) for n, f in zip(shape, factors, strict=True)]
        size = [s * f for s, f in zip(size, factors, strict=True)]
    return out
