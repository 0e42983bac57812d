"""Fragments (supervoxels): a seeded watershed on a boundary probability map.

Fragments are the atoms of the segmentation state: every later step (region
graph, agglomeration, proofreading) works on fragment ids and never splits a
fragment.  They are therefore made to over-segment: each fragment should lie
inside one neuron, many fragments per neuron is fine.

Recipe, per 2D section for anisotropic volumes (z voxel size at least twice the
in-plane size) and in 3D otherwise:

1. threshold the boundary map (``boundaries < threshold`` is "inside");
2. distance transform of the inside, Gaussian-smoothed;
3. seeds = local maxima of that distance (within ``min_seed_distance``),
   plus every inside component that got no maximum (so no cell is left
   without a seed);
4. watershed from the seeds of the boundary map minus ``distance_weight``
   times that distance (membranes are flooded too): the relief falls towards
   cell centres, so a neighbour's flood cannot leak through a gap in a
   membrane into a cell whose interior is flat (noisy) boundary map;
5. fragments smaller than ``min_size`` voxels are re-flooded by their
   neighbours (a second watershed restricted to them).

Ids are ``1..N`` (``uint64``), consecutive, ordered by section and then by
seed position; ``0`` only where the optional ``mask`` is False.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["is_anisotropic", "make_fragments", "validate_boundaries", "validate_voxel_size"]

#: z voxel size / in-plane voxel size at and above which work is per 2D section.
ANISOTROPY_RATIO = 2.0


def validate_boundaries(boundaries, name: str = "boundaries") -> np.ndarray:
    """Check a boundary probability map and return it as C-contiguous float32.

    Parameters
    ----------
    boundaries : array_like
        Boundary probabilities in [0, 1] (1 = membrane), 2D ``(y, x)`` or
        3D ``(z, y, x)``.
    name : str, optional
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        The map as a C-contiguous ``float32`` array (no copy when it already is).

    Raises
    ------
    ValueError
        If the map is not 2D or 3D, is empty, is not real-valued, contains NaN
        or infinity, or has values outside [0, 1].
    """
    arr = np.asarray(boundaries)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be 2D (y, x) or 3D (z, y, x); got {arr.ndim}D {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a real-valued probability map; got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; got values in [{lo:g}, {hi:g}] "
            "(rescale, e.g. divide uint8 maps by 255)"
        )
    return arr


def validate_voxel_size(voxel_size, ndim: int) -> np.ndarray:
    """Check a voxel size and return it as a float64 array of length ``ndim``.

    Parameters
    ----------
    voxel_size : sequence of float or float
        Voxel size in nm, ``(z, y, x)`` or ``(y, x)``; a scalar means isotropic.
    ndim : int
        Number of dimensions of the volume.

    Returns
    -------
    numpy.ndarray
        Positive, finite voxel size of length ``ndim``.

    Raises
    ------
    ValueError
        If the length does not match or a value is not positive and finite.
    """
    vs = np.atleast_1d(np.asarray(voxel_size if voxel_size is not None else 1.0, dtype=float))
    if vs.size == 1:
        vs = np.repeat(vs, ndim)
    if vs.ndim != 1 or vs.size != ndim:
        raise ValueError(f"voxel_size must have {ndim} values for a {ndim}D volume; got {vs}")
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(f"voxel_size values must be positive and finite; got {vs}")
    return vs


def is_anisotropic(voxel_size: Sequence[float]) -> bool:
    """Whether a 3D volume should be processed per 2D section.

    Parameters
    ----------
    voxel_size : sequence of float
        Voxel size ``(z, y, x)`` in nm.

    Returns
    -------
    bool
        True when ``z >= ANISOTROPY_RATIO * max(y, x)``.
    """
    vs = np.asarray(voxel_size, dtype=float)
    return vs.size == 3 and vs[0] >= ANISOTROPY_RATIO * max(vs[1], vs[2])


def _validate_mask(mask, shape) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"mask shape {m.shape} does not match boundaries shape {tuple(shape)}")
    return np.ascontiguousarray(m, dtype=bool)


def _fragments_block(
    bnd: np.ndarray,
    mask: np.ndarray | None,
    sampling: np.ndarray,
    threshold: float,
    min_seed_distance: float,
    smooth_sigma: float,
    min_size: int,
    distance_weight: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Fragment one block (a 2D section or a 3D volume); ids 1..n as int32."""
    inside = bnd < threshold
    if mask is not None:
        inside &= mask
    ndim = bnd.ndim
    structure = ndi.generate_binary_structure(ndim, 1)
    # Distances are in units of the finest voxel size.
    dist = ndi.distance_transform_edt(inside, sampling=sampling).astype(np.float32)
    if smooth_sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma=smooth_sigma / sampling, truncate=3.0)
    size = [2 * max(int(round(min_seed_distance / s)), 0) + 1 for s in sampling]
    peaks = (dist == ndi.maximum_filter(dist, size=size)) & inside
    markers, n = ndi.label(peaks, structure=structure)
    # Inside components without a maximum (suppressed by a brighter neighbour
    # across a thin membrane) become whole-component seeds.
    comps, n_comps = ndi.label(inside, structure=structure)
    if n_comps:
        seeded = np.zeros(n_comps + 1, dtype=bool)
        seeded[comps[peaks]] = True
        seeded[0] = True
        unseeded = np.flatnonzero(~seeded)
        if unseeded.size:
            lut = np.zeros(n_comps + 1, dtype=np.int32)
            lut[unseeded] = np.arange(n + 1, n + 1 + unseeded.size, dtype=np.int32)
            extra = lut[comps]
            markers = np.where(markers == 0, extra, markers)
            n += unseeded.size
    # Flood a relief that also falls towards cell centres: a neighbour's flood
    # must climb out of a narrow gap in a membrane before it can enter a cell.
    relief = bnd - np.float32(distance_weight) * dist if distance_weight > 0 else bnd
    if n == 0:
        labels = np.zeros(bnd.shape, dtype=np.int32)
    else:
        labels = watershed(relief, markers, mask=mask).astype(np.int32, copy=False)

    if min_size > 1 and n > 1:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_size
        small[0] = False
        if small.any() and not small[1:].all():
            small_vox = small[labels]
            ring = ndi.binary_dilation(small_vox, structure=structure)
            if mask is not None:
                ring &= mask
            seeds = np.where(ring & ~small_vox, labels, 0)
            reflood = watershed(relief, seeds, mask=ring)
            take = small_vox & (reflood > 0)
            labels[take] = reflood[take]

    # Voxels no seed reached (e.g. a section that is all membrane, or a mask
    # component with no inside voxel) become fragments of their own.
    rest = labels == 0
    if mask is not None:
        rest &= mask
    if rest.any():
        extra, n_extra = ndi.label(rest, structure=structure)
        labels = np.where(extra > 0, extra + n, labels).astype(np.int32, copy=False)
        n += n_extra

    # Consecutive ids 1..k in order of first seed id (removes re-flooded ids).
    present = np.zeros(n + 1, dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    lut = np.cumsum(present, dtype=np.int32)
    lut[0] = 0
    k = int(lut[-1])
    if k != n:
        labels = lut[labels]
    return labels, k


def make_fragments(
    boundaries,
    voxel_size=None,
    *,
    mask=None,
    threshold: float = 0.5,
    min_seed_distance: float = 3.0,
    smooth_sigma: float = 1.0,
    min_size: int = 25,
    distance_weight: float = 0.1,
    per_section: bool | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Over-segment a boundary map into fragments with a seeded watershed.

    Parameters
    ----------
    boundaries : array_like
        Boundary probabilities in [0, 1] (1 = membrane), shape ``(z, y, x)``
        or ``(y, x)``.
    voxel_size : sequence of float, optional
        Voxel size in nm, ``(z, y, x)`` or ``(y, x)`` (default isotropic).  Decides per-section
        versus 3D work and scales distances.
    mask : array_like of bool, optional
        Voxels to segment; fragments are 0 where it is False.
    threshold : float, optional
        Boundary probability below which a voxel counts as cell interior when
        placing seeds.
    min_seed_distance : float, optional
        Radius, in voxels of the finest axis, of the neighbourhood within
        which a distance maximum must be the largest to become a seed.
        Smaller gives more (smaller) fragments.
    smooth_sigma : float, optional
        Gaussian sigma (finest-axis voxels) applied to the distance transform
        before finding maxima; 0 disables it.
    min_size : int, optional
        Fragments with fewer voxels are re-flooded by their neighbours (within
        the same section when working per section).
    distance_weight : float, optional
        The watershed floods ``boundaries - distance_weight * distance`` (the
        smoothed distance to the nearest boundary voxel, in finest-axis
        voxels); 0 floods the boundary map alone.  The default 0.1 keeps
        fragments pure where a membrane has gaps (a real network's typical
        error), see ``scripts/tune_agglomeration.py``.
    per_section : bool, optional
        Force per-2D-section (True) or 3D (False) work; by default per section
        when the z voxel size is at least twice the in-plane one.
    n_threads : int, optional
        Threads for per-section work (default ``min(4, cpu count)``).

    Returns
    -------
    numpy.ndarray
        ``uint64`` fragment ids, same shape as ``boundaries``: ``1..N``
        consecutive (unique across the volume, ordered by section), ``0``
        only outside ``mask``.

    Raises
    ------
    ValueError
        On invalid boundaries, voxel size, mask or parameters.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.zeros((32, 32), np.float32)
    >>> b[:, 15:17] = 1.0
    >>> frags = make_fragments(b, (4, 4))
    >>> int(frags.min()) >= 1 and frags.dtype == np.uint64
    True
    """
    bnd = validate_boundaries(boundaries)
    vs = validate_voxel_size(voxel_size, bnd.ndim)
    msk = _validate_mask(mask, bnd.shape)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    if min_seed_distance < 0 or smooth_sigma < 0 or min_size < 0 or distance_weight < 0:
        raise ValueError(
            "min_seed_distance, smooth_sigma, min_size and distance_weight must be >= 0"
        )
    if per_section is None:
        per_section = bnd.ndim == 3 and is_anisotropic(vs)
    params = (
        float(threshold),
        float(min_seed_distance),
        float(smooth_sigma),
        int(min_size),
        float(distance_weight),
    )

    if bnd.ndim == 2 or not per_section:
        sampling = vs / vs.min()
        labels, _ = _fragments_block(bnd, msk, sampling, *params)
        return labels.astype(np.uint64)

    sampling = vs[1:] / vs[1:].min()

    def work(z):
        return _fragments_block(bnd[z], None if msk is None else msk[z], sampling, *params)

    n_threads = n_threads or min(4, os.cpu_count() or 1)
    if n_threads > 1 and bnd.shape[0] > 1:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            results = list(pool.map(work, range(bnd.shape[0])))
    else:
        results = [work(z) for z in range(bnd.shape[0])]

    out = np.empty(bnd.shape, dtype=np.uint64)
    offset = 0
    for z, (labels, k) in enumerate(results):
        section = out[z]
        np.add(labels, offset, out=section, casting="unsafe")
        if msk is not None:
            section[labels == 0] = 0
        offset += k
    return out
