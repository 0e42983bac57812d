"""Multiscale levels for viewing: lazy dask levels, and a read-time pyramid for big arrays.

Levels become dask arrays (`as_dask`) chunked for napari's plane-by-plane
viewing: the file's own chunk depth in z (one section for EM stacks), and
in-plane whole multiples of the file's chunks up to `LEVEL_CHUNK_BYTES`, so
a terabyte volume is tens of thousands of dask chunks, not millions, and
building or slicing its graph stays instant. Dask pushes a single slice
down into the read, so ``level[z, y0:y1, x0:x1]`` reads only the file chunks
under that box; a slice dask cannot push down reads whole dask chunks of the
planes it touches, never more.

A file's own pyramid (OME-Zarr ``multiscales``, pyramidal TIFF) is always used
as it is. A big array stored at one scale gets a *lazy* pyramid here: every
coarser level is a strided view (``level0[::1, ::2, ::2]``, ...) of level 0,
so nothing is written or held in memory; showing a coarse tile reads the
level-0 chunks under it and keeps every n-th voxel. That keeps napari's 2D
view of a big plane within memory, at the cost of reading the
full-resolution chunks under what is shown; napari's 3D view shows the
coarsest level, which reads every level-0 chunk of the sections it samples.
A stored pyramid (the Export dock, ``napari-connectome export``) is much
faster to browse; a small array gets no pyramid at all.

Pure numpy and dask: no Qt, no napari, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .export import pyramid_factors

__all__ = [
    "LAZY_PYRAMID_MAX_SIZE",
    "LAZY_PYRAMID_PLANE_PX",
    "LAZY_PYRAMID_VOXELS",
    "LEVEL_CHUNK_BYTES",
    "StridedView",
    "as_dask",
    "downsample_factors",
    "level_chunks",
    "lazy_pyramid",
    "needs_pyramid",
    "viewing_levels",
]

#: A single-scale array gets a lazy pyramid when a plane side is longer than this (pixels)...
LAZY_PYRAMID_PLANE_PX = 4096
#: ...or when it holds more voxels than this.
LAZY_PYRAMID_VOXELS = 2**27

#: The coarsest level of a lazy pyramid is at most this size along every axis.
LAZY_PYRAMID_MAX_SIZE = 512

#: Largest in-plane dask chunk of a viewed level, in bytes.
LEVEL_CHUNK_BYTES = 32 * 2**20


def level_chunks(shape: Sequence[int], dtype: Any, native: Sequence[int] | None) -> tuple:
    """Choose the dask chunks of a viewed level.

    Parameters
    ----------
    shape : sequence of int
        The level's shape, 2D or 3D (other dimensions: dask's ``"auto"``).
    dtype : dtype-like
        Its dtype.
    native : sequence of int or None
        The file's chunk shape (None: unchunked, as numpy arrays are).

    Returns
    -------
    tuple of tuple of int
        Dask chunks: the file's chunk depth in z (one section when unchunked),
        in-plane whole multiples of the file's chunks of at most
        `LEVEL_CHUNK_BYTES`.
    """
    import dask.array as da

    shape = tuple(int(n) for n in shape)
    if not shape or 0 in shape:
        return tuple((n,) for n in shape)
    if len(shape) == 3:
        spec: tuple = (int(native[0]) if native else 1, "auto", "auto")
    else:
        spec = ("auto",) * len(shape)
    return da.core.normalize_chunks(
        spec, shape, dtype=np.dtype(dtype), limit=LEVEL_CHUNK_BYTES, previous_chunks=native
    )


def as_dask(array: Any) -> Any:
    """Wrap an array-like in a dask array with its own chunks (a dask array comes back as is).

    Parameters
    ----------
    array : array-like
        A numpy, ``np.memmap``, zarr or dask array, or anything with ``shape``,
        ``dtype`` and numpy-style slicing.

    Returns
    -------
    dask.array.Array
        Lazy, chunked by `level_chunks`; computing a slice of it reads only
        the array's chunks that the slice touches.
    """
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    try:
        native = tuple(int(c) for c in array.chunks)
        if len(native) != len(array.shape):
            native = None
    except Exception:  # numpy arrays have no chunks; sharded zarr may not report them
        native = None
    return da.from_array(array, chunks=level_chunks(array.shape, array.dtype, native))


class StridedView:
    """Every ``factors``-th voxel of an array, read on demand (one lazy pyramid level).

    Slicing it slices the array with the steps multiplied, so reading a box of
    the view reads only the array's chunks under that box.

    Parameters
    ----------
    array : array-like
        The full-resolution array (numpy, zarr, dask...).
    factors : sequence of int
        The stride per axis (1 keeps the axis).
    """

    def __init__(self, array: Any, factors: Sequence[int]) -> None:
        self.array = array
        self.factors = tuple(int(f) for f in factors)
        self.shape = tuple(-(-int(n) // f) for n, f in zip(array.shape, self.factors, strict=True))
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        native = getattr(array, "chunks", None)
        try:
            self.chunks = tuple(
                max(1, int(c) // f) for c, f in zip(native, self.factors, strict=True)
            )
        except Exception:  # no regular chunks
            self.chunks = None

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        base = []
        for k, n, f in zip(key, self.shape, self.factors, strict=True):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step < 0:
                    raise IndexError("a strided pyramid level reads with positive steps only")
                base.append(slice(start * f, stop * f, step * f))
            else:
                index = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= index < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                base.append(index * f)
        out = self.array[tuple(base)]
        if hasattr(out, "compute"):
            out = out.compute()
        return np.asarray(out)


def needs_pyramid(shape: Sequence[int]) -> bool:
    """Tell whether a single-scale array is big enough to get a lazy pyramid for viewing.

    Parameters
    ----------
    shape : sequence of int
        Level-0 shape, ``(z, y, x)`` or ``(y, x)``.

    Returns
    -------
    bool
        True when a y or x side exceeds `LAZY_PYRAMID_PLANE_PX` or the array
        holds more than `LAZY_PYRAMID_VOXELS` voxels.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        return False
    big_plane = max(shape[-2:]) > LAZY_PYRAMID_PLANE_PX
    return big_plane or int(np.prod(shape, dtype=np.int64)) > LAZY_PYRAMID_VOXELS


def lazy_pyramid(level0: Any, voxel_size: Sequence[float] | None = None) -> list:
    """Build a lazy pyramid of strided views of ``level0``, finest first.

    Parameters
    ----------
    level0 : array-like
        The full-resolution array (any array-like; wrapped with `as_dask`).
    voxel_size : sequence of float, optional
        Voxel size in nm: an anisotropic stack is strided in y and x only
        until it is about isotropic (as the exported pyramids are).

    Returns
    -------
    list of dask.array.Array
        ``[level0, level0[::f1], level0[::f2], ...]`` until every axis is at
        most `LAZY_PYRAMID_MAX_SIZE`; only ``[level0]`` when it is that small.
        Labels stay labels: strided views take one voxel per window.
    """
    levels = [as_dask(level0)]
    total = [1] * len(level0.shape)
    for factors in pyramid_factors(level0.shape, voxel_size, LAZY_PYRAMID_MAX_SIZE):
        total = [t * f for t, f in zip(total, factors, strict=True)]
        levels.append(as_dask(StridedView(level0, total)))
    return levels


def downsample_factors(levels: Sequence[Any]) -> list[tuple[float, ...]]:
    """Return how many level-0 voxels one voxel of each level spans, per axis.

    Parameters
    ----------
    levels : sequence of array-like
        Multiscale levels, finest first (as napari's ``layer.data``).

    Returns
    -------
    list of tuple of float
        ``(1, 1, 1)`` for level 0, then the shape ratios of level 0 to each level.
    """
    first = np.asarray(levels[0].shape, dtype=float)
    return [tuple(first / np.asarray(level.shape, dtype=float)) for level in levels]


def viewing_levels(levels: Sequence[Any], voxel_size: Sequence[float] | None = None) -> list:
    """Return the dask levels a viewer should show for a volume's levels.

    Parameters
    ----------
    levels : sequence of array-like
        The file's levels, finest first (one for a single-scale array).
    voxel_size : sequence of float, optional
        Voxel size in nm (for the lazy pyramid's factors).

    Returns
    -------
    list of array-like
        The file's levels as dask arrays, except numpy arrays (loaded or
        memory-mapped, so cheap to slice, and writable for painting labels),
        which stay as they are; a big single-scale array (`needs_pyramid`)
        gets a `lazy_pyramid`. One element: show it as is.
    """
    if len(levels) == 1 and needs_pyramid(levels[0].shape):
        return lazy_pyramid(levels[0], voxel_size)
    return [level if isinstance(level, np.ndarray) else as_dask(level) for level in levels]
