"""Region adjacency graph of fragments with boundary-probability contact scores.

Two fragments are adjacent when they share at least one voxel face (6- or
4-connectivity, including faces between z sections).  Each edge records:

- ``contact_area``: the number of shared voxel faces;
- ``contact_weight``: the physical contact area (nm^2) when a voxel size is
  given, else the face count;
- ``score_sum``: the area-weighted sum over those faces of the mean of the two
  voxels' boundary probabilities, so ``score_sum / contact_weight`` is the mean
  boundary probability along the contact (the merge score used by
  agglomeration);
- ``max_score`` and ``quantile_score``: the largest and the ``SCORE_QUANTILE``
  quantile of the per-face values.

Per-face values are computed from the boundary map quantised to 1/255 (as
8-bit network outputs are), so scores have a resolution of 1/510.  All work is
vectorised: face pairs from shifted slices, one 64-bit key per face (edge id in
the high bits, quantised value and axis in the low bits), ``np.sort``, and
reductions over runs of equal keys.

To bound memory the volume is processed in slabs along the first axis (a few
sections at a time, with the faces between a slab and the next one): each slab
yields a sparse table of distinct keys and their face counts (a per-edge
histogram of the quantised face values), and the tables are merged by key.
Every statistic is then exact and identical to a one-shot pass over all faces:
counts, sums and the nearest-rank quantile come from the histograms; sums of
non-integer face areas are re-expanded a bounded chunk of edges at a time so
that floating-point summation runs over the same values in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .fragments import validate_boundaries, validate_voxel_size

__all__ = ["SCORE_QUANTILE", "RegionGraph", "build_region_graph", "fragment_bboxes"]

#: Quantile of the per-face values kept in ``RegionGraph.quantile_score``.
SCORE_QUANTILE = 0.9
_QBITS = 9  # a face value is the sum of two 8-bit values: 0..510
_ABITS = 2  # the axis of a face
_QMAX = 510.0
_LOWBITS = _QBITS + _ABITS
#: Voxels per slab (at least one section per slab); 0 selects the one-shot
#: reference path (all faces at once, much more memory), kept for tests and
#: benchmarks.
_SLAB_VOXELS = 1 << 18
#: Faces expanded at a time when summing non-integer face areas.
_EXPAND_FACES = 1 << 21


@dataclass
class RegionGraph:
    """Adjacency of fragments, with contact areas and boundary scores.

    Parameters
    ----------
    edges : numpy.ndarray
        ``(E, 2)`` ``uint64`` fragment id pairs with ``u < v``, sorted
        lexicographically, each pair once.
    contact_area : numpy.ndarray
        ``(E,)`` ``int64`` number of shared voxel faces.
    contact_weight : numpy.ndarray
        ``(E,)`` ``float64`` summed face weights: the contact area in nm^2
        when the graph was built with a voxel size, else ``contact_area``.
    score_sum : numpy.ndarray
        ``(E,)`` ``float64`` weighted sum over the shared faces of the mean
        boundary probability of the two voxels (weights as in
        ``contact_weight``).
    max_score : numpy.ndarray
        ``(E,)`` ``float32`` largest per-face value.
    quantile_score : numpy.ndarray
        ``(E,)`` ``float32`` ``SCORE_QUANTILE`` quantile of the per-face values
        (lower nearest rank).
    fragment_sizes : numpy.ndarray
        ``(N + 1,)`` ``int64`` voxel count per fragment id (index 0: voxels
        with id 0).
    fragment_bboxes : numpy.ndarray
        ``(N + 1, 2 * ndim)`` ``int64`` bounding boxes, ``[start_0, ...,
        start_{d-1}, stop_0, ..., stop_{d-1}]`` (half-open); all zeros for id 0
        and for ids not present.
    """

    edges: np.ndarray
    contact_area: np.ndarray
    contact_weight: np.ndarray
    score_sum: np.ndarray
    max_score: np.ndarray
    quantile_score: np.ndarray
    fragment_sizes: np.ndarray
    fragment_bboxes: np.ndarray

    @property
    def n_fragments(self) -> int:
        """int: Largest fragment id ``N`` (arrays indexed by id have ``N + 1`` rows)."""
        return len(self.fragment_sizes) - 1

    @property
    def n_edges(self) -> int:
        """int: Number of edges ``E``."""
        return len(self.edges)

    @property
    def mean_score(self) -> np.ndarray:
        """numpy.ndarray: ``(E,)`` weighted mean boundary probability along each contact."""
        w = self.contact_weight
        return self.score_sum / np.where(w > 0, w, 1.0)

    def bbox_slices(self, fragment_id: int) -> tuple[slice, ...]:
        """Return the bounding box of one fragment as a tuple of slices.

        Parameters
        ----------
        fragment_id : int
            A fragment id in ``1..N``.

        Returns
        -------
        tuple of slice
            Slices selecting the fragment's bounding box in the volume.
        """
        box = self.fragment_bboxes[int(fragment_id)]
        nd = box.size // 2
        return tuple(slice(int(box[i]), int(box[nd + i])) for i in range(nd))


def fragment_bboxes(fragments: np.ndarray, n_fragments: int) -> np.ndarray:
    """Compute the bounding box of every fragment id.

    Parameters
    ----------
    fragments : numpy.ndarray
        Integer fragment ids, 2D or 3D.
    n_fragments : int
        Largest id ``N``.

    Returns
    -------
    numpy.ndarray
        ``(N + 1, 2 * ndim)`` ``int64``, rows ``[starts..., stops...]``
        (half-open); zeros for id 0 and absent ids.
    """
    nd = fragments.ndim
    out = np.zeros((n_fragments + 1, 2 * nd), dtype=np.int64)
    if n_fragments == 0:
        return out
    if fragments.dtype == np.uint64 and n_fragments < 2**63:
        lab = fragments.view(np.int64)  # zero-copy: ids fit
    elif fragments.dtype.kind == "i":
        lab = fragments
    else:
        lab = fragments.astype(np.int64)
    objs = ndi.find_objects(lab, max_label=n_fragments)
    present = np.fromiter((o is not None for o in objs), dtype=bool, count=n_fragments)
    if present.any():
        flat = np.fromiter(
            (v for o in objs if o is not None for s in o for v in (s.start, s.stop)),
            dtype=np.int64,
        ).reshape(-1, nd, 2)
        rows = np.flatnonzero(present) + 1
        out[rows, :nd] = flat[:, :, 0]
        out[rows, nd:] = flat[:, :, 1]
    return out


def _slab_keys(frag: np.ndarray, bnd: np.ndarray, z0: int, z1: int, n: int) -> np.ndarray:
    """Keys ``(u * (n + 1) + v) << 11 | (q_u + q_v) << 2 | axis`` of the faces of ``z0:z1``.

    Includes the faces between section ``z1 - 1`` and ``z1``. Faces inside a
    fragment (``u == v``) may be included when no face of an axis is inside
    one; the caller drops them, and those touching id 0, after sorting.
    """
    nz = frag.shape[0]
    stop = min(z1 + 1, nz)
    sub = frag[z0:stop]
    q = np.rint(bnd[z0:stop] * np.float32(255.0)).astype(np.uint16)
    keys = []
    stride = np.uint64(n + 1)
    shift = np.uint64(_LOWBITS)
    for axis in range(frag.ndim):
        lo = [slice(None)] * frag.ndim
        hi = [slice(None)] * frag.ndim
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        if axis == 0:
            if sub.shape[0] < 2:
                continue
        else:  # in-plane faces of this slab's own sections only
            lo[0] = hi[0] = slice(0, z1 - z0)
        a = sub[tuple(lo)]
        b = sub[tuple(hi)]
        sel = a != b
        qs = q[tuple(lo)] + q[tuple(hi)]
        if not sel.all():
            a, b, qs = a[sel], b[sel], qs[sel]
        else:
            a, b, qs = a.ravel(), b.ravel(), qs.ravel()
        del sel
        u = np.minimum(a, b)
        u *= stride
        u += np.maximum(a, b)
        u <<= shift
        qs <<= np.uint16(_ABITS)
        qs |= np.uint16(axis)
        u |= qs
        keys.append(u)
        del a, b, qs, u
    return np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Start indices of the runs of equal values in a sorted array."""
    if sorted_keys.size == 0:
        return np.zeros(0, dtype=np.intp)
    change = sorted_keys[1:] != sorted_keys[:-1]
    return np.concatenate(([0], np.flatnonzero(change) + 1))


def _slab_table(
    frag: np.ndarray, bnd: np.ndarray, z0: int, z1: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys of one slab's faces of real edges (``0 < u < v``), with counts."""
    k = _slab_keys(frag, bnd, z0, z1, n)
    k.sort()
    starts = _runs(k)
    counts = np.diff(np.append(starts, k.size)).astype(np.int64)
    k = k[starts]
    del starts
    stride = np.uint64(n + 1)
    pair = k >> np.uint64(_LOWBITS)
    u = pair // stride
    real = (u != 0) & (u != pair - u * stride)  # drop u == v and id 0 (u is the min)
    del pair, u
    if not real.all():
        k, counts = k[real], counts[real]
    return k, counts


def _merge_tables(keys: list, counts: list) -> tuple[np.ndarray, np.ndarray]:
    """Merge sorted (key, count) tables: one row per distinct key, counts summed."""
    if not keys:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    k = np.concatenate(keys)
    keys.clear()  # the lists are consumed: free the pieces early
    c = np.concatenate(counts)
    counts.clear()
    if k.size > 1 and not (k[1:] >= k[:-1]).all():
        order = np.argsort(k, kind="stable")
        k = k[order]
        c = c[order]
        del order
    starts = _runs(k)
    c = c.astype(np.int64, copy=False)
    if starts.size == k.size:
        return k, c
    return k[starts], np.add.reduceat(c, starts)


def _slab_edge_stats(
    frag: np.ndarray,
    bnd: np.ndarray,
    n: int,
    face_area: np.ndarray,
    bboxes: np.ndarray,
    slab_voxels: int,
):
    """Per-edge statistics computed slab by slab along axis 0 (see the module docstring).

    A face belongs to the slab of its lower voxel along axis 0.  From the
    fragments' bounding boxes, an edge whose faces all lie in one slab is
    finished within that slab (its histogram there is complete); the
    histogram rows of the other edges are kept and merged across slabs.
    """
    nz = frag.shape[0]
    step = max(1, slab_voxels // max(1, frag[0].size))
    if step >= nz:
        return _edge_stats(*_slab_table(frag, bnd, 0, nz, n), face_area)
    nd = frag.ndim
    zlo, zhi = bboxes[:, 0], bboxes[:, nd]
    stride = np.uint64(n + 1)
    parts, span_keys, span_counts = [], [], []
    count_dtype = np.uint32 if step * frag[0].size * nd < 2**32 else np.int64
    for z0 in range(0, nz, step):
        k, c = _slab_table(frag, bnd, z0, min(z0 + step, nz), n)
        pair = k >> np.uint64(_LOWBITS)
        starts = _runs(pair)
        ue = pair[starts]
        del pair
        u = ue // stride
        v = ue - u * stride
        # the lower voxels of the edge's faces lie in first..last along axis 0: a face
        # between sections z and z + 1 needs one fragment at z and the other at z + 1
        zu, zv = zlo[u], zlo[v]
        first = np.maximum(zu, zv) - (zu != zv)
        del zu, zv
        last = np.minimum(zhi[u], zhi[v]) - 1
        multi = (first // step) != (last // step)
        del ue, u, v, first, last
        if multi.any():
            rows = np.repeat(multi, np.diff(np.append(starts, k.size)))
            span_keys.append(k[rows])
            span_counts.append(c[rows].astype(count_dtype))
            keep = ~rows
            k, c = k[keep], c[keep]
            del rows, keep
        del starts, multi
        parts.append(_edge_stats(k, c, face_area))
        del k, c
    if span_keys:
        k, c = _merge_tables(span_keys, span_counts)
        parts.append(_edge_stats(k, c, face_area))
        del k, c
    out = [np.concatenate(x) for x in zip(*parts, strict=True)]
    del parts
    pair = out[0]
    if pair.size > 1 and not (pair[1:] > pair[:-1]).all():
        order = np.argsort(pair, kind="stable")
        out = [x[order] for x in out]
    return tuple(out)


def _edge_stats(keys: np.ndarray, counts: np.ndarray, face_area: np.ndarray):
    """Per-edge statistics from a sorted table of distinct face keys and their counts.

    Returns ``(pair, area, weight, score_sum, max_score, quantile_score)``.
    """
    pair = keys >> np.uint64(_LOWBITS)
    low = (keys & np.uint64((1 << _LOWBITS) - 1)).astype(np.int64)
    axis = low & ((1 << _ABITS) - 1)
    qv = low >> _ABITS
    del low
    starts = _runs(pair)
    pair = pair[starts]
    if not starts.size:
        zf = np.zeros(0, dtype=np.float64)
        zs = np.zeros(0, dtype=np.float32)
        return pair, np.zeros(0, dtype=np.int64), zf, zf.copy(), zs, zs.copy()
    area = np.add.reduceat(counts, starts)
    ends = np.append(starts[1:], keys.size)
    qmax = qv[ends - 1].astype(np.float32) / np.float32(_QMAX)
    # nearest-rank quantile: the face of rank ``qrank`` within the edge's sorted values
    qrank = np.floor(SCORE_QUANTILE * (area - 1)).astype(np.int64)
    cum = np.cumsum(counts)
    first = cum[starts] - counts[starts]  # faces before each edge
    qq = qv[np.searchsorted(cum, first + qrank, side="right")].astype(np.float32)
    qq /= np.float32(_QMAX)
    del cum, first, qrank
    total = int(area.sum())
    integral = bool(np.all(face_area == np.rint(face_area)))
    if integral and total * float(np.max(face_area, initial=1.0)) * _QMAX < 2.0**52:
        # integer face areas: every partial sum is an exact integer, order is irrelevant
        wk = face_area[axis] * counts
        weight = np.add.reduceat(wk, starts)
        wk *= qv
        ssum = np.add.reduceat(wk, starts) / _QMAX
        del wk
    else:
        # re-expand chunks of whole edges to sum the same face values in the same order
        weight = np.empty(starts.size, dtype=np.float64)
        ssum = np.empty(starts.size, dtype=np.float64)
        edge_end = np.cumsum(area)
        e0 = 0
        while e0 < starts.size:
            base = edge_end[e0] - area[e0]
            e1 = max(e0 + 1, int(np.searchsorted(edge_end, base + _EXPAND_FACES, side="right")))
            r0, r1 = starts[e0], ends[e1 - 1]
            c = counts[r0:r1]
            w = np.repeat(face_area[axis[r0:r1]], c)
            loc = edge_end[e0:e1] - area[e0:e1] - base
            weight[e0:e1] = np.add.reduceat(w, loc)
            w *= np.repeat(qv[r0:r1], c)
            ssum[e0:e1] = np.add.reduceat(w, loc) / _QMAX
            del w, c
            e0 = e1
    return pair, area, weight, ssum, qmax, qq


def _edge_stats_oneshot(frag: np.ndarray, bnd: np.ndarray, n: int, face_area: np.ndarray):
    """Compute per-edge statistics with one key per face of the whole volume (reference)."""
    keys = _slab_keys(frag, bnd, 0, frag.shape[0], n)  # the whole volume as one slab
    keys.sort()
    pair = keys >> np.uint64(_QBITS + _ABITS)
    low = keys & np.uint64((1 << (_QBITS + _ABITS)) - 1)
    del keys
    axis = (low & np.uint64((1 << _ABITS) - 1)).astype(np.intp)
    qv = (low >> np.uint64(_ABITS)).astype(np.int64)
    del low
    if pair.size:
        starts = np.flatnonzero(np.concatenate(([True], pair[1:] != pair[:-1])))
    else:
        starts = np.zeros(0, dtype=np.intp)
    area = np.diff(np.append(starts, pair.size)).astype(np.int64)
    if starts.size:
        w = face_area[axis]
        weight = np.add.reduceat(w, starts)
        ssum = np.add.reduceat(w * qv, starts) / _QMAX
        qmax = qv[starts + area - 1].astype(np.float32) / np.float32(_QMAX)
        qidx = starts + np.floor(SCORE_QUANTILE * (area - 1)).astype(np.int64)
        qq = qv[qidx].astype(np.float32) / np.float32(_QMAX)
    else:
        weight = ssum = np.zeros(0, dtype=np.float64)
        qmax = qq = np.zeros(0, dtype=np.float32)
    return pair[starts], area, weight, ssum, qmax, qq


def build_region_graph(
    fragments: np.ndarray,
    boundaries,
    voxel_size=None,
    *,
    n_fragments: int | None = None,
) -> RegionGraph:
    """Build the region adjacency graph of fragments.

    Parameters
    ----------
    fragments : numpy.ndarray
        Non-negative integer fragment ids (0 = no fragment, ignored), 2D or 3D.
    boundaries : array_like
        Boundary probabilities in [0, 1], same shape as ``fragments``.
    voxel_size : sequence of float, optional
        Voxel size in nm.  Each face then weighs its physical area in nm^2
        (in ``contact_weight`` and ``score_sum``); by default every face
        weighs 1.  In anisotropic stacks this keeps the many small faces
        between sections from outweighing the in-plane contacts.
    n_fragments : int, optional
        Largest fragment id ``N``; computed when omitted.

    Returns
    -------
    RegionGraph
        Edges between face-adjacent fragments with contact areas and scores.

    Raises
    ------
    ValueError
        If shapes differ, ids are negative or not integers, the boundary map
        or voxel size is invalid, or there are more than about 9e7 fragments.

    Examples
    --------
    >>> import numpy as np
    >>> frags = np.array([[1, 1, 2], [1, 1, 2]], dtype=np.uint64)
    >>> g = build_region_graph(frags, np.zeros((2, 3), np.float32))
    >>> g.edges.tolist(), g.contact_area.tolist()
    ([[1, 2]], [2])
    """
    bnd = validate_boundaries(boundaries)
    frag = np.asarray(fragments)
    if frag.shape != bnd.shape:
        raise ValueError(
            f"fragments shape {frag.shape} does not match boundaries shape {bnd.shape}"
        )
    if frag.dtype.kind not in "iu":
        raise ValueError(f"fragments must be integer ids; got dtype {frag.dtype}")
    if frag.dtype.kind == "i" and frag.min() < 0:
        raise ValueError("fragments must be non-negative")
    if voxel_size is None:
        face_area = np.ones(frag.ndim)
    else:
        vs = validate_voxel_size(voxel_size, frag.ndim)
        face_area = np.array([np.prod(np.delete(vs, k)) for k in range(frag.ndim)])
    frag = frag.astype(np.uint64, copy=False)
    n = int(frag.max()) if n_fragments is None else int(n_fragments)
    sizes = np.bincount(frag.ravel().view(np.int64), minlength=n + 1)
    if sizes.size != n + 1:
        raise ValueError(f"n_fragments={n} is smaller than the largest id {sizes.size - 1}")
    if (n + 1) ** 2 >= 2 ** (64 - _QBITS - _ABITS):
        raise ValueError(f"too many fragments ({n}) for 64-bit edge keys; work in blocks")
    bboxes = fragment_bboxes(frag, n)

    if _SLAB_VOXELS <= 0:
        pair, area, weight, ssum, qmax, qq = _edge_stats_oneshot(frag, bnd, n, face_area)
    else:
        pair, area, weight, ssum, qmax, qq = _slab_edge_stats(
            frag, bnd, n, face_area, bboxes, _SLAB_VOXELS
        )
    upair = pair
    stride = np.uint64(n + 1)
    edges = np.stack([upair // stride, upair % stride], axis=1).reshape(-1, 2)
    real = (edges[:, 0] != 0) & (edges[:, 0] != edges[:, 1])
    if not real.all():  # drop faces within a fragment or touching id 0
        edges, area, weight, ssum, qmax, qq = (
            x[real] for x in (edges, area, weight, ssum, qmax, qq)
        )
    return RegionGraph(
        edges=edges,
        contact_area=area,
        contact_weight=weight,
        score_sum=ssum,
        max_score=qmax,
        quantile_score=qq,
        fragment_sizes=sizes.astype(np.int64, copy=False),
        fragment_bboxes=bboxes,
    )
