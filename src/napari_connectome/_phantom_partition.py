"""Dense partition of space between grown neurites, and its full-resolution refinement.

Space is labelled by distance to the neurite cores (an additively weighted
Voronoi diagram, so thick neurites get more room) on a coarse grid; the coarse
labels are then refined to full resolution with smooth, sub-cell boundaries.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ._phantom_geometry import CORE, Neurites


def coarse_factors(voxel_size, target_nm: float = 8.0) -> tuple:
    """Per-axis downsampling factor of the partition grid (1 for coarse axes)."""
    return tuple(max(1, int(round(target_nm / v))) for v in voxel_size)


def partition(neurites: Neurites, shape, voxel_size, factors) -> np.ndarray:
    """Label every node of a coarse grid with the neuron whose core is nearest.

    Parameters
    ----------
    neurites : Neurites
        The grown neurites.
    shape : tuple of int
        Full-resolution volume shape.
    voxel_size : tuple of float
        Full-resolution voxel size (nm).
    factors : tuple of int
        Downsampling factor per axis.

    Returns
    -------
    numpy.ndarray
        ``int32`` coarse labels (neuron ids, no zeros).
    """
    f = np.asarray(factors)
    cshape = tuple(int(np.ceil(n / k)) for n, k in zip(shape, f, strict=True))
    spacing = np.asarray(voxel_size, float) * f
    origin = np.asarray(voxel_size) * f / 2.0  # centre of coarse node 0
    ds_min = 0.5 * float(spacing.min())
    pts, rad, ids = [], [], []
    for p, r, n in zip(neurites.points, neurites.radii, neurites.neuron, strict=True):
        seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
        ds = np.maximum(ds_min, 0.4 * CORE * np.minimum(r[1:], r[:-1]))
        sub = np.maximum(np.ceil(seg / ds).astype(int), 1)
        start = np.repeat(np.arange(len(seg)), sub)
        frac = (np.arange(sub.sum()) - np.repeat(np.cumsum(sub) - sub, sub)) / np.repeat(sub, sub)
        dense = p[start] + frac[:, None] * (p[start + 1] - p[start])
        pts.append(np.concatenate([dense, p[-1:]]))
        rad.append(np.concatenate([r[start] + frac * (r[start + 1] - r[start]), r[-1:]]))
        ids.append(np.full(len(dense) + 1, n, np.int32))
    pts, rad, ids = np.concatenate(pts), np.concatenate(rad), np.concatenate(ids)
    node = np.round((pts - origin) / spacing).astype(np.int64)
    rad = rad * CORE
    # rasterise into a grid padded by the largest reach: no bounds checks needed
    pad = np.floor(max(float(rad.max()), 1.0) / spacing).astype(np.int64) + 1
    pshape = np.array(cshape) + 4 * pad
    keep = np.all((node >= -pad) & (node < np.array(cshape) + pad), axis=1)
    node, rad, ids = node[keep] + 2 * pad, rad[keep], ids[keep]
    padded = np.zeros(tuple(pshape), np.int32)
    strides = np.array([pshape[1] * pshape[2], pshape[2], 1])
    flat_nodes = node @ strides
    flat = padded.reshape(-1)
    # thick cores first so that thin neurites stay continuous where they touch
    classes = np.round(np.log(np.maximum(rad, 1.0)) / np.log(1.25)).astype(int)
    for c in np.unique(classes)[::-1]:
        sel = classes == c
        rr = 1.25**c
        reach = np.minimum(np.floor(rr / spacing).astype(int), pad)
        g = np.mgrid[tuple(slice(-k, k + 1) for k in reach)].reshape(3, -1).T
        off = g[np.sum((g * spacing) ** 2, axis=1) <= rr * rr] @ strides
        if not len(off):
            off = np.zeros(1, np.int64)
        chunk = max(1, 4_000_000 // len(off))
        nodes, lab = flat_nodes[sel], ids[sel]
        for s in range(0, len(nodes), chunk):
            idx = nodes[s : s + chunk, None] + off[None]
            flat[idx] = np.broadcast_to(lab[s : s + chunk, None], idx.shape)
    seeds = padded[
        tuple(slice(2 * int(k), 2 * int(k) + n) for k, n in zip(pad, cshape, strict=True))
    ]
    if not np.any(seeds):
        seeds[tuple(n // 2 for n in cshape)] = 1
    idx = ndi.distance_transform_edt(
        seeds == 0, sampling=spacing, return_distances=False, return_indices=True
    )
    return seeds[tuple(idx)]


def _phase(p: int, f: int):
    """For full-res indices ``j * f + p``: (offset of the lower coarse node, its weight)."""
    u = (p + 0.5) / f - 0.5
    return (0, 1.0 - u) if u >= 0 else (-1, -u)


def refine(coarse: np.ndarray, shape, factors, shifts=None) -> np.ndarray:
    """Upsample coarse labels with smooth boundaries (interpolated one-hot argmax).

    Parameters
    ----------
    coarse : numpy.ndarray
        Coarse labels.
    shape : tuple of int
        Full-resolution shape.
    factors : tuple of int
        Downsampling factor per axis.
    shifts : tuple of numpy.ndarray, optional
        ``(dy, dx)`` integer row shifts of shapes ``(z, x)`` and ``(z, y)``: each
        x-row is read shifted by ``dx`` and each y-column by ``dy``, which bends
        straight cell edges into smooth curves.

    Returns
    -------
    numpy.ndarray
        ``uint32`` full-resolution labels.
    """
    f = tuple(int(v) for v in factors)
    pad = [(1, 1) if k > 1 else (0, 0) for k in f]
    lp = np.pad(coarse, pad, mode="edge")
    out = np.empty(shape, np.uint32)
    # every phase (position inside a coarse cell) has fixed interpolation weights,
    # so its corners are plain shifted slices of the padded coarse grid
    for ph in np.ndindex(*f):
        counts = [len(range(p, n, k)) for p, n, k in zip(ph, shape, f, strict=True)]
        if min(counts) == 0:
            continue
        per_axis = []
        for a in range(3):
            if f[a] == 1:
                per_axis.append([(0, 1.0)])
                continue
            off, w_lo = _phase(ph[a], f[a])
            opts = [(1 + off, w_lo), (2 + off, 1.0 - w_lo)]
            per_axis.append([o for o in opts if o[1] > 1e-6])
        labs, wts = [], []
        for combo in np.ndindex(*(len(o) for o in per_axis)):
            sl, w = [], 1.0
            for a in range(3):
                start, ww = per_axis[a][combo[a]]
                sl.append(slice(start, start + counts[a]))
                w *= ww
            labs.append(lp[tuple(sl)])
            wts.append(np.float32(w))
        target = tuple(slice(p, None, k) for p, k in zip(ph, f, strict=True))
        if len(labs) == 1:
            out[target] = labs[0]
            continue
        eq = {}
        for i in range(len(labs)):
            for j in range(i + 1, len(labs)):
                eq[i, j] = labs[i] == labs[j]
        best, best_score = labs[0], None
        for i in range(len(labs)):
            score = np.full(labs[i].shape, wts[i], np.float32)
            for j in range(len(labs)):
                if j != i:
                    score += eq[min(i, j), max(i, j)] * wts[j]
            if best_score is None:
                best_score = score
            else:
                better = score > best_score
                best = np.where(better, labs[i], best)
                best_score = np.maximum(score, best_score)
        out[target] = best
    if shifts is None:
        return out
    dy, dx = shifts
    ny, nx = shape[1], shape[2]
    yy = np.arange(ny, dtype=np.int32)
    xx = np.arange(nx, dtype=np.int32)
    bent = np.empty_like(out)
    for z in range(shape[0]):
        row = np.clip(yy[:, None] + dy[z][None, :].astype(np.int32), 0, ny - 1)
        row *= nx
        row += np.clip(xx[None, :] + dx[z][:, None].astype(np.int32), 0, nx - 1)
        bent[z] = out[z].reshape(-1)[row]
    return bent
